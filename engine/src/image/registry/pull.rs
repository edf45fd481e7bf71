//! `pull`: a reference's manifest (the linux/amd64 or Wasm one from an index), then its
//! config and layers, each verified by digest as it streams into a cache that a retry
//! resumes from; laid out as an OCI image layout and imported as any layout is (verified
//! again, unpacked, every blob stored once).

use super::{auth, from_oci, host_of, io, local_name, RegistryError, Remote};
use crate::config::RegistrySettings;
use crate::image::layout;
use crate::image::reference::Reference;
use crate::image::store::{unique, ImageEntry, ImageStore};
use crate::progress::{Unit, Unwatched, Watcher};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The configs and layers wrun runs: OCI's and Docker's images, CNCF Wasm artifacts and
/// runwasi's component layers.
const KNOWN_BLOBS: [&str; 10] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
    crate::image::wasm_config::WASM_CONFIG,
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    crate::image::wasm_config::DOCKER_LAYER_GZIP,
    crate::image::wasm_config::WASM_LAYER,
    crate::image::wasm_config::COMPONENT_LAYER,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

/// The manifests a pull accepts.
pub const ACCEPTED: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Pulls `text` into the store, naming it as Docker would; `watcher` sees each blob fetched.
pub fn pull(
    store: &ImageStore,
    settings: &RegistrySettings,
    text: &str,
    watcher: &dyn Watcher,
) -> Result<Vec<ImageEntry>, RegistryError> {
    super::install_crypto();
    let remote = super::parse(text)?;
    let name = local_name(&remote);
    let local = Reference::parse(&name)
        .map_err(|e| RegistryError::Reference(text.to_string(), e.to_string()))?;
    super::runtime()?.block_on(pull_remote(store, settings, &remote, &local, watcher))
}

/// A client that reaches `host` and the credentials it takes there, authorised for `operation`:
/// HTTPS, or plain HTTP where that is allowed and HTTPS is not answered.
pub async fn connect(
    host: &str,
    settings: &RegistrySettings,
    remote: &Remote,
    operation: RegistryOperation,
) -> Result<(oci_client::Client, RegistryAuth), RegistryError> {
    let credentials = auth::lookup(host)?;
    let client = connect_with(host, settings, remote, &credentials, operation).await?;
    Ok((client, credentials))
}

/// Checks `user`'s credentials at `host` as `docker login` does: a request that needs them.
pub fn check_login(
    host: &str,
    settings: &RegistrySettings,
    user: &str,
    password: &str,
) -> Result<(), RegistryError> {
    super::install_crypto();
    let probe = Remote::with_tag(host.to_string(), "wrun/login-check".into(), "latest".into());
    let credentials = RegistryAuth::Basic(user.into(), password.into());
    super::runtime()?.block_on(async {
        let client = connect_with(
            host,
            settings,
            &probe,
            &credentials,
            RegistryOperation::Pull,
        )
        .await?;
        match client.list_tags(&probe, &credentials, Some(1), None).await {
            Ok(_) => Ok(()),
            Err(e) => match from_oci(host, host, e) {
                // Let in, and told there is no such repository.
                RegistryError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    })
}

async fn connect_with(
    host: &str,
    settings: &RegistrySettings,
    remote: &Remote,
    credentials: &RegistryAuth,
    operation: RegistryOperation,
) -> Result<oci_client::Client, RegistryError> {
    let https = super::client_for(host, settings, true);
    let first = https.auth(remote, credentials, operation).await;
    let client = match first {
        // A registry that answers TLS with a certificate we do not trust is not one that
        // speaks plain HTTP: that is reported, not worked around.
        Err(oci_client::errors::OciDistributionError::RequestError(e))
            if super::plain_http_allowed(host, settings) && !about_certificates(&e) =>
        {
            tracing::debug!("{host} does not answer HTTPS ({e}): plain HTTP");
            let http = super::client_for(host, settings, false);
            http.auth(remote, credentials, operation)
                .await
                .map_err(|e| from_oci(&remote.whole(), host, e))?;
            http
        }
        Err(e) => return Err(from_oci(&remote.whole(), host, e)),
        Ok(_) => https,
    };
    Ok(client)
}

async fn pull_remote(
    store: &ImageStore,
    settings: &RegistrySettings,
    remote: &Remote,
    local: &Reference,
    watcher: &dyn Watcher,
) -> Result<Vec<ImageEntry>, RegistryError> {
    let host = host_of(remote);
    let what = remote.whole();
    let (client, credentials) = connect(&host, settings, remote, RegistryOperation::Pull).await?;
    let fetch = |reference: Remote| {
        let (client, credentials, host) = (&client, &credentials, &host);
        async move {
            let what = reference.whole();
            let (bytes, digest) = client
                .pull_manifest_raw(&reference, credentials, &ACCEPTED)
                .await
                .map_err(|e| from_oci(&what, host, e))?;
            let digest = verify(&what, &bytes, &digest)?;
            Ok::<_, RegistryError>((bytes.to_vec(), digest))
        }
    };
    let (mut bytes, mut digest) = fetch(remote.clone()).await?;
    let mut media_type = media_type_of(&bytes);
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        let chosen = choose_platform(&what, &bytes)?;
        (bytes, digest) = fetch(remote.clone_with_digest(chosen)).await?;
        media_type = media_type_of(&bytes);
    }
    let manifest: Value =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Unsupported {
            what: what.clone(),
            reason: format!("its manifest is not JSON: {e}"),
        })?;
    let cache = store.dir().join(".pull/blobs/sha256");
    std::fs::create_dir_all(&cache).map_err(io("create", &cache))?;
    let blobs = blobs_of(&what, &manifest)?;
    if let Some(odd) = blobs
        .iter()
        .find(|b| !KNOWN_BLOBS.contains(&b.media_type.as_str()))
    {
        return Err(RegistryError::Unsupported {
            what,
            reason: format!(
                "media type `{}` is neither an image's nor Wasm's",
                odd.media_type
            ),
        });
    }
    for blob in &blobs {
        fetch_blob(&client, remote, blob, &cache, watcher).await?;
    }
    let staging = store.dir().join(format!(".pull-{}", unique()));
    let laid_out = lay_out(&staging, &cache, &bytes, &digest, &media_type, &blobs);
    let imported =
        laid_out.and_then(|()| Ok(layout::import(store, &staging, Some(local), &Unwatched)?));
    let _ = std::fs::remove_dir_all(&staging);
    if imported.is_ok() {
        for blob in &blobs {
            let _ = std::fs::remove_file(cache.join(hex_of(&blob.digest)));
        }
    }
    imported
}

fn about_certificates(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::container::monitor::error_chain(error)
        .to_lowercase()
        .contains("certificate")
}

/// The manifest's sha256 digest, computed: what the registry said must match it where it
/// is a sha256 one, and is never used as a file name (a hostile registry names no path).
fn verify(what: &str, bytes: &[u8], digest: &str) -> Result<String, RegistryError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    match digest.starts_with("sha256:") && actual != digest {
        true => Err(RegistryError::DigestMismatch {
            what: format!("{what}@{digest}"),
        }),
        false => Ok(actual),
    }
}

/// A manifest's own media type, or what its fields say it is.
pub(super) fn media_type_of(bytes: &[u8]) -> String {
    let value: Value = serde_json::from_slice(bytes).unwrap_or_default();
    match value.get("mediaType").and_then(Value::as_str) {
        Some(media_type) => media_type.to_string(),
        None if value.get("manifests").is_some() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    }
}

/// The digest of the index entry wrun runs: linux/amd64, else a Wasm image (os `wasi*` or
/// architecture `wasm`).
fn choose_platform(what: &str, index: &[u8]) -> Result<String, RegistryError> {
    let value: Value = serde_json::from_slice(index).unwrap_or_default();
    let entries = value
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let platform = |entry: &Value, key: &str| {
        entry
            .pointer(&format!("/platform/{key}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let is = |entry: &&Value, wanted: fn(&str, &str) -> bool| {
        wanted(&platform(entry, "os"), &platform(entry, "architecture"))
    };
    let chosen = entries
        .iter()
        .find(|e| is(e, |os, arch| os == "linux" && arch == "amd64"))
        .or_else(|| {
            entries
                .iter()
                .find(|e| is(e, |os, arch| os.starts_with("wasi") || arch == "wasm"))
        });
    match chosen.and_then(|e| e.get("digest")).and_then(Value::as_str) {
        Some(digest) if is_sha256(digest) => Ok(digest.to_string()),
        Some(digest) => Err(RegistryError::Unsupported {
            what: what.to_string(),
            reason: format!("the digest `{digest}` is not sha256"),
        }),
        None => {
            let offered: Vec<String> = entries
                .iter()
                .map(|e| format!("{}/{}", platform(e, "os"), platform(e, "architecture")))
                .collect();
            Err(RegistryError::Unsupported {
                what: what.to_string(),
                reason: format!("no linux/amd64 or Wasm image among {}", offered.join(", ")),
            })
        }
    }
}

/// The config and layers a manifest names.
pub(super) fn blobs_of(what: &str, manifest: &Value) -> Result<Vec<OciDescriptor>, RegistryError> {
    let config = manifest.get("config").cloned().into_iter();
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    config
        .chain(layers)
        .map(|value| {
            serde_json::from_value::<OciDescriptor>(value).map_err(|e| RegistryError::Unsupported {
                what: what.to_string(),
                reason: format!("a descriptor of its manifest: {e}"),
            })
        })
        .collect()
}

/// `sha256:` and 64 hex digits: the only digests wrun stores, and safe as file names.
fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Fetches a blob into the cache unless it is there already (a retry resumes with the
/// blobs fetched whole); a blob cut short leaves nothing.
async fn fetch_blob(
    client: &oci_client::Client,
    remote: &Remote,
    blob: &OciDescriptor,
    cache: &Path,
    watcher: &dyn Watcher,
) -> Result<(), RegistryError> {
    let hex = hex_of(&blob.digest);
    if !is_sha256(&blob.digest) {
        return Err(RegistryError::Unsupported {
            what: remote.whole(),
            reason: format!("the digest `{}` is not sha256", blob.digest),
        });
    }
    let done = cache.join(hex);
    if done.exists() {
        return Ok(());
    }
    let partial = cache.join(format!("{hex}.partial-{}", unique()));
    let counter = watcher.start(&hex[..12], blob.size.max(0) as u64, Unit::Bytes);
    let fetched = async {
        let file = tokio::fs::File::create(&partial)
            .await
            .map_err(io("create", &partial))?;
        let mut out = Counted {
            file,
            counter: counter.clone(),
        };
        client
            .pull_blob(remote, blob, &mut out)
            .await
            .map_err(|e| {
                from_oci(
                    &format!("{}@{}", remote.repository(), blob.digest),
                    &host_of(remote),
                    e,
                )
            })?;
        out.file.flush().await.map_err(io("write", &partial))?;
        let bytes = std::fs::File::open(&partial)
            .and_then(|mut f| crate::image::store::sha256_reader(&mut f));
        let (digest, _) = bytes.map_err(io("read", &partial))?;
        if digest != blob.digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("{}@{}", remote.repository(), blob.digest),
            });
        }
        std::fs::rename(&partial, &done).map_err(io("store", &done))
    }
    .await;
    if fetched.is_err() {
        counter.failed();
        let _ = std::fs::remove_file(&partial);
    }
    fetched
}

/// A file that counts what is written to it.
struct Counted {
    file: tokio::fs::File,
    counter: std::sync::Arc<dyn crate::progress::Counter>,
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.file).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(written)) = &polled {
            self.counter.add(*written as u64);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

/// An OCI image layout of the pulled manifest in `dir`, its blobs linked from the cache.
fn lay_out(
    dir: &Path,
    cache: &Path,
    manifest: &[u8],
    digest: &str,
    media_type: &str,
    blobs: &[OciDescriptor],
) -> Result<(), RegistryError> {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io("create", &blob_dir))?;
    let write =
        |path: PathBuf, bytes: &[u8]| std::fs::write(&path, bytes).map_err(io("write", &path));
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write(blob_dir.join(hex_of(digest)), manifest)?;
    for blob in blobs {
        let (from, to) = (
            cache.join(hex_of(&blob.digest)),
            blob_dir.join(hex_of(&blob.digest)),
        );
        if !to.exists() {
            std::fs::hard_link(&from, &to).map_err(io("link", &to))?;
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": manifest.len()}],
    });
    write(dir.join("index.json"), index.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registrys_digest_never_names_a_file() {
        let bytes = b"{}";
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        assert_eq!(verify("m", bytes, "../../escape").unwrap(), actual);
        assert_eq!(verify("m", bytes, &actual).unwrap(), actual);
        let wrong = format!("sha256:{}", "0".repeat(64));
        assert!(verify("m", bytes, &wrong).is_err());
        assert!(is_sha256(&actual));
        assert!(!is_sha256("sha256:../../etc/passwd"));
        assert!(!is_sha256(&format!("sha512:{}", "a".repeat(64))));
    }
}
