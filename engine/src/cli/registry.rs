//! `pull`, `push`, `login`, `logout`: images from and to registries, with the credentials
//! Docker keeps.

use super::Failure;
use std::io::{BufRead, IsTerminal, Read, Write};
use wrun::config::{EngineSettings, RegistrySettings};
use wrun::image::registry::{self, auth, RegistryError};
use wrun::state::StateRoot;

fn failed(error: RegistryError) -> Failure {
    Failure::runtime(error.into())
}

/// Pull an image from a registry (Wasm or linux/amd64), verified by digest
#[derive(clap::Args, Debug)]
pub struct PullCommand {
    /// Print only the image's name and digest: no line per layer
    #[arg(short, long)]
    quiet: bool,
    /// NAME[:TAG|@DIGEST], from Docker Hub unless NAME starts with a registry host
    /// (`localhost:5000/app:v1`)
    reference: String,
}

impl PullCommand {
    pub fn execute(
        self,
        state: &StateRoot,
        engine: &EngineSettings,
        registries: &RegistrySettings,
    ) -> Result<(), Failure> {
        pull(state, engine, registries, &self.reference, self.quiet)?;
        Ok(())
    }
}

/// Pulls `reference` into the store and precompiles a Wasm image, so its first run is warm;
/// prints each image's name and digest unless `quiet`.
pub fn pull(
    state: &StateRoot,
    engine: &EngineSettings,
    registries: &RegistrySettings,
    reference: &str,
    quiet: bool,
) -> Result<Vec<wrun::image::store::ImageEntry>, Failure> {
    let store = wrun::image::open_store(state).map_err(|e| Failure::runtime(e.into()))?;
    let watcher = match quiet {
        true => Box::new(wrun::progress::Unwatched),
        false => wrun::progress::bars_or_lines(),
    };
    let entries = registry::pull::pull(&store, registries, reference, &*watcher).map_err(failed)?;
    drop(watcher);
    for entry in &entries {
        super::image::precompile(&store, entry, state, engine)?;
        if !quiet {
            wrun::out_line!("{} {}", entry.reference, entry.digest());
        }
    }
    Ok(entries)
}

/// Push an image to a registry (the one its name starts with)
#[derive(clap::Args, Debug)]
pub struct PushCommand {
    /// Print only the digest: no line per layer
    #[arg(short, long)]
    quiet: bool,
    /// The image, named as in the registry: HOST[:PORT]/NAME[:TAG]
    reference: String,
}

impl PushCommand {
    pub fn execute(self, state: &StateRoot, registries: &RegistrySettings) -> Result<(), Failure> {
        let store = wrun::image::open_store(state).map_err(|e| Failure::runtime(e.into()))?;
        let watcher = match self.quiet {
            true => Box::new(wrun::progress::Unwatched),
            false => wrun::progress::bars_or_lines(),
        };
        let digest =
            registry::push::push(&store, registries, &self.reference, &*watcher).map_err(failed)?;
        drop(watcher);
        wrun::out_line!("{} {digest}", self.reference);
        Ok(())
    }
}

/// Log in to a registry: check the credentials, then keep them where Docker does
#[derive(clap::Args, Debug)]
pub struct LoginCommand {
    /// The user name (asked for on a terminal if not given)
    #[arg(short, long)]
    username: Option<String>,
    /// The password (visible to other users in the process list: prefer --password-stdin)
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    password_stdin: bool,
    /// The registry, HOST[:PORT] (Docker Hub if not given)
    server: Option<String>,
}

impl LoginCommand {
    pub fn execute(self, registries: &RegistrySettings) -> Result<(), Failure> {
        let host = host_of(self.server.as_deref());
        let username = match &self.username {
            Some(user) => user.clone(),
            None => ask("Username: ", true).map_err(Failure::runtime)?,
        };
        let password = match (&self.password, self.password_stdin) {
            (Some(password), _) => {
                wrun::err_line!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                password.clone()
            }
            (None, true) => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|e| {
                    Failure::runtime(anyhow::anyhow!(
                        "failed to read the password from stdin: {e}"
                    ))
                })?;
                text.trim_end_matches(['\n', '\r']).to_string()
            }
            (None, false) => ask("Password: ", false).map_err(Failure::runtime)?,
        };
        if username.is_empty() || password.is_empty() {
            return Err(Failure::runtime(anyhow::anyhow!(
                "a user name and a password are both needed to log in to {host}"
            )));
        }
        registry::pull::check_login(&host, registries, &username, &password).map_err(failed)?;
        auth::store(&host, &username, &password).map_err(failed)?;
        wrun::out_line!("Login Succeeded");
        Ok(())
    }
}

/// Log out of a registry: forget its credentials
#[derive(clap::Args, Debug)]
pub struct LogoutCommand {
    /// The registry, HOST[:PORT] (Docker Hub if not given)
    server: Option<String>,
}

impl LogoutCommand {
    pub fn execute(self) -> Result<(), Failure> {
        let host = host_of(self.server.as_deref());
        match auth::erase(&host).map_err(failed)? {
            true => wrun::out_line!("Removing login credentials for {host}"),
            false => wrun::out_line!("Not logged in to {host}"),
        }
        Ok(())
    }
}

/// A registry as Docker's `login` takes it: `https://host:port/` is `host:port`.
fn host_of(server: Option<&str>) -> String {
    let server = server.unwrap_or("docker.io");
    let server = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    server.trim_end_matches('/').to_string()
}

/// Asks on the terminal; without echo for a password.
fn ask(prompt: &str, echo: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!(
            "{} not given and stdin is not a terminal (use -u and --password-stdin)",
            prompt.trim_end_matches(": ").to_lowercase()
        );
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let saved = tcgetattr(&stdin).ok();
    if let (false, Some(saved)) = (echo, &saved) {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let (false, Some(saved)) = (echo, &saved) {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, saved);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
