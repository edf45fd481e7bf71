//! A pooled sandbox's claim, as its supervisor serves it: who may claim (the daemon's user;
//! cgroups and namespaces only for a caller that could make them itself), whether the pool
//! can run it as the standalone path would, where the sandbox goes (its limits, or the
//! cgroup the claim names), the namespaces it joins, the compiled artifact, and the answer.

use super::shape::{unsuitable, Shape};
use super::wire::{self, Reply, Request, Usage};
use crate::exit;
use crate::net::packet;
use crate::sandbox::attach;
use crate::sandbox::cgroup::RunCgroup;
use crate::sandbox::claimed::{Joined, PoolKit, Serving, ToSandbox, Work, JOINED};
use crate::sandbox::preload::{self, RecentArtifact};
use crate::sandbox::self_join;
use crate::sandbox::ChildGuard;
use crate::spec::{Payload, RunSpec, WasmPayload};
use crate::state::StateRoot;
use crate::timeline;
use crate::wasm::{self, cache::AotCache, source::ModuleFile};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// What the supervisor brings to a claim.
pub(super) struct Claim<'a> {
    pub state: &'a StateRoot,
    pub shape: &'a Shape,
    pub pool_kit: &'a PoolKit,
    pub id: &'a str,
    /// What the sandbox has mapped ahead.
    pub mapped: &'a [RecentArtifact],
}

/// The artifact a claim runs: its descriptor, unless the sandbox has it mapped ahead.
struct Resolved {
    artifact: RecentArtifact,
    file: Option<File>,
}

impl Claim<'_> {
    /// Takes the client's claim and runs it to its end, telling the client how it ended.
    pub fn serve(
        &self,
        client: OwnedFd,
        control: OwnedFd,
        sandbox_socket: OwnedFd,
        guard: &mut ChildGuard,
    ) -> anyhow::Result<()> {
        if !same_user(&client) {
            return Ok(());
        }
        let Some((Request::Claim(claim), fds)) = packet::receive::<Request>(client.as_fd())? else {
            return Ok(());
        };
        let wire::Claim {
            spec,
            usage,
            held,
            cgroup: placement,
        } = *claim;
        let Payload::Wasm(wasm) = &spec.payload else {
            return Ok(());
        };
        let Some(brought) = Brought::unpack(&spec, wasm, usage, fds) else {
            return Ok(());
        };
        timeline::mark("pool: claim received");
        let refuse = |reason: String| packet::send(client.as_fd(), &Reply::Refused { reason }, &[]);
        let placed = placement.is_some();
        if let Some(reason) =
            self.refusal(&client, &spec, placement.as_deref(), &brought.namespaces)
        {
            refuse(reason)?;
            return Ok(());
        }
        let Brought {
            module,
            stdio: [stdin, stdout, stderr],
            status,
            dirs,
            listeners,
            broker,
            namespaces,
        } = brought;
        // A held run's module is loaded before its caller is told the PID, as on the
        // standalone path; a failure, or code still to compile (which could outlast the
        // caller's wait for an answer), is the standalone path's to report or do.
        let (early, module) = if held {
            match self.resolve(&spec, wasm, File::from(module), false) {
                Ok(Some(resolved)) => (Some(resolved), None),
                Ok(None) => {
                    refuse("the module's compiled code is not cached yet".into())?;
                    return Ok(());
                }
                Err(e) => {
                    refuse(format!("{:#}", anyhow::Error::new(e)))?;
                    return Ok(());
                }
            }
        } else {
            (None, Some(module))
        };
        let dirs: Vec<_> = dirs.into_iter().zip(&wasm.preopens).collect();
        let preopens = match attach::attach(guard.child, &dirs) {
            Ok(preopens) => preopens,
            Err(e) => {
                refuse(format!("{:#}", anyhow::Error::new(e)))?;
                return Ok(());
            }
        };
        drop(dirs);
        // Last: a sandbox moved into the run's own cgroup is gone, and the cgroup with it,
        // before its caller falls back to the standalone path on the same cgroup.
        let mut pool_cgroup = match place(&spec, placement.as_deref(), &sandbox_socket, guard) {
            Ok(pool_cgroup) => pool_cgroup,
            Err(e) => {
                guard.release();
                refuse(format!("{e:#}"))?;
                return Ok(());
            }
        };
        if let Err(reason) = join(&sandbox_socket, &client, &spec, namespaces) {
            if let Some(pool_cgroup) = pool_cgroup.take() {
                retire(pool_cgroup, guard);
            }
            guard.release();
            refuse(reason)?;
            return Ok(());
        }
        // A run in a cgroup of its own is answered once that cgroup is gone: its caller may
        // reuse the path at once (containerd does, with a task's ID).
        let status = status.filter(|_| !placed);
        let cgroup = guard.cgroup.as_ref().expect("made before the claim");
        let accepted = Reply::Accepted {
            id: self.id.to_string(),
            pid: guard.child.as_raw(),
            cgroup: Some(cgroup.path().to_string()),
        };
        // Told before the sandbox is: sending to it hands it this CPU at once, and the answer
        // would wait for the workload.
        packet::send(client.as_fd(), &accepted, &[])?;
        timeline::mark("pool: limits applied, accepted");
        if held && !started(&client) {
            // Abandoned at the caller's gate: the guard kills the sandbox before any guest.
            return Ok(());
        }
        let resolved = match (early, module) {
            (Some(resolved), _) => Ok(resolved),
            (None, module) => {
                let module = File::from(module.expect("kept unless held"));
                self.resolve(&spec, wasm, module, true)
                    .map(|resolved| resolved.expect("compiled on a miss"))
            }
        };
        let (code, note, usage) = match resolved {
            Ok(Resolved { artifact, file }) => {
                let work = Work {
                    kind: artifact.kind,
                    artifact_key: artifact.key.clone(),
                    artifact_attached: file.is_some(),
                    module: wasm.module.clone(),
                    args: wasm.args.clone(),
                    env: wasm.env.clone(),
                    memory_limit: spec.sandbox.limits.memory,
                    timeout: spec.sandbox.limits.timeout,
                    preopens,
                    serve: (!listeners.is_empty() || broker.is_some()).then(|| Serving {
                        request_timeout: wasm.request_timeout,
                        allow_outbound: wasm.allow_outbound.clone(),
                        guest_ports: wasm.ports.iter().map(|p| p.guest_port).collect(),
                    }),
                    caller_status: status.is_some(),
                    interruptible: self.pool_kit.interruptible_for(&spec.sandbox.engine),
                    pod_network: spec.sandbox.join.network.is_some(),
                    resolver: (*wasm.resolver).clone(),
                };
                let interruptible = work.interruptible;
                let mut fds: Vec<_> = file.iter().map(AsRawFd::as_raw_fd).collect();
                fds.extend([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]);
                fds.extend(listeners.iter().map(AsRawFd::as_raw_fd));
                fds.extend(broker.iter().map(AsRawFd::as_raw_fd));
                fds.extend(status.iter().map(AsRawFd::as_raw_fd));
                let work = ToSandbox::Work(Box::new(work));
                packet::send(sandbox_socket.as_fd(), &work, &fds)?;
                drop((listeners, broker, status));
                timeline::mark("pool: work sent");
                drop((file, stdin, stdout, stderr));
                if let Some(pool_cgroup) = pool_cgroup.take() {
                    retire(pool_cgroup, guard);
                }
                // Off the start path: the daemon's next sandboxes map this one ahead (code for
                // the engine they are made ready with only).
                if !interruptible {
                    let _ = packet::send(control.as_fd(), &wire::Used { artifact }, &[]);
                }
                drop(control);
                super::supervisor::wait_for_sandbox(guard, &client, &sandbox_socket, &spec, usage)
            }
            Err(e) => {
                let code = match &e {
                    wasm::LoadError::NotCached { .. } => exit::RUNTIME_ERROR,
                    _ => exit::CANNOT_EXECUTE,
                };
                let _ = writeln!(File::from(stderr), "wrun: {:#}", anyhow::Error::new(e));
                guard.kill_and_reap();
                let usage = usage.then(Usage::default);
                (code, None, usage)
            }
        };
        timeline::mark("pool: workload ended");
        if placed {
            guard.release();
        }
        let _ = packet::send(client.as_fd(), &Reply::Finished { code, note, usage }, &[]);
        drop(client);
        guard.release();
        timeline::mark("pool: sandbox reaped, cgroup removed");
        Ok(())
    }

    /// Why this claim is refused, checked before anything changes: what the pool cannot run
    /// as the standalone path would, and what its caller could not have done itself.
    fn refusal(
        &self,
        client: &OwnedFd,
        spec: &RunSpec,
        placement: Option<&str>,
        namespaces: &[OwnedFd],
    ) -> Option<String> {
        let placed = placement.is_some();
        if let Some(reason) = unsuitable(spec, placed).or_else(|| self.shape.mismatch(spec, placed))
        {
            return Some(reason);
        }
        if let Some(path) = placement {
            if crate::spec::parse_cgroup_parent(path).ok().as_deref() != Some(path) {
                return Some(format!("invalid cgroup path `{path}`"));
            }
        }
        // Making a cgroup and joining namespaces is what the caller's own standalone run
        // would do with its own privilege.
        if (placed || !namespaces.is_empty()) && !peer_may_administer(client) {
            return Some("naming a cgroup or namespaces to join needs CAP_SYS_ADMIN".into());
        }
        let joins = Joined::named(&spec.sandbox.join);
        for ((kind, path), fd) in joins.into_iter().zip(namespaces) {
            if crate::sys::namespace_type(fd) != Some(kind.flag()) {
                return Some(format!(
                    "`{}` is not a {} namespace",
                    path.display(),
                    kind.name()
                ));
            }
        }
        None
    }

    /// The compiled artifact for the claimed module: one the sandbox has mapped ahead when the
    /// file is known unchanged since, else from the cache (compiled and stored on a miss),
    /// opened by this supervisor, which can still name paths.
    fn resolve(
        &self,
        spec: &RunSpec,
        payload: &WasmPayload,
        module: File,
        compile: bool,
    ) -> Result<Option<Resolved>, wasm::LoadError> {
        let module = ModuleFile::new(module, &payload.module)?;
        let identity = module.identity();
        let expected = payload.module_digest.as_deref();
        let interruptible = self.pool_kit.interruptible_for(&spec.sandbox.engine);
        let engine = self.pool_kit.engine(interruptible);
        // What the sandbox mapped ahead is code for the engine it was made ready with.
        let mapped = if interruptible { &[] } else { self.mapped };
        if let Some(artifact) = preload::recognise(mapped, &identity, expected) {
            return Ok(Some(Resolved {
                artifact: artifact.clone(),
                file: None,
            }));
        }
        let cache = AotCache::new(self.state.cache_dir());
        let found = if compile {
            Some(wasm::artifact(engine, &module, &cache, expected)?)
        } else {
            wasm::cached_artifact(engine, &module, &cache, expected)?
        };
        let Some((entry, digest)) = found else {
            return Ok(None);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let artifact = RecentArtifact {
            key: entry.key(),
            kind: entry.kind,
            digest,
            identity: identity.settled(now).then_some(identity),
        };
        Ok(Some(Resolved {
            artifact,
            file: Some(entry.file),
        }))
    }
}

/// The descriptors a claim brought, in the order they came (see [`Request::Claim`]).
struct Brought {
    module: OwnedFd,
    stdio: [OwnedFd; 3],
    /// The caller's status pipe, unless it asked for usage (then the answer waits for the
    /// reaping anyway).
    status: Option<OwnedFd>,
    dirs: Vec<OwnedFd>,
    listeners: Vec<OwnedFd>,
    broker: Option<OwnedFd>,
    namespaces: Vec<OwnedFd>,
}

impl Brought {
    /// `None` when the count does not match what `spec` says came.
    fn unpack(
        spec: &RunSpec,
        wasm: &WasmPayload,
        usage: bool,
        fds: Vec<OwnedFd>,
    ) -> Option<Brought> {
        let outbound = !wasm.allow_outbound.is_empty();
        let joins = Joined::named(&spec.sandbox.join).len();
        let expected = 5 + wasm.preopens.len() + wasm.ports.len() + usize::from(outbound) + joins;
        if fds.len() != expected {
            return None;
        }
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("counted above");
        Some(Brought {
            module: next(),
            stdio: [next(), next(), next()],
            status: Some(next()).filter(|_| !usage),
            dirs: wasm.preopens.iter().map(|_| next()).collect(),
            listeners: wasm.ports.iter().map(|_| next()).collect(),
            broker: outbound.then(&mut next),
            namespaces: (0..joins).map(|_| next()).collect(),
        })
    }
}

/// Whether the peer on `client` holds CAP_SYS_ADMIN (in its effective set) in this
/// process's user namespace: one it made for itself gives it every capability there, and
/// nothing over cgroups or other namespaces.
fn peer_may_administer(client: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(peer) = nix::sys::socket::getsockopt(client, nix::sys::socket::sockopt::PeerCredentials)
    else {
        return false;
    };
    let user_namespace =
        |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| (m.dev(), m.ino()));
    match (
        user_namespace("self"),
        user_namespace(&peer.pid().to_string()),
    ) {
        (Ok(mine), Ok(theirs)) if mine == theirs => {}
        _ => return false,
    }
    caps::has_cap(
        Some(peer.pid()),
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false)
}

/// Removes the pool's cgroup once the sandbox has left it for its run's, and from then on
/// the record names only the run's.
fn retire(pool_cgroup: RunCgroup, guard: &mut ChildGuard) {
    if let Err(e) = pool_cgroup.remove() {
        tracing::warn!("{e:#}");
        // Left locked until this process exits, the record then leads the next sweep to it.
        std::mem::forget(guard.record.take());
        return;
    }
    let run_cgroup = guard.cgroup.as_ref().map(|c| c.path().to_string());
    if let (Some(record), Some(run_cgroup)) = (guard.record.as_mut(), run_cgroup) {
        let _ = record.name_cgroups(&[&run_cgroup]);
    }
}

/// Only the daemon's own user (or root) may hand it work.
fn same_user(client: &OwnedFd) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    nix::sys::socket::getsockopt(client, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|peer| peer.uid() == me || peer.uid() == 0)
}

/// Puts a claimed sandbox where its run needs it, with the run's limits: in the pool's own
/// cgroup, or in `placement`, made now and the sandbox moved into it. Returns the pool's
/// cgroup when the sandbox left it, for removal off the start path.
fn place(
    spec: &RunSpec,
    placement: Option<&str>,
    sandbox: &OwnedFd,
    guard: &mut ChildGuard,
) -> anyhow::Result<Option<RunCgroup>> {
    use anyhow::Context;
    let limit = |cgroup: &RunCgroup| {
        // Unlimited is how a cgroup is made: writing it again would cost 0.4 ms on v1.
        let limits = &spec.sandbox.limits;
        if *limits == crate::spec::Limits::default() {
            return Ok(());
        }
        cgroup.apply(limits, spec.memory_headroom())
    };
    let pool_cgroup = guard.cgroup.as_ref().expect("made before the claim");
    let Some(target) = placement else {
        limit(pool_cgroup)?;
        return Ok(None);
    };
    // In every hierarchy the pool's cgroup is in, so that the sandbox leaves all of them.
    // Someone else's (a slice, a running task's) is refused: never limited, joined or
    // removed by a claim; an empty one is joined but not named for a sweep, nor removed.
    let mut placed = RunCgroup::plan(target, &RunCgroup::unlimited())?;
    // Recorded first: a sweep after a crash from here on removes either.
    if let Some(record) = guard.record.as_mut().filter(|_| !placed.adopted()) {
        record
            .name_cgroups(&[target, pool_cgroup.path()])
            .with_context(|| format!("failed to record the cgroup {target}"))?;
    }
    placed.make()?;
    limit(&placed)?;
    if let Err(e) = move_in(&placed, guard.child, sandbox) {
        // Maybe moved in some hierarchies only (v1 joins one by one): never run like that.
        guard.kill_and_reap();
        return Err(e);
    }
    Ok(guard.cgroup.replace(placed))
}

/// Moves the claimed sandbox into `placed`. On cgroup v1 the sandbox moves itself (writing
/// `0` to the `tasks` files named): a move by this process would take the kernel's global
/// lock, which after a quiet spell waits for an RCU grace period (a handed-over pooled
/// start took 10–37 ms here) while holding every other cgroup's creation and removal back.
fn move_in(placed: &RunCgroup, child: nix::unistd::Pid, sandbox: &OwnedFd) -> anyhow::Result<()> {
    let Some(go_ahead) = self_join::go_ahead(placed) else {
        return Ok(placed.join(child.as_raw() as u32)?);
    };
    let tasks = String::from_utf8_lossy(&go_ahead[1..]).into_owned();
    let failed = || {
        anyhow::anyhow!(
            "the pooled sandbox failed to move into the cgroup {}",
            placed.path()
        )
    };
    packet::send(sandbox.as_fd(), &ToSandbox::JoinCgroup { tasks }, &[]).map_err(|_| failed())?;
    let mut watched = [PollFd::new(sandbox.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut watched, PollTimeout::from(JOIN_LIMIT_MS)).unwrap_or(0);
    if ready == 0 || packet::receive_byte(sandbox.as_fd()) != Some(JOINED) {
        return Err(failed());
    }
    Ok(())
}

/// How long a claimed sandbox may take to join what its claim names, well inside the
/// client's own wait.
const JOIN_LIMIT_MS: u16 = 2000;

/// Has the sandbox join the namespaces the claim names and drop the capabilities it kept for
/// that, and waits for it to confirm — within a bound well inside the client's own wait, and
/// only while the client is there; a failure is the standalone path's to report.
fn join(
    sandbox: &OwnedFd,
    client: &OwnedFd,
    spec: &RunSpec,
    namespaces: Vec<OwnedFd>,
) -> Result<(), String> {
    let named: Vec<Joined> = Joined::named(&spec.sandbox.join)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    let new = new_namespaces(spec, &named);
    if named.is_empty() && new.is_empty() {
        return Ok(());
    }
    let failed =
        || Err("the pooled sandbox failed to make or join the run's namespaces".to_string());
    let fds: Vec<_> = namespaces.iter().map(AsRawFd::as_raw_fd).collect();
    if packet::send(sandbox.as_fd(), &ToSandbox::Join { new, named }, &fds).is_err() {
        return failed();
    }
    // The client sends nothing before `Accepted`: anything readable there is its leaving.
    let mut watched = [
        PollFd::new(sandbox.as_fd(), PollFlags::POLLIN),
        PollFd::new(client.as_fd(), PollFlags::POLLIN),
    ];
    let ready = poll(&mut watched, PollTimeout::from(JOIN_LIMIT_MS)).unwrap_or(0);
    let answered = watched[0].revents().is_some_and(|r| !r.is_empty());
    if ready == 0 || !answered {
        return failed();
    }
    match packet::receive_byte(sandbox.as_fd()) {
        Some(JOINED) => Ok(()),
        _ => failed(),
    }
}

/// The namespaces a bundle's run makes of its own rather than sharing the pool's network and
/// IPC namespaces (`shared_namespaces`), as its standalone run would: those it names no path
/// for. Others keep the shared ones (a pooled sandbox made its own where none is pinned).
fn new_namespaces(spec: &RunSpec, named: &[Joined]) -> Vec<Joined> {
    if !spec.sandbox.own_namespaces {
        return Vec::new();
    }
    [Joined::Network, Joined::Ipc]
        .into_iter()
        .filter(|kind| !named.contains(kind))
        .collect()
}

/// Waits for a held claim's `Start`; anything else, or the caller leaving, abandons it.
fn started(client: &OwnedFd) -> bool {
    matches!(
        packet::receive::<Request>(client.as_fd()),
        Ok(Some((Request::Start, _)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_capabilities_are_read_from_its_process() {
        let (one, _other) = packet::pair().unwrap();
        // The peer is this test process: it may administer exactly when it has the capability.
        let has = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_ADMIN,
        )
        .unwrap();
        assert_eq!(peer_may_administer(&one), has);
    }
}
