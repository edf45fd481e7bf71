//! Where a Wasm sandbox's work comes from. The one child body ([`super::child`]) asks its
//! source at each step and does the same thing either way: a run given at the fork (the
//! standalone path, let go by its parent's go-ahead) or one claimed later (a pooled sandbox,
//! made ready before any run exists; see [`super::claimed`]).

use super::child::ChildError;
use super::guest::{GuestRun, GuestWork, Lock, Server};
use super::self_join::SelfJoin;
use super::{claim_filter, filter_pipe, harden, Stdio};
use crate::spec::{JoinedNamespaces, Preopen, RunSpec, WasmPayload};
use crate::timeline;
use crate::wasm::cache::AotCache;
use crate::wasm::exec::{self, GuestDir, Host};
use crate::wasm::source::ModuleFile;
use crate::wasm::{self, LoadError, Origin, Program};
use std::fs::File;
use std::os::fd::OwnedFd;

/// The steps of a sandbox that depend on where its work comes from, in the order the child
/// body takes them.
pub(crate) trait WorkSource {
    /// Existing namespaces to join instead of making new ones (a bundle's pod).
    fn joins(&self) -> JoinedNamespaces;
    /// The directories the root is made with, and how many spare mount points it gets for
    /// directories attached later.
    fn root(&self) -> (&[Preopen], usize);
    /// The engine, with what can be made ready before the root is entered and the
    /// go-ahead comes (the module loaded, its host built; or artifacts mapped ahead).
    fn prepare(&mut self, cache: &AotCache) -> Result<wasmtime::Engine, ChildError>;
    /// Before waiting for the go-ahead, the lock-down that leaves the go-ahead's joins
    /// possible (a standalone command's: `harden::lock_for_set_up`).
    fn lock_for_set_up(&mut self) -> Result<(), ChildError> {
        Ok(())
    }
    /// After the go-ahead, the descriptor of the host's cgroup hierarchies the sandbox moved
    /// itself in with: closed here, as no guest may hold it (it could move itself out of its
    /// cgroup's limits with it), unless the source needs it again before its guest.
    fn keep_cgroup_root(&mut self, cgroup_root: Option<SelfJoin>) {
        drop(cgroup_root);
    }
    /// After the go-ahead, in the run's cgroup and network namespace: the guest's work, or
    /// `None` when no run ever comes (a pool shutting down). `dirs` are the root's.
    fn work(
        self,
        engine: wasmtime::Engine,
        dirs: Vec<GuestDir>,
    ) -> Result<Option<GuestWork>, ChildError>;
}

/// A run known before the fork: the standalone path.
pub struct Given<'a> {
    wasm: &'a WasmPayload,
    spec: &'a RunSpec,
    module_file: Option<File>,
    listeners: Vec<std::net::TcpListener>,
    broker: Option<OwnedFd>,
    /// Where the parent sends the command's seccomp programs (`filter_pipe`); without it the
    /// sandbox compiles them.
    filters_from: Option<OwnedFd>,
    prepared: Option<(Program, Prepared)>,
}

/// What [`Given::prepare`] made ready to run.
// One per sandbox (see `GuestRun`).
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Command(Host, CommandFilters),
    Serve(Server),
}

/// A command's two seccomp programs (`claim_filter::set_up_filters`): the set-up one, taken
/// when it is installed before the go-ahead, and the narrowing one installed over it when the
/// guest is about to run.
struct CommandFilters {
    set_up: Option<seccompiler::BpfProgram>,
    narrowing: seccompiler::BpfProgram,
}

impl<'a> Given<'a> {
    /// `spec`'s Wasm payload, its module opened by the parent; `listeners` (`-p`) and the
    /// connect broker's end (`--allow-outbound`) for a guest that serves HTTP.
    pub fn new(
        spec: &'a RunSpec,
        wasm: &'a WasmPayload,
        module_file: File,
        listeners: Vec<std::net::TcpListener>,
        broker: Option<OwnedFd>,
    ) -> Given<'a> {
        Given {
            wasm,
            spec,
            module_file: Some(module_file),
            listeners,
            broker,
            filters_from: None,
            prepared: None,
        }
    }

    /// The read end of the pipe the parent sends the seccomp programs on, if any.
    pub fn with_filters_from(self, pipe: Option<OwnedFd>) -> Given<'a> {
        Given {
            filters_from: pipe,
            ..self
        }
    }
}

impl WorkSource for Given<'_> {
    fn joins(&self) -> JoinedNamespaces {
        self.spec.sandbox.join.clone()
    }

    fn root(&self) -> (&[Preopen], usize) {
        (&self.wasm.preopens, 0)
    }

    fn prepare(&mut self, cache: &AotCache) -> Result<wasmtime::Engine, ChildError> {
        // Most of what set-up allocates lives as long as the sandbox; a pooled sandbox,
        // warmed up by a run of its own, allocates as a run does.
        crate::allocator::open_setup_arena();
        let engine = wasm::engine::new_engine(false, &self.spec.sandbox.engine)
            .map_err(ChildError::Engine)?;
        timeline::mark("engine");
        let wasm = self.wasm;
        let file = self.module_file.take().ok_or(ChildError::ParentGone)?;
        let module = ModuleFile::new(file, &wasm.module).map_err(LoadError::from)?;
        let (program, origin) = wasm::load(&engine, &module, cache, wasm.module_digest.as_deref())?;
        match &origin {
            Origin::Cached(path) => tracing::debug!(path = %path.display(), "aot cache hit"),
            Origin::Compiled(_) => tracing::debug!("compiled (aot cache miss)"),
        }
        timeline::mark("module loaded");
        // Everything that does not need the cgroup is done before waiting for it. (A second
        // thread for this was measured slower: with the parent busy, three threads share 2
        // CPUs.)
        let prepared =
            if wasm::serve::serves_http(&engine, &program, &wasm.module, !wasm.ports.is_empty())? {
                Prepared::Serve(Server::prepare(
                    &engine,
                    &program,
                    &wasm.module,
                    harden::http_server_filter(),
                )?)
            } else {
                let host = exec::prepare_host(&engine, program.kind(), &wasm.args, &wasm.env)?;
                let (set_up, narrowing) = match self.filters_from.take() {
                    Some(pipe) => filter_pipe::receive(pipe).map_err(|_| ChildError::ParentGone)?,
                    None => claim_filter::command_filters(self.spec, wasm),
                };
                let filters = CommandFilters {
                    set_up: Some(set_up),
                    narrowing,
                };
                Prepared::Command(host, filters)
            };
        timeline::mark("host ready");
        self.prepared = Some((program, prepared));
        Ok(engine)
    }

    fn lock_for_set_up(&mut self) -> Result<(), ChildError> {
        if let Some((_, Prepared::Command(_, filters))) = &mut self.prepared {
            if let Some(set_up) = filters.set_up.take() {
                harden::lock_for_set_up(&set_up)?;
                timeline::mark("locked for set-up");
            }
        }
        Ok(())
    }

    fn work(
        mut self,
        engine: wasmtime::Engine,
        dirs: Vec<GuestDir>,
    ) -> Result<Option<GuestWork>, ChildError> {
        // Done before the go-ahead on the way here; done now otherwise, still before the
        // guest.
        self.lock_for_set_up()?;
        let (program, prepared) = self.prepared.ok_or(ChildError::ParentGone)?;
        let (wasm, limits) = (self.wasm, &self.spec.sandbox.limits);
        let run = match prepared {
            Prepared::Command(mut host, filters) => {
                host.connect(exec::Network {
                    published: wasm
                        .ports
                        .iter()
                        .map(|p| p.guest_port)
                        .zip(self.listeners)
                        .collect(),
                    allow_outbound: wasm.allow_outbound.clone(),
                    broker: self.broker,
                    pod: self
                        .spec
                        .sandbox
                        .join
                        .network
                        .is_some()
                        .then(|| (*wasm.resolver).clone()),
                })?;
                GuestRun::Command {
                    host,
                    preopens: dirs,
                    filter: filters.narrowing,
                }
            }
            Prepared::Serve(server) => GuestRun::Serve {
                server,
                listeners: self.listeners,
                options: wasm::serve::ServeOptions {
                    stop_requested: super::signals::stop_requested,
                    preopens: dirs,
                    args: wasm.args.clone(),
                    env: wasm.env.clone(),
                    memory_limit: limits.memory,
                    request_timeout: wasm.request_timeout,
                    allow_outbound: wasm.allow_outbound.clone(),
                    broker: self.broker,
                },
            },
        };
        let lock = match &run {
            GuestRun::Command { .. } => Lock::AfterSetUp,
            GuestRun::Serve { .. } => Lock::Full,
        };
        Ok(Some(GuestWork {
            engine,
            checks: self.spec.sandbox.engine.epoch_interruption,
            program,
            module: wasm.module.clone(),
            memory_limit: limits.memory,
            timeout: limits.timeout,
            run,
            lock,
            report: None,
            heap_given_back: false,
        }))
    }
}

/// Installs `stdio` as the process's stdin, stdout and stderr (where it gives one).
pub(super) fn install_stdio(stdio: Stdio) -> nix::Result<()> {
    if let Some(fd) = stdio.stdin {
        nix::unistd::dup2_stdin(fd)?;
    }
    if let Some(fd) = stdio.stdout {
        nix::unistd::dup2_stdout(fd)?;
    }
    if let Some(fd) = stdio.stderr {
        nix::unistd::dup2_stderr(fd)?;
    }
    Ok(())
}
