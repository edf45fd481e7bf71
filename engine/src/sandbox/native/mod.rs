//! The native payload: a Linux binary in the same kernel sandbox as Wasm guests — the same
//! namespaces, cgroup, capability and seccomp code path, with a root file system of its own
//! and `execve` instead of wasmtime.

pub mod mounts;
pub mod process;
pub mod profile;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use seccompiler::BpfProgram;
use std::path::PathBuf;

/// Where a sandbox's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A new one, made by the supervising parent (only a down `lo`).
    New,
    /// An existing one (a pod's), joined by path.
    Join(PathBuf),
    /// The host's (the spec has no network namespace).
    Host,
}

fn namespace(spec: &Spec, kind: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == kind)
        .map(|n| n.path().clone())
}

pub fn network_of(spec: &Spec) -> Network {
    match namespace(spec, LinuxNamespaceType::Network) {
        None => Network::Host,
        Some(None) => Network::New,
        Some(Some(path)) => Network::Join(path),
    }
}

/// The namespaces the child unshares itself: mount always (validated), UTS and IPC when new.
pub fn unshare_flags(spec: &Spec) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS;
    if namespace(spec, LinuxNamespaceType::Uts) == Some(None) {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if namespace(spec, LinuxNamespaceType::Ipc) == Some(None) {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    flags
}

/// Existing namespaces to join by path (UTS, IPC; the network is handled apart).
pub fn joined(spec: &Spec) -> Vec<(CloneFlags, PathBuf)> {
    [
        (LinuxNamespaceType::Uts, CloneFlags::CLONE_NEWUTS),
        (LinuxNamespaceType::Ipc, CloneFlags::CLONE_NEWIPC),
    ]
    .into_iter()
    .filter_map(|(kind, flag)| Some((flag, namespace(spec, kind)??)))
    .collect()
}

pub fn new_uts(spec: &Spec) -> bool {
    namespace(spec, LinuxNamespaceType::Uts) == Some(None)
}

pub fn new_cgroup_namespace(spec: &Spec) -> bool {
    namespace(spec, LinuxNamespaceType::Cgroup) == Some(None)
}

/// The spec's own seccomp policy, or wrun's default native profile.
pub fn filter_of(spec: &Spec) -> Result<BpfProgram, profile::SeccompSpecError> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(seccomp) => profile::from_spec(seccomp),
        None => Ok(profile::default_filter()),
    }
}
