//! `cp` with a native container, as Docker's: a tar stream between the host's half (here)
//! and the container's, which runs inside the container — joined as `exec` joins a running
//! one, with no more rights than its process has, or chrooted in the mounted root of a stopped
//! one — so the container's symbolic links resolve in the container, never on the host.

use super::enter::{report, run_inside, EnterError, Started, Target};
use crate::spec::RootfsSource;
use nix::unistd::ForkResult;
use oci_spec::runtime::Process;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// Where the container's half runs.
pub enum Inside {
    /// A running container: its namespaces, cgroup and root, as `process` (the container's
    /// own process section, as root) is restricted.
    Running {
        target: Target,
        process: Box<Process>,
    },
    /// A stopped one: its root file system mounted in a mount namespace of the half's own,
    /// without devices or set-user-ID, and the half with only the file capabilities.
    Stopped(RootfsSource),
}

/// What the container's half does with the stream.
pub enum Half {
    /// Writes a tar of `path` (its last link followed with `follow`), `name` at its top;
    /// `.` for a directory's contents.
    Pack {
        path: PathBuf,
        name: String,
        follow: bool,
    },
    /// Reads a tar whose top is the copied file or directory (`.`: a directory's contents)
    /// and puts it at `dest` by Docker's rules; `as_is`: `cp -`'s archive, unpacked into the
    /// directory `dest` as it is. `owners`: keep the archive's owners (`cp -a`).
    Unpack {
        dest: PathBuf,
        as_is: bool,
        owners: bool,
    },
}

/// Starts the container's half on `stream` (the pipe end it writes or reads).
pub fn start(inside: &Inside, half: &Half, stream: OwnedFd) -> Result<Started, EnterError> {
    let fd = stream.as_raw_fd();
    let work = move || -> Result<(), String> {
        // SAFETY: `fd` is the stream, kept open by the caller through the fork.
        let file = File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        match half {
            Half::Pack { path, name, follow } => pack(path, name, *follow, file),
            Half::Unpack {
                dest,
                as_is,
                owners,
            } => unpack(dest, *as_is, *owners, file),
        }
    };
    let started = match inside {
        Inside::Running { target, process } => run_inside(target, process, &work, &[fd]),
        Inside::Stopped(rootfs) => run_in_root(rootfs, &work, fd),
    };
    drop(stream);
    started
}

/// Forks the half into a mount namespace of its own where the stopped container's root is
/// mounted, chroots into it and keeps only the capabilities that reading and writing files
/// as root takes.
fn run_in_root(
    rootfs: &RootfsSource,
    work: &dyn Fn() -> Result<(), String>,
    keep: RawFd,
) -> Result<Started, EnterError> {
    let (error_read, error_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EnterError::Start("create a pipe", e))?;
    // SAFETY: wrun's command-line process is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(|e| EnterError::Start("fork", e))? {
        ForkResult::Child => {
            drop(error_read);
            let failure = match enter_root(rootfs, &[keep, error_write.as_raw_fd()]) {
                Err(message) => message,
                Ok(()) => match work() {
                    Ok(()) => crate::sys::exit_now(0),
                    Err(message) => message,
                },
            };
            report(
                &error_write,
                EnterError::Failed {
                    message: failure,
                    code: crate::exit::RUNTIME_ERROR,
                },
            )
        }
        ForkResult::Parent { child } => Ok(Started::new(child, error_read)),
    }
}

/// The capabilities a root process needs to read and write anyone's files.
const FILE_CAPABILITIES: [caps::Capability; 5] = [
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_DAC_READ_SEARCH,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
];

fn enter_root(rootfs: &RootfsSource, keep: &[RawFd]) -> Result<(), String> {
    let text = |e: &dyn std::error::Error| crate::container::monitor::error_chain(e);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("failed to make a mount namespace: {e}"))?;
    let root = super::native::mounts::mount_root_for_copy(rootfs).map_err(|e| text(&e))?;
    nix::unistd::chroot(&root)
        .and_then(|()| nix::unistd::chdir("/"))
        .map_err(|e| format!("failed to enter the container's root: {e}"))?;
    super::harden::close_inherited_fds(keep).map_err(|e| text(&e))?;
    let kept: caps::CapsHashSet = FILE_CAPABILITIES.into_iter().collect();
    for cap in caps::all().difference(&kept) {
        caps::drop(None, caps::CapSet::Bounding, *cap).map_err(|e| text(&e))?;
    }
    for set in [
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::set(None, set, &kept).map_err(|e| text(&e))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("failed to set no_new_privs: {e}"))
}

/// Writes a tar of `path` to `out`, `name` at its top.
fn pack(path: &Path, name: &str, follow: bool, out: File) -> Result<(), String> {
    let resolved = match follow {
        true => std::fs::canonicalize(path),
        false => Ok(path.to_path_buf()),
    };
    let meta = resolved
        .and_then(|p| std::fs::symlink_metadata(&p).map(|m| (p, m)))
        .map_err(|e| no_such(path, e));
    let (path, meta) = meta?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(out));
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let written = match meta.is_dir() {
        true => builder.append_dir_all(name, &path),
        false => builder.append_path_with_name(&path, name),
    };
    written
        .and_then(|()| builder.into_inner())
        .and_then(|mut out| out.flush())
        .map_err(|e| format!("failed to copy `{}`: {}", path.display(), chain(&e)))
}

/// A path that is not there, or cannot be reached, in one line.
pub fn no_such(path: &Path, error: std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => format!("`{}`: no such file or directory", path.display()),
        _ => format!("`{}`: {}", path.display(), chain(&error)),
    }
}

/// An error and its causes on one line (tar wraps its causes in I/O errors).
pub fn chain(error: &std::io::Error) -> String {
    crate::container::monitor::error_chain(error)
}

/// Unpacks the tar on `input` at `dest` (see [`Half::Unpack`]).
fn unpack(dest: &Path, as_is: bool, owners: bool, input: File) -> Result<(), String> {
    let mut archive = tar::Archive::new(std::io::BufReader::new(input));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(owners);
    archive.set_overwrite(true);
    let placement = Placement::of(dest)?;
    if as_is && !matches!(placement, Placement::Into(_)) {
        return Err(format!("`{}`: not a directory", dest.display()));
    }
    let entries = archive
        .entries()
        .map_err(|e| format!("failed to read the archive: {e}"))?;
    for (index, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| format!("failed to read the archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("failed to read the archive: {e}"))?
            .into_owned();
        if index == 0 {
            placement.check_top(entry.header().entry_type().is_dir())?;
        }
        let target = placement.target_of(&path)?;
        entry
            .unpack(&target)
            .map_err(|e| format!("failed to copy to `{}`: {}", target.display(), chain(&e)))?;
    }
    // The archive ends at its first zero blocks, but the stream may go on: tar pads its
    // output to whole records (10 KiB), and a writer still sending them when this process
    // exited got a broken pipe for an archive copied in full.
    let _ = std::io::copy(&mut archive.into_inner(), &mut std::io::sink());
    Ok(())
}

/// Where the copied file or directory goes, as Docker decides from the destination.
pub enum Placement {
    /// An existing directory: the copy goes into it under its own name (`.`: its contents).
    Into(PathBuf),
    /// An existing file: a copied file replaces it; a directory may not.
    Replace(PathBuf),
    /// A path that does not exist (its parent does): the copy is made under that name.
    New(PathBuf),
}

impl Placement {
    /// Where a copy to `dest` goes, on this side of the stream.
    pub fn of(dest: &Path) -> Result<Placement, String> {
        match std::fs::metadata(dest) {
            Ok(meta) if meta.is_dir() => Ok(Placement::Into(dest.to_path_buf())),
            Ok(_) => Ok(Placement::Replace(dest.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Placement::new(dest),
            Err(e) => Err(no_such(dest, e)),
        }
    }

    /// A path that does not exist yet: its parent must.
    fn new(dest: &Path) -> Result<Placement, String> {
        let parent = match dest.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => Path::new("/"),
        };
        match std::fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => Ok(Placement::New(dest.to_path_buf())),
            _ => Err(format!("`{}`: no such directory", parent.display())),
        }
    }

    /// The directory the copy's top is unpacked in, and the name it is given there (`None`:
    /// its own).
    pub fn unpack_root(&self) -> (PathBuf, Option<String>) {
        match self {
            Placement::Into(dir) => (dir.clone(), None),
            Placement::Replace(path) | Placement::New(path) => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                (parent.unwrap_or(Path::new(".")).to_path_buf(), name)
            }
        }
    }

    /// Refuses a directory onto a file, and a file where a directory was asked for.
    pub fn check_top(&self, top_is_dir: bool) -> Result<(), String> {
        match self {
            Placement::Replace(file) if top_is_dir => Err(format!(
                "cannot copy a directory to the file `{}`",
                file.display()
            )),
            Placement::New(path)
                if !top_is_dir && path.as_os_str().to_string_lossy().ends_with('/') =>
            {
                Err(format!("`{}`: no such directory", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Where an archive path (its first component the copied file's name) is written.
    pub fn target_of(&self, path: &Path) -> Result<PathBuf, String> {
        let mut parts = Vec::new();
        for part in path.components() {
            match part {
                Component::Normal(name) => parts.push(name),
                Component::CurDir => {}
                _ => return Err(format!("refusing the archive path `{}`", path.display())),
            }
        }
        let top_is_contents = path.components().next() == Some(Component::CurDir);
        Ok(match self {
            Placement::Into(dir) => parts.iter().fold(dir.clone(), |p, n| p.join(n)),
            Placement::Replace(path) | Placement::New(path) => {
                let rest = if top_is_contents {
                    &parts[..]
                } else {
                    parts.get(1..).unwrap_or_default()
                };
                rest.iter().fold(path.clone(), |p, n| p.join(n))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_follow_dockers_rules() {
        let into = Placement::Into("/data".into());
        let new = Placement::New("/data/copy".into());
        let cases = [
            (&into, "logs/a", "/data/logs/a"),
            (&into, "./a", "/data/a"),
            (&new, "logs", "/data/copy"),
            (&new, "logs/a", "/data/copy/a"),
            (&new, "./a", "/data/copy/a"),
        ];
        for (placement, archived, target) in cases {
            let placed = placement.target_of(Path::new(archived)).unwrap();
            assert_eq!(placed, Path::new(target), "{archived}");
        }
        assert!(new.target_of(Path::new("logs/../../etc")).is_err());
        assert!(new.target_of(Path::new("/etc/passwd")).is_err());
        assert!(Placement::Replace("/f".into()).check_top(true).is_err());
        assert!(Placement::Replace("/f".into()).check_top(false).is_ok());
        assert!(Placement::New("/d/".into()).check_top(false).is_err());
    }
}
