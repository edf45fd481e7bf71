//! Rootless mode: a caller without root privileges first enters a user namespace of its own,
//! mapping its uid and gid to 0, so that it may make the other namespaces and mounts. No
//! setuid helper is involved: a single mapping of one's own ids needs no privilege.

/// Why the user namespace could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("failed to create a user namespace (are unprivileged user namespaces disabled?)")]
    Unshare(#[source] nix::Error),
    #[error("failed to write `{file}` of the new user namespace")]
    Map {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Moves the calling (single-threaded) process into a new user namespace where it is root.
pub fn enter() -> Result<(), UsernsError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(UsernsError::Unshare)?;
    // setgroups must be denied before an unprivileged process may write its gid map.
    for (file, content) in [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ] {
        std::fs::write(file, content).map_err(|source| UsernsError::Map { file, source })?;
    }
    Ok(())
}
