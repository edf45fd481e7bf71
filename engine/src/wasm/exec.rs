//! Instantiates a compiled guest with WASI and runs it to its end.

use super::budget::MemoryBudget;
use super::p1_sockets::{self, SocketFds};
use super::sockets::{Sockets, SocketsView};
use super::source::Kind;
use super::Program;
use std::path::{Path, PathBuf};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Linker, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// A directory reachable at `path` now, shown to the guest as `guest`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GuestDir {
    pub path: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// How a guest run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The guest returned from its entry point (0) or called exit.
    Exited(i32),
    /// The guest trapped; the error carries the trap and its wasm backtrace.
    Trapped(wasmtime::Error),
    /// An epoch interruption (timeout or a stop signal) ended the guest.
    Interrupted,
}

/// Why a guest could not be started; all of these mean "cannot execute this module".
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to open the directory for guest path `{guest}`")]
    Preopen {
        guest: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("failed to instantiate `{path}`")]
    Instantiate {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error("`{path}` is not a WASI command: it exports no `_start` function")]
    NoStart { path: PathBuf },
    #[error("`{path}` is not a `wasi:cli/command` component: it exports no `wasi:cli/run`")]
    NotCommand { path: PathBuf },
    #[error("`{path}` cannot serve HTTP (-p): it is not a component exporting `wasi:http/incoming-handler`")]
    NotHttpHandler { path: PathBuf },
    #[error("`{path}` cannot listen on published ports (-p): it is neither a `wasi:cli/command` nor a `wasi:http/incoming-handler` component")]
    CannotListen { path: PathBuf },
    #[error("failed to set up the WASI host")]
    Host(#[source] wasmtime::Error),
    #[error("failed to start the WASI host runtime")]
    Runtime(#[source] std::io::Error),
}

impl ExecError {
    /// Whether the module is at fault (rather than the host).
    pub fn is_module_error(&self) -> bool {
        !matches!(self, ExecError::Host(_) | ExecError::Runtime(_))
    }
}

/// The host side of a run, which does not depend on the guest's code: the async runtime the
/// WASI bindings block on, the linker with WASI defined, and the WASI context less its
/// preopens. Built before the sandbox's cgroup is ready, so that only instantiation is left.
pub struct Host {
    runtime: tokio::runtime::Runtime,
    linker: HostLinker,
    wasi: WasiCtxBuilder,
    network: Network,
    /// The descriptor kept for accepted sockets' numbers, once pre-opens are placed.
    p1_reserve: Option<u32>,
}

/// What a component's `wasi:sockets` may reach (`-p`, `--allow-outbound`); nothing by default.
#[derive(Default)]
pub struct Network {
    /// Each published guest port and the listener opened for it.
    pub published: Vec<(u16, std::net::TcpListener)>,
    pub allow_outbound: Vec<crate::spec::OutboundRule>,
    /// The connect broker's end, with `allow_outbound`.
    pub broker: Option<std::os::fd::OwnedFd>,
    /// The run joined a pod's network namespace: the guest's sockets are the pod's to use,
    /// as any container's in the pod, and its names are looked up as the pod's files say.
    pub pod: Option<crate::spec::PodResolver>,
}

enum HostLinker {
    Core(Linker<CoreState>),
    Component(wasmtime::component::Linker<ComponentState>),
}

/// Builds the host for a guest of `kind` with `args` (argv[0] included) and `env`.
///
/// The guest runs through wasmtime's async API inside the runtime's own `block_on`, the only
/// place a current-thread runtime drives its timers: with the sync bindings a guest that
/// sleeps through `wasi:io/poll` would wait forever.
pub fn prepare_host(
    engine: &Engine,
    kind: Kind,
    args: &[String],
    env: &[(String, String)],
) -> Result<Host, ExecError> {
    let linker = match kind {
        Kind::Module => HostLinker::Core(core_linker(engine)?),
        Kind::Component => HostLinker::Component(component_linker(engine)?),
    };
    let runtime = host_runtime().map_err(ExecError::Runtime)?;
    Ok(Host {
        runtime,
        linker,
        wasi: wasi_builder(args, env),
        network: Network::default(),
        p1_reserve: None,
    })
}

/// What a host needs whatever the guest: the runtime and a linker for either kind. A pooled
/// sandbox builds it before it knows its guest.
pub struct HostKit {
    runtime: tokio::runtime::Runtime,
    core: Linker<CoreState>,
    component: wasmtime::component::Linker<ComponentState>,
    wasi: WasiCtxBuilder,
}

/// The linkers of both kinds of guest for one engine: ≈0.6 ms to make, so a process that
/// forks many sandboxes makes them once and each sandbox takes its inherited copy.
pub struct Linkers {
    core: Linker<CoreState>,
    component: wasmtime::component::Linker<ComponentState>,
}

impl Linkers {
    pub fn new(engine: &Engine) -> Result<Linkers, ExecError> {
        Ok(Linkers {
            core: core_linker(engine)?,
            component: component_linker(engine)?,
        })
    }
}

impl HostKit {
    /// A kit around `linkers` (made for the engine the guest will run on).
    pub fn new(linkers: Linkers) -> Result<HostKit, ExecError> {
        Ok(HostKit {
            runtime: host_runtime().map_err(ExecError::Runtime)?,
            core: linkers.core,
            component: linkers.component,
            wasi: wasi_builder(&[], &[]),
        })
    }

    /// The host for a guest of `kind` with `args` (argv[0] included) and `env`.
    pub fn host(self, kind: Kind, args: &[String], env: &[(String, String)]) -> Host {
        // The other linker is left to the (single-use) process's exit: freeing its hundreds
        // of definitions would cost ≈0.1 ms before the guest starts.
        let linker = match kind {
            Kind::Module => {
                std::mem::forget(self.component);
                HostLinker::Core(self.core)
            }
            Kind::Component => {
                std::mem::forget(self.core);
                HostLinker::Component(self.component)
            }
        };
        let mut wasi = self.wasi;
        wasi.args(args).envs(env);
        Host {
            runtime: self.runtime,
            linker,
            wasi,
            network: Network::default(),
            p1_reserve: None,
        }
    }

    /// Runs the warm-up guest to its end with a context of its own (no stdio, arguments or
    /// files of any run) and frees its store: the code and allocator pages a run touches are
    /// then this process's already, off the start path.
    pub fn warm_up(&self, engine: &Engine, module: &wasmtime::Module) -> wasmtime::Result<()> {
        let _entered = self.runtime.enter();
        let state = CoreState {
            wasi: WasiCtxBuilder::new().build_p1(),
            budget: MemoryBudget::new(None),
            sockets: SocketFds::default(),
        };
        self.runtime.block_on(async {
            let mut store = new_store(engine, state, |s| &mut s.budget);
            let instance = self.core.instantiate_async(&mut store, module).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        })
    }
}

/// wrun's own warm-up guest: one `fd_write` of two bytes to its stdout (a WASI context's
/// default, which discards them), trapping unless both were written, so that a pooled
/// sandbox has been through instantiation and a WASI call before its workload comes.
const WARM_UP_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "\10\00\00\00\02\00\00\00ok")
  (func (export "_start")
    (if (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 32))
      (then unreachable))
    (if (i32.ne (i32.load (i32.const 32)) (i32.const 2))
      (then unreachable))))"#;

/// Compiles the warm-up guest, once, in the process that forks the sandboxes.
pub fn warm_up_module(engine: &Engine) -> wasmtime::Result<wasmtime::Module> {
    wasmtime::Module::new(engine, WARM_UP_WAT)
}

fn wasi_builder(args: &[String], env: &[(String, String)]) -> WasiCtxBuilder {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(args)
        .envs(env)
        .inherit_stdio()
        // The sync bindings run on this thread anyway; blocking here saves a thread hop.
        .allow_blocking_current_thread(true);
    wasi
}

fn core_linker(engine: &Engine) -> Result<Linker<CoreState>, ExecError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut CoreState| &mut s.wasi)
        .map_err(ExecError::Host)?;
    Ok(linker)
}

fn component_linker(
    engine: &Engine,
) -> Result<wasmtime::component::Linker<ComponentState>, ExecError> {
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(ExecError::Host)?;
    super::sockets::add_to_linker(&mut linker).map_err(ExecError::Host)?;
    Ok(linker)
}

/// A current-thread runtime: no worker thread per CPU to start and tear down, and no thread
/// at all until the guest blocks on something (stdin), by which time every namespace is joined.
fn host_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
}

struct CoreState {
    wasi: WasiP1Ctx,
    budget: MemoryBudget,
    sockets: SocketFds,
}

impl p1_sockets::SocketsView for CoreState {
    fn p1_parts(&mut self) -> (&mut WasiP1Ctx, &mut SocketFds) {
        (&mut self.wasi, &mut self.sockets)
    }
}

struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    budget: MemoryBudget,
    sockets: Sockets,
}

impl SocketsView for ComponentState {
    fn sockets(&mut self) -> (&mut ResourceTable, &mut Sockets) {
        (&mut self.table, &mut self.sockets)
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host {
    /// Gives the guest's sockets `network` to reach. A preview-1 module gets the published
    /// listeners as pre-opened descriptors from fd 3, counted in `LISTEN_FDS`.
    pub fn connect(&mut self, network: Network) -> Result<(), ExecError> {
        if let (HostLinker::Core(linker), false) = (&mut self.linker, network.published.is_empty())
        {
            p1_sockets::add_to_linker(linker).map_err(ExecError::Host)?;
            self.wasi
                .env("LISTEN_FDS", network.published.len().to_string());
        }
        if network.pod.is_some() {
            // The pod's network is the guest's, as any container's in the pod: UDP through
            // wasmtime-wasi's own sockets, as `wasmtime run -S inherit-network` (TCP and name
            // lookup stay wrun's, which know the pod too).
            self.wasi.inherit_network().allow_udp(true);
        }
        self.network = network;
        Ok(())
    }

    /// Opens the directories the guest gets. Done while the process may still open any path
    /// (before its capabilities and system calls are restricted).
    pub fn preopen(&mut self, preopens: &[GuestDir]) -> Result<(), ExecError> {
        let _entered = self.runtime.enter();
        let sockets = self.preview1_sockets();
        for _ in 0..sockets {
            self.hold_socket_number()?;
        }
        for dir in preopens {
            let perms = if dir.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            self.wasi
                .preopened_dir(&dir.path, &dir.guest, perms)
                .map_err(|source| ExecError::Preopen {
                    guest: dir.guest.clone(),
                    source,
                })?;
        }
        if sockets > 0 {
            self.hold_socket_number()?;
            let reserve = p1_sockets::FIRST_FD + (sockets + preopens.len()) as u32;
            self.p1_reserve = Some(reserve);
        }
        Ok(())
    }

    /// How many listeners a preview-1 guest gets as descriptors.
    fn preview1_sockets(&self) -> usize {
        match self.linker {
            HostLinker::Core(_) => self.network.published.len(),
            HostLinker::Component(_) => 0,
        }
    }

    /// A pre-opened directory in wasmtime-wasi's table that holds a socket's number (see
    /// `p1_sockets`): the guest never reaches it, every descriptor function being wrun's,
    /// and it is the sandbox's root, which holds only the guest's own directories anyway.
    fn hold_socket_number(&mut self) -> Result<(), ExecError> {
        self.wasi
            .preopened_dir("/", "/", FsPerms::ReadOnly)
            .map(drop)
            .map_err(ExecError::Host)
    }
}

/// Runs `program` (compiled from `path`) on `host`, its memories and tables held to
/// `memory_limit` bytes in total.
///
/// For a process that ends with its guest: the store and linker are left to its exit, which
/// frees them at once, instead of being torn down one by one (≈0.1 ms) before the caller can
/// have the exit code.
pub fn run(
    engine: &Engine,
    program: &Program,
    path: &Path,
    host: Host,
    memory_limit: Option<u64>,
) -> Result<Outcome, ExecError> {
    let Host {
        runtime,
        linker,
        mut wasi,
        network,
        p1_reserve,
    } = host;
    let entered = runtime.enter();
    let budget = MemoryBudget::new(memory_limit);
    let outcome = match (program, linker) {
        (Program::Module(module), HostLinker::Core(linker)) => {
            let state = CoreState {
                wasi: wasi.build_p1(),
                budget,
                sockets: socket_fds(network, p1_reserve)?,
            };
            let outcome = runtime.block_on(run_module(engine, module, path, &linker, state));
            std::mem::forget(linker);
            outcome
        }
        (Program::Component(component), HostLinker::Component(linker)) => {
            let state = ComponentState {
                wasi: wasi.build(),
                table: ResourceTable::new(),
                budget,
                sockets: sockets_for(network)?,
            };
            let outcome = runtime.block_on(run_component(engine, component, path, &linker, state));
            std::mem::forget(linker);
            outcome
        }
        _ => unreachable!("the host is prepared for the program's kind"),
    };
    drop(entered);
    // Waits for writes the guest left in flight on blocking threads (a component's file
    // writes without a flush); ≈20 µs when there are none, bounded when one is stuck.
    runtime.shutdown_timeout(RUNTIME_DRAIN);
    outcome
}

/// A preview-1 guest's published listeners as descriptors, inside the runtime.
fn socket_fds(network: Network, reserve: Option<u32>) -> Result<SocketFds, ExecError> {
    let Some(reserve) = reserve else {
        return Ok(SocketFds::default());
    };
    let listeners = network.published.into_iter().map(|(_, l)| l).collect();
    SocketFds::new(listeners, p1_sockets::FIRST_FD, reserve).map_err(ExecError::Runtime)
}

/// The sockets over `network`, inside the runtime.
fn sockets_for(network: Network) -> Result<Sockets, ExecError> {
    let outbound = super::outbound::Outbound::new(network.allow_outbound, network.broker);
    outbound
        .and_then(|outbound| Sockets::new(network.published, outbound, network.pod))
        .map_err(ExecError::Runtime)
}

/// How long the end of a run waits for the guest's writes still in flight.
const RUNTIME_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

fn new_store<T>(engine: &Engine, state: T, budget: fn(&mut T) -> &mut MemoryBudget) -> Store<T> {
    let mut store = Store::new(engine, state);
    store.limiter(move |s| budget(s));
    // Any increment of the engine's epoch (timeout, stop signal) interrupts the guest.
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    store
}

async fn run_module(
    engine: &Engine,
    module: &wasmtime::Module,
    path: &Path,
    linker: &Linker<CoreState>,
    state: CoreState,
) -> Result<Outcome, ExecError> {
    let instantiate_err = |source| ExecError::Instantiate {
        path: path.to_path_buf(),
        source,
    };
    let mut store = new_store(engine, state, |s| &mut s.budget);
    let instance = linker
        .instantiate_async(&mut store, module)
        .await
        .map_err(instantiate_err)?;
    crate::timeline::mark("instantiated");
    crate::allocator::close_setup_arena();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| ExecError::NoStart {
            path: path.to_path_buf(),
        })?;
    let outcome = match start.call_async(&mut store, ()).await {
        Ok(()) => Outcome::Exited(0),
        Err(e) => classify(e),
    };
    std::mem::forget(store);
    Ok(outcome)
}

async fn run_component(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &Path,
    linker: &wasmtime::component::Linker<ComponentState>,
    state: ComponentState,
) -> Result<Outcome, ExecError> {
    use wasmtime_wasi::p2::bindings::Command;
    let exports_run = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:cli/run@"));
    if !exports_run {
        return Err(ExecError::NotCommand {
            path: path.to_path_buf(),
        });
    }
    let instantiate_err = |source| ExecError::Instantiate {
        path: path.to_path_buf(),
        source,
    };
    let mut store = new_store(engine, state, |s| &mut s.budget);
    let command = Command::instantiate_async(&mut store, component, linker)
        .await
        .map_err(instantiate_err)?;
    crate::allocator::close_setup_arena();
    let outcome = match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Outcome::Exited(0),
        Ok(Err(())) => Outcome::Exited(1),
        Err(e) => classify(e),
    };
    std::mem::forget(store);
    Ok(outcome)
}

fn classify(error: wasmtime::Error) -> Outcome {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Outcome::Interrupted;
    }
    Outcome::Trapped(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_guest_gets_through_a_wasi_write() {
        let engine =
            super::super::engine::new_forking_engine(&crate::config::EngineSettings::default())
                .unwrap();
        let module = warm_up_module(&engine).unwrap();
        let kit = HostKit::new(Linkers::new(&engine).unwrap()).unwrap();
        kit.warm_up(&engine, &module).unwrap();
        // The kit still makes a host for the run that follows.
        let host = kit.host(Kind::Module, &["m".to_string()], &[]);
        assert!(matches!(host.linker, HostLinker::Core(_)));
    }
}
