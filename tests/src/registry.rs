//! A real registry for the tests: Debian's `docker-registry` (the CNCF distribution server)
//! on a free loopback port, plain HTTP, or TLS with a CA made here and htpasswd basic auth;
//! and a Docker client configuration of the test's own (`DOCKER_CONFIG`, `WRUN_CONFIG`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The files of this registry and its clients: storage, certificates, configurations.
    pub dir: tempfile::TempDir,
    /// The CA that signed the registry's certificate, with TLS.
    pub ca: Option<PathBuf>,
    server: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn sh(script: &str, dir: &Path) {
    let status = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh");
    assert!(status.success(), "{script}");
}

impl Registry {
    /// Plain HTTP, no authentication.
    pub fn plain() -> Registry {
        Registry::start(None)
    }

    /// TLS (a certificate for 127.0.0.1 signed by a CA of its own) and basic authentication
    /// of `user` with `password`.
    pub fn tls_with_login(user: &str, password: &str) -> Registry {
        Registry::start(Some((user, password)))
    }

    /// Plain HTTP (on loopback) with Docker's token authentication: a token server of the
    /// test's own issues JWTs, signed by a key whose certificate the registry trusts, to
    /// `user` with `password`, for the repositories and actions asked for.
    pub fn with_token_auth(user: &str, password: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("wrun-registry-")
            .tempdir()
            .expect("temp dir");
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=wrun-token \
               -keyout token.key -out token.crt",
            dir.path(),
        );
        let realm = token_server(dir.path(), user, password);
        let auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: wrun-test-registry\n    issuer: wrun-test-issuer\n    rootcertbundle: {}/token.crt\n",
            dir.path().display()
        );
        Registry::start_in(dir, None, &auth)
    }

    fn start(login: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("wrun-registry-")
            .tempdir()
            .expect("temp dir");
        Registry::start_in(dir, login, "")
    }

    fn start_in(dir: tempfile::TempDir, login: Option<(&str, &str)>, extra: &str) -> Registry {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        let mut ca = None;
        if let Some((user, password)) = login {
            sh(
                "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=wrun-test-ca \
                   -keyout ca.key -out ca.crt
                 openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
                 printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
                 openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                   -days 2 -extfile ext.cnf -out server.crt",
                dir.path(),
            );
            sh(
                &format!("htpasswd -Bbn '{user}' '{password}' > htpasswd"),
                dir.path(),
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\nauth:\n  htpasswd:\n    realm: wrun-test\n    path: {0}/htpasswd\n",
                dir.path().display()
            ));
            ca = Some(dir.path().join("ca.crt"));
        }
        config.push_str(extra);
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let server = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
            .spawn()
            .expect("docker-registry (Debian's docker-registry package)");
        let registry = Registry {
            host,
            dir,
            ca,
            server,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry never listened: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A wrun configuration that finds this registry's CA as Docker would find it in
    /// `/etc/docker/certs.d/HOST/ca.crt`, under a directory of the test's own.
    pub fn wrun_config(&self) -> PathBuf {
        let certs = self.dir.path().join("certs.d");
        if let Some(ca) = &self.ca {
            let dir = certs.join(&self.host);
            std::fs::create_dir_all(&dir).expect("certs.d");
            std::fs::copy(ca, dir.join("ca.crt")).expect("ca.crt");
        }
        let path = self.dir.path().join("wrun.toml");
        std::fs::write(
            &path,
            format!("[registries]\ncerts_dir = \"{}\"\n", certs.display()),
        )
        .expect("wrun config");
        path
    }

    /// The Docker configuration directory (`DOCKER_CONFIG`) of this test's clients.
    pub fn docker_config(&self) -> PathBuf {
        let dir = self.dir.path().join("docker");
        std::fs::create_dir_all(&dir).expect("docker config dir");
        dir
    }

    /// The stored blob of `digest`, as the registry keeps it on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A TCP proxy to a registry that cuts the first response longer than `cut_after` bytes
/// there, as a dropped connection would; everything after passes whole.
pub struct CuttingProxy {
    pub host: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    pub fn start(target: &str, cut_after: usize) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let host = listener.local_addr().expect("address").to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (target, flag) = (target.to_string(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_in, &mut server_out);
                });
                let (mut server_in, mut client_out, flag) = (server, client, flag.clone());
                std::thread::spawn(move || {
                    let mut sent = 0;
                    let mut buffer = [0u8; 8192];
                    while let Ok(n) = server_in.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        if sent + n > cut_after && !flag.swap(true, Ordering::SeqCst) {
                            let _ = client_out.write_all(&buffer[..cut_after - sent]);
                            let _ = client_out.shutdown(std::net::Shutdown::Both);
                            let _ = server_in.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        sent += n;
                        if client_out.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { host, cut }
    }

    /// Whether it has cut a response yet.
    pub fn has_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Serves Docker's token endpoint on a free loopback port: `GET /token?service=…&scope=…` with
/// `user`'s basic credentials gets a JWT (RS256, the signing certificate in `x5c`) granting the
/// scopes asked for; anything else gets 401. Returns the realm URL.
fn token_server(dir: &Path, user: &str, password: &str) -> String {
    use base64::Engine as _;
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("token listener");
    let realm = format!("http://{}/token", listener.local_addr().expect("address"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let expected = format!("Basic {}", b64.encode(format!("{user}:{password}")));
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") && value.trim() == expected {
                        authorized = true;
                    }
                }
            }
            let target = request_line.split_whitespace().nth(1).unwrap_or("");
            let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|pair| pair.strip_prefix("scope="))
                .map(percent_decode)
                .collect();
            let mut out = stream;
            if !authorized {
                let _ = out.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let body = format!(
                "{{\"token\":\"{}\",\"expires_in\":300}}",
                jwt(&dir, &scopes)
            );
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    realm
}

fn percent_decode(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.extend(value);
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A token granting `scopes` (`repository:NAME:ACTIONS`), signed with `dir/token.key`.
fn jwt(dir: &Path, scopes: &[String]) -> String {
    use base64::Engine as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pem = std::fs::read_to_string(dir.join("token.crt")).expect("token.crt");
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der]});
    let claims = serde_json::json!({
        "iss": "wrun-test-issuer", "sub": "test", "aud": "wrun-test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let mut signer = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("token.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    {
        use std::io::Write;
        signer
            .stdin
            .take()
            .expect("stdin")
            .write_all(signing_input.as_bytes())
            .expect("sign");
    }
    let signature = signer.wait_with_output().expect("openssl").stdout;
    format!("{signing_input}.{}", url.encode(signature))
}
