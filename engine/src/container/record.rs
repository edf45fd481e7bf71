//! Container records on disk: one directory per container holding its configuration (written
//! once) and its state (replaced atomically on every change), a name index, and the lock its
//! monitor holds while alive — so a container whose monitor died is never shown as running.

use crate::image::store::{write_atomic, StoreError};
use crate::spec::RunSpec;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no such container: `{0}`")]
    NotFound(String),
    #[error("`{0}` matches more than one container")]
    Ambiguous(String),
    #[error("the name `{name}` is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("failed to access container state at `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid container state at `{path}`")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The image a container was made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRef {
    pub reference: String,
    pub digest: String,
}

/// What a container is: fixed at creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    pub created: String,
    pub image: Option<ImageRef>,
    #[serde(deserialize_with = "crate::spec::read_stored")]
    pub spec: RunSpec,
    /// `--rm`: the record goes when the container exits.
    pub auto_remove: bool,
    /// `--label KEY=VALUE`: the caller's, for `ps --filter label=` and `inspect`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--restart`: whether its monitor runs it again when it exits.
    #[serde(default)]
    pub restart: RestartPolicy,
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// After a non-zero exit, at most this many times (without a count, always).
    OnFailure(Option<u32>),
    Always,
    /// As `always`, unless it was stopped with `stop`.
    UnlessStopped,
}

impl RestartPolicy {
    /// `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(text: &str) -> Result<RestartPolicy, String> {
        let invalid = || {
            format!(
                "invalid --restart `{text}`: expected no, on-failure[:N], always or unless-stopped"
            )
        };
        Ok(match text.split_once(':') {
            None => match text {
                "no" => RestartPolicy::No,
                "on-failure" => RestartPolicy::OnFailure(None),
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                _ => return Err(invalid()),
            },
            Some(("on-failure", count)) => {
                RestartPolicy::OnFailure(Some(count.parse().map_err(|_| invalid())?))
            }
            Some(_) => return Err(invalid()),
        })
    }

    /// Docker's name for it, as inspect shows it.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure(_) => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a run that exited with `code`, after `restarts` restarts, runs again.
    pub fn restarts(self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure(limit) => code != 0 && limit.is_none_or(|n| restarts < n),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    /// Exited, and waiting out the restart policy's back-off before it runs again.
    Restarting,
    Exited,
}

impl Status {
    /// The word Docker uses for it (`State.Status` in inspect, `.State` in `ps --format`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }
}

/// What a container is doing: changed by its monitor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ContainerState {
    pub status: Option<Status>,
    pub monitor_pid: Option<i32>,
    /// The workload's PID (the sandbox's PID 1, as the host sees it).
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `None` once exited means the code is unknown (the monitor died).
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub memory_peak: Option<u64>,
    pub cpu_time_ns: Option<u64>,
    /// The run's cgroup path under each hierarchy.
    pub cgroup: Option<String>,
    /// How many times the restart policy ran it again.
    #[serde(default)]
    pub restart_count: u32,
    /// Set by `stop` (cleared by `start`): the restart policy leaves it stopped.
    #[serde(default)]
    pub stopped_by_user: bool,
}

impl ContainerState {
    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status::Created)
    }
}

/// The containers of a state root.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

/// One container's record.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub config: ContainerConfig,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| RecordError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| RecordError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(write_atomic(path, &bytes)?)
}

impl Containers {
    pub fn open(state: &crate::state::StateRoot) -> Result<Containers, RecordError> {
        let dir = state.containers_dir();
        std::fs::create_dir_all(dir.join("names")).map_err(io_err(&dir))?;
        Ok(Containers { dir })
    }

    /// Records a new container: reserves its name (atomically: names are unique), then
    /// writes its configuration and a `created` state.
    pub fn create(&self, config: ContainerConfig) -> Result<Container, RecordError> {
        let name_path = self.reserve_name(&config.name, &config.id)?;
        let dir = self.dir.join(&config.id);
        let made = std::fs::create_dir(&dir)
            .map_err(io_err(&dir))
            .and_then(|()| write_json(&dir.join("config.json"), &config))
            .and_then(|()| {
                write_json(
                    &dir.join("state.json"),
                    &ContainerState {
                        status: Some(Status::Created),
                        ..ContainerState::default()
                    },
                )
            });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(&name_path);
            return Err(e);
        }
        Ok(Container { dir, config })
    }

    /// Every container, oldest first. Records half-made or half-removed are skipped.
    pub fn list(&self) -> Vec<Container> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut containers: Vec<Container> = entries
            .flatten()
            .filter(|e| e.file_name() != "names")
            .filter_map(|e| {
                let config = read_json::<ContainerConfig>(&e.path().join("config.json")).ok()?;
                Some(Container {
                    dir: e.path(),
                    config,
                })
            })
            .collect();
        containers.sort_by(|a, b| a.config.created.cmp(&b.config.created));
        containers
    }

    /// The container `text` names: a name, a full ID, or a unique ID prefix.
    pub fn find(&self, text: &str) -> Result<Container, RecordError> {
        let by_name = self.dir.join("names").join(text);
        if crate::spec::parse_name(text).is_ok() {
            if let Ok(id) = std::fs::read_to_string(&by_name) {
                if let Some(found) = self.load(id.trim()) {
                    return Ok(found);
                }
            }
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            // The directories are named by ID: only a match's configuration is read (with
            // 1,000 containers, reading them all made each `rm` of a short ID 40 ms).
            let mut matches = self
                .ids()
                .filter(|id| id.starts_with(text))
                .filter_map(|id| self.load(&id));
            if let Some(first) = matches.next() {
                if matches.next().is_some() {
                    return Err(RecordError::Ambiguous(text.to_string()));
                }
                return Ok(first);
            }
        }
        Err(RecordError::NotFound(text.to_string()))
    }

    /// The IDs of the containers' directories, in no order (half-made ones included).
    fn ids(&self) -> impl Iterator<Item = String> {
        let entries = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        entries
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "names")
    }

    /// The container whose full ID is `id`, read without listing the others.
    pub fn load(&self, id: &str) -> Option<Container> {
        let dir = self.dir.join(id);
        let config = read_json(&dir.join("config.json")).ok()?;
        Some(Container { dir, config })
    }

    /// Claims `name` for the container `id` (atomically: the name's file is made only if it
    /// does not exist); the file's path.
    fn reserve_name(&self, name: &str, id: &str) -> Result<PathBuf, RecordError> {
        let name_path = self.dir.join("names").join(name);
        match File::options()
            .write(true)
            .create_new(true)
            .open(&name_path)
        {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(id.as_bytes()).map_err(io_err(&name_path))?;
                Ok(name_path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let id = std::fs::read_to_string(&name_path).unwrap_or_default();
                Err(RecordError::NameInUse {
                    name: name.to_string(),
                    id,
                })
            }
            Err(e) => Err(io_err(&name_path)(e)),
        }
    }

    /// Gives a container another name: the new one reserved first (names are unique), the
    /// configuration rewritten, then the old one freed.
    pub fn rename(&self, container: &Container, name: &str) -> Result<(), RecordError> {
        let config = ContainerConfig {
            name: name.to_string(),
            ..container.config.clone()
        };
        let name_path = self.reserve_name(name, &config.id)?;
        if let Err(e) = write_json(&container.dir.join("config.json"), &config) {
            let _ = std::fs::remove_file(&name_path);
            return Err(e);
        }
        let old = self.dir.join("names").join(&container.config.name);
        let _ = std::fs::remove_file(old);
        Ok(())
    }

    /// Deletes a container's record and frees its name.
    pub fn delete(&self, container: &Container) -> Result<(), RecordError> {
        let name_path = self.dir.join("names").join(&container.config.name);
        if std::fs::read_to_string(&name_path).is_ok_and(|id| id.trim() == container.config.id) {
            let _ = std::fs::remove_file(&name_path);
        }
        // Renamed aside first, so a concurrent `ps` never reads half a directory.
        let aside = self.dir.join(format!(".rm-{}", container.config.id));
        std::fs::rename(&container.dir, &aside).map_err(io_err(&container.dir))?;
        crate::sandbox::remove_writable_layer(&container.config.spec);
        std::fs::remove_dir_all(&aside).map_err(io_err(&aside))
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn short_id(&self) -> &str {
        &self.config.id[..12]
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("container.log")
    }

    /// The recorded state as it is on disk.
    pub fn raw_state(&self) -> Result<ContainerState, RecordError> {
        read_json(&self.dir.join("state.json"))
    }

    /// The state, corrected for a monitor that died: a container is only `running` while its
    /// monitor holds its lock.
    pub fn state(&self) -> Result<ContainerState, RecordError> {
        let mut state = self.raw_state()?;
        let supervised = matches!(state.status(), Status::Running | Status::Restarting);
        if supervised && !self.monitor_alive() {
            state.status = Some(Status::Exited);
            state.exit_code = None;
            state.error = Some("the container's monitor died; its exit code is unknown".into());
        }
        Ok(state)
    }

    pub fn write_state(&self, state: &ContainerState) -> Result<(), RecordError> {
        write_json(&self.dir.join("state.json"), state)
    }

    /// Changes the recorded state.
    pub fn update_state(
        &self,
        change: impl FnOnce(&mut ContainerState),
    ) -> Result<(), RecordError> {
        let mut state = self.raw_state()?;
        change(&mut state);
        self.write_state(&state)
    }

    /// Takes the monitor lock (held by the container's monitor for its lifetime).
    pub fn lock_monitor(&self) -> Result<Flock<File>, RecordError> {
        let path = self.dir.join("monitor.lock");
        crate::state::lock_file(&path, FlockArg::LockExclusiveNonblock).map_err(io_err(&path))
    }

    /// Whether a monitor holds the lock now.
    pub fn monitor_alive(&self) -> bool {
        let path = self.dir.join("monitor.lock");
        let Ok(file) = File::open(&path) else {
            return false;
        };
        Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
    }
}

/// A creation time, now.
/// Now, to the nanosecond: `ps` lists containers newest first, several a second apart.
pub fn created_now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// A Docker-style random name, `adjective_noun`.
pub fn random_name(seed: &str) -> String {
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "proud", "quiet", "swift", "tender", "vivid",
    ];
    const NOUNS: [&str; 16] = [
        "babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak",
    ];
    let bytes = hex::decode(&seed[..8]).unwrap_or_default();
    let pick = |i: usize| usize::from(bytes.get(i).copied().unwrap_or(0));
    format!(
        "{}_{}_{}",
        ADJECTIVES[pick(0) % 16],
        NOUNS[pick(1) % 16],
        &seed[8..12]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Limits, Payload, RunSpec, SandboxSpec, WasmPayload};

    fn config(id: &str, name: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.to_string(),
            name: name.to_string(),
            created: created_now(),
            image: None,
            spec: RunSpec {
                sandbox: SandboxSpec::new(Limits::default(), "wrun"),
                payload: Payload::Wasm(WasmPayload {
                    module: "m.wasm".into(),
                    ..WasmPayload::default()
                }),
            },
            auto_remove: false,
            labels: Default::default(),
            restart: RestartPolicy::No,
        }
    }

    fn store() -> (tempfile::TempDir, Containers) {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::StateRoot::resolve(Some(dir.path().to_path_buf()));
        (dir, Containers::open(&state).unwrap())
    }

    #[test]
    fn a_record_with_the_flat_spec_of_earlier_versions_still_reads() {
        let mut record = serde_json::to_value(config("abc", "old-one")).unwrap();
        record["spec"] = serde_json::json!({
            "module": "/old.wasm", "args": ["old"], "env": [], "preopens": [],
            "limits": {}, "cgroup_parent": "wrun"
        });
        let read: ContainerConfig = serde_json::from_value(record).unwrap();
        assert_eq!(
            read.spec.wasm().unwrap().module,
            std::path::PathBuf::from("/old.wasm")
        );
        assert_eq!(read.name, "old-one");
    }

    #[test]
    fn names_are_unique_and_ids_resolve_by_prefix() {
        let (_dir, containers) = store();
        let a = "a".repeat(64);
        let b = format!("ab{}", "c".repeat(62));
        containers.create(config(&a, "web-1")).unwrap();
        assert!(matches!(
            containers.create(config(&b, "web-1")),
            Err(RecordError::NameInUse { .. })
        ));
        containers.create(config(&b, "web-2")).unwrap();
        assert_eq!(containers.find("web-2").unwrap().id(), b);
        assert_eq!(containers.find("aaaa").unwrap().id(), a);
        assert!(matches!(
            containers.find("a"),
            Err(RecordError::Ambiguous(_))
        ));
        // A directory without its configuration yet (being made) is no match.
        std::fs::create_dir(containers.dir.join(format!("ab{}", "f".repeat(62)))).unwrap();
        assert_eq!(containers.find("ab").unwrap().id(), b);
        assert!(matches!(
            containers.find("nope"),
            Err(RecordError::NotFound(_))
        ));
        assert_eq!(containers.list().len(), 2);
    }

    #[test]
    fn a_running_record_without_its_monitor_reads_as_exited() {
        let (_dir, containers) = store();
        let c = containers.create(config(&"d".repeat(64), "x")).unwrap();
        c.update_state(|s| s.status = Some(Status::Running))
            .unwrap();
        assert_eq!(c.state().unwrap().status(), Status::Exited);
        assert_eq!(c.state().unwrap().exit_code, None);
        let _lock = c.lock_monitor().unwrap();
        assert!(c.monitor_alive());
        assert_eq!(c.state().unwrap().status(), Status::Running);
    }

    #[test]
    fn renaming_moves_the_name_and_refuses_a_taken_one() {
        let (_dir, containers) = store();
        let a = containers.create(config("aaaa1111", "web-1")).unwrap();
        containers.create(config("bbbb2222", "db-1")).unwrap();
        assert!(matches!(
            containers.rename(&a, "db-1"),
            Err(RecordError::NameInUse { .. })
        ));
        containers.rename(&a, "web-2").unwrap();
        assert_eq!(containers.find("web-2").unwrap().config.id, "aaaa1111");
        assert!(matches!(
            containers.find("web-1"),
            Err(RecordError::NotFound(_))
        ));
        containers.create(config("cccc3333", "web-1")).unwrap();
    }

    #[test]
    fn deleting_frees_the_name() {
        let (_dir, containers) = store();
        let c = containers.create(config(&"e".repeat(64), "n")).unwrap();
        containers.delete(&c).unwrap();
        assert!(containers.list().is_empty());
        containers.create(config(&"f".repeat(64), "n")).unwrap();
    }

    #[test]
    fn random_names_look_like_dockers() {
        let name = random_name(&"0f".repeat(32));
        assert!(crate::spec::parse_name(&name).is_ok(), "{name}");
    }
}
