//! Images from and to registries, on the OCI distribution spec through oci-client: how a
//! registry is reached (system TLS roots, a registry's own CA, plain HTTP only for loopback
//! and listed hosts), references as Docker reads them, errors a user can act on.

pub mod auth;
pub mod pull;
pub mod push;

use crate::config::RegistrySettings;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::Reference as Remote;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid reference `{0}`: {1}")]
    Reference(String, String),
    #[error("{0}: unauthorized: wrong username or password, or no access (wrun login {1})")]
    Unauthorized(String, String),
    #[error("{0}: not found in the registry")]
    NotFound(String),
    #[error("cannot reach the registry {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("{what}: the registry answered {message}")]
    Refused { what: String, message: String },
    #[error("{what}: {reason}")]
    Unsupported { what: String, reason: String },
    #[error("{what}: the content does not match its digest")]
    DigestMismatch { what: String },
    #[error("image `{0}` is not in the store")]
    NoSuchImage(String),
    #[error("failed to {what} `{path}`")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error(transparent)]
    Layout(#[from] super::layout::LayoutError),
    #[error("failed to read the credentials: {0}")]
    Credentials(String),
    #[error("failed to start the network runtime")]
    Runtime(#[source] std::io::Error),
}

/// Parses a reference as Docker does: `busybox` is `docker.io/library/busybox:latest`,
/// `host:port/name:tag@digest` is taken as written.
pub fn parse(text: &str) -> Result<Remote, RegistryError> {
    text.parse::<Remote>()
        .map_err(|e| RegistryError::Reference(text.to_string(), e.to_string().to_lowercase()))
}

/// The name the store gives a pulled image: Docker's short form (`busybox:latest`,
/// `localhost:5000/app:v1`); a pull by digest alone is tagged with the digest's start.
pub fn local_name(remote: &Remote) -> String {
    let repository = remote.repository();
    let name = match remote.registry() {
        "docker.io" => repository
            .strip_prefix("library/")
            .unwrap_or(repository)
            .to_string(),
        registry => format!("{registry}/{repository}"),
    };
    let tag = match (remote.tag(), remote.digest()) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(digest)) => {
            let hex = digest.trim_start_matches("sha256:");
            format!("sha256-{}", &hex[..hex.len().min(12)])
        }
        (None, None) => "latest".to_string(),
    };
    format!("{name}:{tag}")
}

/// The host (with its port) a reference's registry is reached at.
pub fn host_of(remote: &Remote) -> String {
    remote.resolve_registry().to_string()
}

/// Whether `host` may be reached over plain HTTP: loopback, or listed in the settings.
pub fn plain_http_allowed(host: &str, settings: &RegistrySettings) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback || settings.insecure.iter().any(|listed| listed == host)
}

/// A client for `host`: HTTPS with the system's roots and, if present, the registry's CA
/// from `<certs_dir>/<host>/ca.crt` (Docker's `/etc/docker/certs.d`); plain HTTP where
/// [`plain_http_allowed`] and the registry does not answer HTTPS.
pub fn client_for(host: &str, settings: &RegistrySettings, https: bool) -> oci_client::Client {
    let mut config = ClientConfig {
        protocol: match https {
            true => ClientProtocol::Https,
            false => ClientProtocol::Http,
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        user_agent: concat!("wrun/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    let ca = settings.certs_dir().join(host).join("ca.crt");
    if let Ok(pem) = std::fs::read(&ca) {
        config.extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem,
        });
    }
    oci_client::Client::new(config)
}

/// Where an oci-client failure leaves the user, in one line.
pub fn from_oci(what: &str, host: &str, error: OciDistributionError) -> RegistryError {
    use OciDistributionError as E;
    let refused = |message: String| RegistryError::Refused {
        what: what.to_string(),
        message,
    };
    match error {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            RegistryError::Unauthorized(what.to_string(), host.to_string())
        }
        E::ImageManifestNotFoundError(_) => RegistryError::NotFound(what.to_string()),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let unknown = [
                OciErrorCode::ManifestUnknown,
                OciErrorCode::NameUnknown,
                OciErrorCode::NotFound,
            ];
            if codes.iter().any(|c| unknown.contains(c)) {
                return RegistryError::NotFound(what.to_string());
            }
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                return RegistryError::Unauthorized(what.to_string(), host.to_string());
            }
            let messages: Vec<String> = envelope.errors.iter().map(|e| e.to_string()).collect();
            refused(messages.join("; "))
        }
        E::ServerError { code: 401, .. } | E::ServerError { code: 403, .. } => {
            RegistryError::Unauthorized(what.to_string(), host.to_string())
        }
        E::ServerError { code: 404, .. } => RegistryError::NotFound(what.to_string()),
        E::ServerError { code, message, .. } => refused(format!("{code} {message}")),
        E::RequestError(e) => RegistryError::Unreachable {
            host: host.to_string(),
            reason: crate::container::monitor::error_chain(&e),
        },
        E::DigestError(e) => {
            tracing::debug!("{what}: {e}");
            RegistryError::DigestMismatch {
                what: what.to_string(),
            }
        }
        E::UnsupportedMediaTypeError(t) | E::IncompatibleLayerMediaTypeError(t) => {
            RegistryError::Unsupported {
                what: what.to_string(),
                reason: format!("unsupported media type {t}"),
            }
        }
        other => refused(other.to_string()),
    }
}

/// A current-thread runtime for one command's requests.
pub fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
}

/// TLS through rustls with ring, installed once per process.
pub fn install_crypto() {
    // ring rather than aws-lc-rs (which would bring post-quantum key exchange): it builds
    // for static musl without CMake or a C++ toolchain, and registries offer classic suites.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RegistryError + 'a {
    move |source| RegistryError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_and_named_as_docker_does() {
        let hub = parse("busybox").unwrap();
        assert_eq!(hub.registry(), "docker.io");
        assert_eq!(hub.repository(), "library/busybox");
        assert_eq!(local_name(&hub), "busybox:latest");
        let local = parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(host_of(&local), "127.0.0.1:5000");
        assert_eq!(local_name(&local), "127.0.0.1:5000/team/app:v1");
        let digest = format!("localhost:5000/app@sha256:{}", "ab".repeat(32));
        assert_eq!(
            local_name(&parse(&digest).unwrap()),
            "localhost:5000/app:sha256-abababababab"
        );
        assert!(parse("library/Upper").is_err());
        assert!(parse("app:bad tag").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let mut settings = RegistrySettings::default();
        assert!(plain_http_allowed("127.0.0.1:5000", &settings));
        assert!(plain_http_allowed("localhost:5000", &settings));
        assert!(plain_http_allowed("[::1]:5000", &settings));
        assert!(!plain_http_allowed("registry.example:5000", &settings));
        settings.insecure.push("registry.example:5000".into());
        assert!(plain_http_allowed("registry.example:5000", &settings));
    }
}
