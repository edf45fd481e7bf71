//! The network and IPC namespaces of the Wasm sandboxes wrun's own CLI starts outside a pod:
//! made once each, pinned, and joined by every such sandbox instead of each making its own.
//!
//! Making a network namespace is the costliest step of a start (the kernel registers a
//! loopback device and every protocol's sysctls: 0.45–0.6 ms of CPU a run here, and a kernel
//! worker's 0.3 ms more to tear it down after), and an IPC namespace costs 0.05 ms more (its
//! mqueue file system and sysctls). A Wasm guest never uses either: its published ports are
//! listeners opened in the host's namespace and its outbound connections the broker's, and
//! every guest filter refuses the calls that reach into them: `socket`, `socketpair`, `bind`,
//! `listen`, `connect`, and System V and POSIX IPC. Without those nothing in the namespaces
//! can be reached (interfaces, routes, abstract Unix sockets, netlink, message queues,
//! semaphores, shared memory), and without capabilities nothing in them can be changed; the
//! network namespace has only a loopback interface, down. So sandboxes sharing them can
//! neither see nor touch each other through them, and they stay apart from the host's.
//! Native workloads, sandboxes in a pod, and an OCI bundle's runs keep their own (or the
//! pod's): a bundle's spec asks for new namespaces, and the program that made it may
//! configure them through the sandbox's PID (Podman brings `lo` up). A pooled sandbox waits
//! in the shared ones, and a bundle's claim has it make its own before its last capabilities
//! go, as the standalone run would have made them.

use super::pinned_namespace::Pinned;
use nix::sched::CloneFlags;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

/// Where the namespaces are pinned; the mount namespace template is pinned here too.
pub const DIRECTORY: &str = "/run/wrun-namespaces";
pub const NETWORK_PIN: &str = "/run/wrun-namespaces/net-v1";
pub const IPC_PIN: &str = "/run/wrun-namespaces/ipc-v1";
pub const LOCK: &str = "/run/wrun-namespaces/lock";

const NETWORK: Pinned = shared(NETWORK_PIN, "net", libc::CLONE_NEWNET);
const IPC: Pinned = shared(IPC_PIN, "ipc", libc::CLONE_NEWIPC);

/// A namespace of `kind` (`CLONE_NEW*` `nstype`) pinned on `pin`, made by a helper's
/// `unshare` alone.
const fn shared(pin: &'static str, kind: &'static str, nstype: libc::c_int) -> Pinned {
    Pinned {
        directory: DIRECTORY,
        pin,
        lock: LOCK,
        kind,
        nstype,
        build: |pinned| {
            nix::sched::unshare(CloneFlags::from_bits_retain(pinned.nstype))
                .map_err(io::Error::from)
        },
        usable: apart_from_callers,
    }
}

/// The shared namespaces a sandbox joins, each `None` where it could not be pinned (the
/// sandbox makes its own).
#[derive(Default)]
pub struct Shared {
    pub network: Option<OwnedFd>,
    pub ipc: Option<OwnedFd>,
}

impl Shared {
    /// Opens the pinned namespaces, making them first if they are not pinned yet (forking a
    /// helper: call it single-threaded, before the PID namespace is unshared); `network`
    /// and `ipc` say which the sandbox shares (not those it joins a pod's of).
    pub fn open_or_make(network: bool, ipc: bool) -> Shared {
        Shared {
            network: network.then(|| NETWORK.open_or_make()).flatten(),
            ipc: ipc.then(|| IPC.open_or_make()).flatten(),
        }
    }

    /// Joins them (in the sandbox, before its lock-down).
    pub fn join(self) -> nix::Result<()> {
        if let Some(network) = self.network {
            nix::sched::setns(network, CloneFlags::CLONE_NEWNET)?;
        }
        if let Some(ipc) = self.ipc {
            nix::sched::setns(ipc, CloneFlags::CLONE_NEWIPC)?;
        }
        Ok(())
    }

    /// Their descriptors, which the sandbox keeps until it joins them.
    pub fn fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        use std::os::fd::AsRawFd;
        [&self.network, &self.ipc]
            .into_iter()
            .flatten()
            .map(AsRawFd::as_raw_fd)
    }
}

/// Whether `file` is another namespace than the caller's (the host's) of its kind: a pin of
/// the host's namespace is replaced, never joined.
fn apart_from_callers(pinned: &Pinned, file: &std::fs::File) -> bool {
    let own = std::fs::metadata(format!("/proc/self/ns/{}", pinned.kind));
    let (Ok(pinned), Ok(own)) = (file.metadata(), own) else {
        return false;
    };
    (pinned.dev(), pinned.ino()) != (own.dev(), own.ino())
}
