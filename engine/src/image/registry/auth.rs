//! Credentials where Docker keeps them, so `docker login` and `wrun login` share them:
//! `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), its `auths` (base64
//! `user:password`), and the `credHelpers`/`credsStore` helpers (`docker-credential-NAME`).

use super::RegistryError;
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Docker Hub's key in `auths`, whatever name the reference used.
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// The configuration file Docker reads.
pub fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".docker/config.json")
        }
    }
}

fn key_of(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => HUB_KEY,
        other => other,
    }
}

fn read_config() -> Result<Map<String, Value>, RegistryError> {
    let path = config_path();
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(RegistryError::Credentials(format!(
                "`{}` is not a JSON object",
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(source) => Err(RegistryError::Io {
            what: "read",
            path,
            source,
        }),
    }
}

fn write_config(config: &Map<String, Value>) -> Result<(), RegistryError> {
    let path = config_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(super::io("create", dir))?;
    }
    let text = serde_json::to_vec_pretty(config).unwrap_or_default();
    // Written whole and renamed into place, readable by its owner only: it holds passwords.
    let staged = path.with_extension(format!("json.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(&staged)
        .and_then(|mut file| file.write_all(&text))
        .and_then(|()| std::fs::rename(&staged, &path))
        .map_err(super::io("write", &path))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// The helper that keeps `host`'s credentials, if one is configured.
fn helper_of(config: &Map<String, Value>, key: &str) -> Option<String> {
    let named = config
        .get("credHelpers")
        .and_then(|helpers| helpers.get(key))
        .or_else(|| config.get("credsStore"));
    named
        .and_then(Value::as_str)
        .map(|name| format!("docker-credential-{name}"))
}

/// The credentials for `host`: from its helper, or from `auths`; anonymous if none.
pub fn lookup(host: &str) -> Result<RegistryAuth, RegistryError> {
    let config = read_config()?;
    let key = key_of(host);
    if let Some(helper) = helper_of(&config, key) {
        return helper_get(&helper, key);
    }
    let Some(encoded) = config
        .get("auths")
        .and_then(|auths| auths.get(key))
        .and_then(|entry| entry.get("auth"))
        .and_then(Value::as_str)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            RegistryError::Credentials(format!("the `auth` of `{key}` is not base64"))
        })?;
    match decoded.split_once(':') {
        Some((user, password)) => Ok(RegistryAuth::Basic(user.into(), password.into())),
        None => Err(RegistryError::Credentials(format!(
            "the `auth` of `{key}` is not USER:PASSWORD"
        ))),
    }
}

/// Keeps `user`'s credentials for `host`: with its helper, or in `auths`.
pub fn store(host: &str, user: &str, password: &str) -> Result<(), RegistryError> {
    let mut config = read_config()?;
    let key = key_of(host);
    if let Some(helper) = helper_of(&config, key) {
        let request = json!({"ServerURL": key, "Username": user, "Secret": password});
        return helper_call(&helper, "store", request.to_string().as_bytes()).map(drop);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(auths) = auths {
        auths.insert(key.to_string(), json!({ "auth": encoded }));
    }
    write_config(&config)
}

/// Forgets `host`'s credentials; whether there were any.
pub fn erase(host: &str) -> Result<bool, RegistryError> {
    let mut config = read_config()?;
    let key = key_of(host);
    if let Some(helper) = helper_of(&config, key) {
        return helper_call(&helper, "erase", key.as_bytes()).map(|_| true);
    }
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .and_then(|auths| auths.remove(key))
        .is_some();
    if removed {
        write_config(&config)?;
    }
    Ok(removed)
}

fn helper_get(helper: &str, key: &str) -> Result<RegistryAuth, RegistryError> {
    let answer = match helper_call(helper, "get", key.as_bytes()) {
        Ok(answer) => answer,
        // Docker's helpers say so on stdout and exit 1 when they hold nothing for the host.
        Err(RegistryError::Credentials(message)) if message.contains("credentials not found") => {
            return Ok(RegistryAuth::Anonymous)
        }
        Err(e) => return Err(e),
    };
    let value: Value = serde_json::from_slice(&answer)
        .map_err(|e| RegistryError::Credentials(format!("{helper} get: {e}")))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match (field("Username"), field("Secret")) {
        (_, secret) if secret.is_empty() => Ok(RegistryAuth::Anonymous),
        // An identity token, as helpers hand out for registries with OAuth.
        (user, secret) if user == "<token>" => Ok(RegistryAuth::Bearer(secret)),
        (user, secret) => Ok(RegistryAuth::Basic(user, secret)),
    }
}

fn helper_call(helper: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>, RegistryError> {
    let mut child = Command::new(helper)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::Credentials(format!("cannot run {helper}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("{helper} {verb}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let said = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    });
    Err(RegistryError::Credentials(format!(
        "{helper} {verb}: {}",
        said.trim()
    )))
}
