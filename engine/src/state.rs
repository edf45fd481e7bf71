//! The state root: where wrun keeps its cache, records, images and writable layers, private
//! to the user who runs wrun.

use nix::sys::stat::Mode;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why the state root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to create the state root `{path}`")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state root `{path}` is not a directory")]
    NotDirectory { path: PathBuf },
    #[error("the state root `{path}` belongs to uid {owner}, not to uid {uid}: use a --root of your own")]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error("the state root `{path}` is open to other users (mode {mode:04o}): check it holds nothing planted, then `chmod 700 {path}`")]
    Open { path: PathBuf, mode: u32 },
    #[error("the state root `{path}` is inside `{parent}`, which another user can change: choose a --root below directories only you or root can write")]
    UnsafeParent { path: PathBuf, parent: PathBuf },
}

/// The caller's umask, saved before [`StateRoot::prepare`] narrows the process's own; the
/// workload gets it back (see [`caller_umask`]).
static CALLER_UMASK: AtomicU32 = AtomicU32::new(0o022);

/// The directory tree under the state root.
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
    /// Where compiled code is cached, if not under the root.
    cache: Option<PathBuf>,
}

impl StateRoot {
    /// Picks the root: the explicit one, else `/var/lib/wrun` for root, else
    /// `$XDG_DATA_HOME/wrun` (falling back to `~/.local/share/wrun`).
    pub fn resolve(explicit: Option<PathBuf>) -> StateRoot {
        let root = explicit.unwrap_or_else(|| {
            default_root(
                nix::unistd::geteuid().is_root(),
                std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
                std::env::var_os("HOME").map(PathBuf::from),
            )
        });
        StateRoot { root, cache: None }
    }

    /// Keeps compiled code in `cache` instead of under the root.
    pub fn with_cache_dir(self, cache: Option<PathBuf>) -> StateRoot {
        StateRoot { cache, ..self }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Compiled-code artifacts, one file per cache key.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| self.root.join("cache"))
    }

    /// An empty directory each sandbox mounts its private root over (in its own namespace).
    pub fn sandbox_mount_point(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    /// One lock file per live run, for cleaning up after supervisors that died.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Where the last run's share of sweeping the run records stopped (`runs::sweep_some`).
    pub fn sweep_cursor(&self) -> PathBuf {
        self.root.join("runs.sweep-cursor")
    }

    /// Native image runs' private writable layers, one directory per run ID.
    pub fn overlays_dir(&self) -> PathBuf {
        self.root.join("overlays")
    }

    /// Container records, one directory per container ID.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Makes the state root private before any command touches it: from here on every
    /// directory this process creates is 0700 and every file 0600 (umask 077), the root is
    /// created 0700 if missing, and an existing root (and a cache directory outside it) must
    /// belong to the caller and be closed to group and others. Never chmods: a root left
    /// open may already hold something planted, which is for its owner to look at.
    ///
    /// The root is used by its resolved path from then on (no symlink is followed again),
    /// and every directory above it must belong to root or the caller and be writable by
    /// no one else unless sticky (`/tmp`), so nobody else can swap it for their own.
    pub fn prepare(self) -> Result<StateRoot, StateError> {
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
        CALLER_UMASK.store(old.bits(), Ordering::Relaxed);
        let root = check_private(&self.root)?;
        let cache = match self.cache {
            Some(cache) => {
                let resolved = std::fs::canonicalize(&cache).unwrap_or(cache);
                if resolved.starts_with(&root) {
                    Some(resolved)
                } else {
                    Some(check_private(&resolved)?)
                }
            }
            None => None,
        };
        Ok(StateRoot { root, cache })
    }

    /// Creates the directories a run needs (idempotent).
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(self.cache_dir())?;
        builder.create(self.runs_dir())?;
        builder.create(self.sandbox_mount_point())
    }
}

/// The umask the caller ran wrun with: what a workload's new files get, as under the caller.
pub fn caller_umask() -> Mode {
    Mode::from_bits_truncate(CALLER_UMASK.load(Ordering::Relaxed))
}

/// Creates `dir` 0700 (parents as needed) or checks that the existing one is private, and
/// that no one else can replace it; returns its resolved path.
fn check_private(dir: &Path) -> Result<PathBuf, StateError> {
    use std::os::unix::fs::DirBuilderExt;
    let created = |source| StateError::Create {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(created)?;
    let resolved = std::fs::canonicalize(dir).map_err(created)?;
    let meta = std::fs::symlink_metadata(&resolved).map_err(created)?;
    check_metadata(&resolved, meta.is_dir(), meta.uid(), meta.mode())?;
    for parent in resolved.ancestors().skip(1) {
        let meta = std::fs::symlink_metadata(parent).map_err(created)?;
        if !safe_parent(meta.uid(), meta.mode()) {
            return Err(StateError::UnsafeParent {
                path: resolved.clone(),
                parent: parent.to_path_buf(),
            });
        }
    }
    Ok(resolved)
}

/// A directory above the root: root's or the caller's, and writable by no one else unless
/// sticky (where others cannot rename or remove what is not theirs).
fn safe_parent(owner: u32, mode: u32) -> bool {
    let uid = nix::unistd::geteuid().as_raw();
    let writable_by_others = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    (owner == 0 || owner == uid) && (!writable_by_others || sticky)
}

fn check_metadata(dir: &Path, is_dir: bool, owner: u32, mode: u32) -> Result<(), StateError> {
    let path = dir.to_path_buf();
    let uid = nix::unistd::geteuid().as_raw();
    if !is_dir {
        return Err(StateError::NotDirectory { path });
    }
    if owner != uid {
        return Err(StateError::NotOwned { path, owner, uid });
    }
    if mode & 0o077 != 0 {
        return Err(StateError::Open {
            path,
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn default_root(is_root: bool, xdg_data_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/wrun");
    }
    let data_home = xdg_data_home
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data_home.join("wrun")
}

/// Opens `path` (creating it) and takes the lock `how` on it: the state root's lock files.
pub fn lock_file(
    path: &Path,
    how: nix::fcntl::FlockArg,
) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    nix::fcntl::Flock::lock(file, how).map_err(|(_, errno)| errno.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_root_of_the_callers_passes() {
        let uid = nix::unistd::geteuid().as_raw();
        let dir = Path::new("/r");
        assert!(check_metadata(dir, true, uid, 0o40700).is_ok());
        assert!(matches!(
            check_metadata(dir, true, uid, 0o40755),
            Err(StateError::Open { mode: 0o755, .. })
        ));
        assert!(matches!(
            check_metadata(dir, true, uid, 0o40710),
            Err(StateError::Open { .. })
        ));
        assert!(matches!(
            check_metadata(dir, true, uid.wrapping_add(1), 0o40700),
            Err(StateError::NotOwned { .. })
        ));
        assert!(matches!(
            check_metadata(dir, false, uid, 0o100600),
            Err(StateError::NotDirectory { .. })
        ));
    }

    #[test]
    fn a_missing_root_is_made_private_with_its_parents() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("a/b/wrun");
        assert_eq!(
            check_private(&root).unwrap(),
            std::fs::canonicalize(&root).unwrap()
        );
        let meta = std::fs::metadata(&root).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(matches!(check_private(&root), Err(StateError::Open { .. })));
        // Refused, not repaired.
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn only_parents_nobody_else_can_change_are_safe() {
        let uid = nix::unistd::geteuid().as_raw();
        assert!(safe_parent(0, 0o40755));
        assert!(safe_parent(uid, 0o40700));
        assert!(safe_parent(0, 0o41777), "/tmp");
        assert!(!safe_parent(0, 0o40777));
        assert!(!safe_parent(0, 0o40775));
        assert!(!safe_parent(uid.wrapping_add(1), 0o40755));
    }

    #[test]
    fn root_uses_var_lib() {
        assert_eq!(
            default_root(true, Some("/x".into()), None),
            PathBuf::from("/var/lib/wrun")
        );
    }

    #[test]
    fn users_get_xdg_data_home_or_home() {
        assert_eq!(
            default_root(false, Some("/d".into()), Some("/h".into())),
            PathBuf::from("/d/wrun")
        );
        assert_eq!(
            default_root(false, Some("relative".into()), Some("/h".into())),
            PathBuf::from("/h/.local/share/wrun")
        );
        assert_eq!(
            default_root(false, None, Some("/h".into())),
            PathBuf::from("/h/.local/share/wrun")
        );
    }
}
