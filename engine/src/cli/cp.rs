//! `cp`: files between the host and a native container, running or stopped, with Docker's
//! arguments and rules; the container's half of the copy runs inside the container.

use super::containers::{find, open};
use super::Failure;
use anyhow::{anyhow, Context};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use wrun::container::record::{Container, Status};
use wrun::sandbox::copy::{self, chain, Half, Inside, Placement};
use wrun::sandbox::enter::Target;
use wrun::state::StateRoot;

/// Copy files between a native container and the host: CONTAINER:SRC DEST, or SRC
/// CONTAINER:DEST (`-` for a tar stream on stdout or stdin)
#[derive(clap::Args, Debug)]
pub struct CpCommand {
    /// Keep the owners (UID and GID) of what is copied
    #[arg(short, long)]
    archive: bool,
    /// Follow a symbolic link given as the source
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// Print nothing (wrun prints nothing anyway)
    #[arg(short, long)]
    quiet: bool,
    /// CONTAINER:PATH, a host path, or `-`
    source: String,
    /// CONTAINER:PATH, a host path, or `-`
    destination: String,
}

impl CpCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        self.copy(state).map_err(Failure::runtime)
    }

    fn copy(&self, state: &StateRoot) -> anyhow::Result<()> {
        match (container_path(&self.source), container_path(&self.destination)) {
            (Some(_), Some(_)) => Err(anyhow!("copying between containers is not supported")),
            (None, None) => Err(anyhow!(
                "one of the paths must be CONTAINER:PATH (a host path with a colon is written ./NAME)"
            )),
            (Some((name, path)), None) => {
                let inside = inside(state, name)?;
                self.copy_out(&inside, &path).map_err(|e| anyhow!(e))
            }
            (None, Some((name, path))) => {
                let inside = inside(state, name)?;
                self.copy_in(&inside, &path).map_err(|e| anyhow!(e))
            }
        }
    }

    /// From the container to a host path, or as a tar stream to stdout.
    fn copy_out(&self, inside: &Inside, source: &Path) -> Result<(), String> {
        let (read, write) = pipe()?;
        let contents = ends_in_dot(&self.source);
        let own_name = match (contents, source.file_name()) {
            (false, Some(name)) => name.to_string_lossy().into_owned(),
            _ => ".".to_string(),
        };
        if self.destination == "-" {
            let half = self.pack(source, own_name);
            let started = copy::start(inside, &half, write).map_err(|e| e.to_string())?;
            let copied = std::io::copy(&mut File::from(read), &mut std::io::stdout().lock())
                .map_err(|e| format!("failed to write the archive to stdout: {e}"));
            return finish(started, copied.map(drop));
        }
        let placement = Placement::of(Path::new(&self.destination))?;
        let (root, name) = placement.unpack_root();
        let half = self.pack(source, name.unwrap_or(own_name));
        let started = copy::start(inside, &half, write).map_err(|e| e.to_string())?;
        let unpacked = self.unpack_on_host(read, &root, &placement);
        finish(started, unpacked)
    }

    fn pack(&self, source: &Path, name: String) -> Half {
        Half::Pack {
            path: source.to_path_buf(),
            name,
            follow: self.follow_link,
        }
    }

    /// The container's archive unpacked under `root` on the host: tar's checks keep every
    /// entry inside `root` (no `..`, no writing through a link), and without `-a` no owners
    /// and no set-user-ID bits come from the container.
    fn unpack_on_host(
        &self,
        input: OwnedFd,
        root: &Path,
        placement: &Placement,
    ) -> Result<(), String> {
        let mut archive = tar::Archive::new(std::io::BufReader::new(File::from(input)));
        archive.set_preserve_permissions(self.archive);
        archive.set_preserve_ownerships(self.archive);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| format!("failed to read the copy: {e}"))?;
        for (index, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| format!("failed to read the copy: {e}"))?;
            if index == 0 {
                placement.check_top(entry.header().entry_type().is_dir())?;
            }
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            match entry.unpack_in(root) {
                Ok(true) => {}
                Ok(false) => return Err(format!("refusing the archive path `{path}`")),
                Err(e) => return Err(format!("failed to copy `{path}`: {}", chain(&e))),
            }
        }
        Ok(())
    }

    /// From a host path, or a tar stream on stdin, into the container.
    fn copy_in(&self, inside: &Inside, dest: &Path) -> Result<(), String> {
        let (read, write) = pipe()?;
        let half = Half::Unpack {
            dest: dest.to_path_buf(),
            as_is: self.source == "-",
            owners: self.archive,
        };
        if self.source == "-" {
            let started = copy::start(inside, &half, read).map_err(|e| e.to_string())?;
            let copied = std::io::copy(&mut std::io::stdin().lock(), &mut File::from(write))
                .map_err(|e| format!("failed to pass the archive from stdin: {e}"));
            return finish(started, copied.map(drop));
        }
        let source = PathBuf::from(&self.source);
        let meta = match self.follow_link {
            true => std::fs::metadata(&source),
            false => std::fs::symlink_metadata(&source),
        };
        let meta = meta.map_err(|e| copy::no_such(&source, e))?;
        let name = match (ends_in_dot(&self.source), source.file_name()) {
            (false, Some(name)) => name.to_string_lossy().into_owned(),
            _ => ".".to_string(),
        };
        let started = copy::start(inside, &half, read).map_err(|e| e.to_string())?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(File::from(write)));
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Complete);
        let resolved = match self.follow_link {
            true => std::fs::canonicalize(&source).unwrap_or(source.clone()),
            false => source.clone(),
        };
        let packed = match meta.is_dir() {
            true => builder.append_dir_all(&name, &resolved),
            false => builder.append_path_with_name(&resolved, &name),
        }
        .and_then(|()| builder.into_inner())
        .and_then(|mut out| out.flush())
        .map_err(|e| format!("failed to copy `{}`: {}", source.display(), chain(&e)));
        finish(started, packed)
    }
}

/// The container's half's failure first (the host's is often only its echo: a closed
/// stream), then the host's.
fn finish(started: wrun::sandbox::enter::Started, host: Result<(), String>) -> Result<(), String> {
    started.finish().map_err(|e| e.to_string())?;
    host
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("failed to create a pipe: {e}"))
}

/// Docker's `SRC/.`: a directory's contents rather than the directory.
fn ends_in_dot(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// `CONTAINER:PATH` as Docker reads it: not an absolute path, nor one starting with `.`;
/// the container's path is from its root.
fn container_path(text: &str) -> Option<(&str, PathBuf)> {
    if text.starts_with('/') || text.starts_with('.') {
        return None;
    }
    let (container, path) = text.split_once(':')?;
    let path = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new("/").join(path)
    };
    Some((container, path))
}

/// Where the container's half runs: inside the running container, or in its root.
fn inside(state: &StateRoot, name: &str) -> anyhow::Result<Inside> {
    let containers = open(state).map_err(|f| f.error)?;
    let container = find(&containers, name).map_err(|f| f.error)?;
    let native = container.config.spec.native().ok_or_else(|| {
        anyhow!("container `{name}` runs a Wasm module: cp copies native containers' files (a Wasm guest's files are the host directories it was given)")
    })?;
    let status = container
        .state()
        .context("failed to read the container's state")?;
    match (status.status(), status.pid) {
        (Status::Running, Some(pid)) => running(&container, pid),
        (Status::Running, None)
        | (Status::Restarting, _)
        | (Status::Created, _)
        | (Status::Exited, _) => Ok(Inside::Stopped(native.rootfs.clone())),
    }
}

/// A running container's half: as root, with its process's capabilities and filter.
fn running(container: &Container, pid: i32) -> anyhow::Result<Inside> {
    let native = container
        .config
        .spec
        .native()
        .context("not a native container")?;
    let filter = wrun::sandbox::native::filter_of(&native.spec)
        .context("failed to read the container's seccomp profile")?;
    let mut process = native.spec.process().clone().unwrap_or_default();
    let mut user = process.user().clone();
    user.set_uid(0);
    user.set_gid(0);
    user.set_additional_gids(None);
    process.set_user(user);
    process.set_cwd("/".into());
    process.set_terminal(Some(false));
    process.set_args(Some(vec!["cp".into()]));
    Ok(Inside::Running {
        target: Target { pid, filter },
        process: Box::new(process),
    })
}
