//! The state root: where wrun keeps its cache and the mount point of sandbox roots.

use std::path::{Path, PathBuf};

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

    /// Native image runs' private writable layers, one directory per run ID.
    pub fn overlays_dir(&self) -> PathBuf {
        self.root.join("overlays")
    }

    /// Container records, one directory per container ID.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
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
