//! `run -p`: serves HTTP from a component that exports `wasi:http/incoming-handler`, on
//! listeners the parent opened in the host's network namespace before the sandbox existed.
//! The guest can only answer requests: it has no socket of its own, and outgoing HTTP goes
//! only where `--allow-outbound` says (see `outbound`).
//!
//! One instance serves the requests of a sandbox in turn, so the guest keeps its state (a
//! counter, a cache) from one request to the next like any server process. A request that traps
//! or runs past `--request-timeout` is answered 500 or 503, and the instance is replaced by a
//! fresh one from the pre-instantiated component.

use super::budget::MemoryBudget;
use super::exec::ExecError;
use super::outbound::Outbound;
use http_body_util::BodyExt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What a served guest gets, besides requests.
pub struct ServeOptions {
    /// Polled while serving: once true, stop accepting, finish the requests in flight, return.
    pub stop_requested: fn() -> bool,
    /// Directories each instance gets, reachable at their paths inside the sandbox.
    pub preopens: Vec<super::exec::GuestDir>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub memory_limit: Option<u64>,
    pub request_timeout: Option<Duration>,
    /// Hosts outgoing requests may go to (`--allow-outbound`), and the broker that connects.
    pub allow_outbound: Vec<crate::spec::OutboundRule>,
    pub broker: Option<std::os::fd::OwnedFd>,
}

/// A served instance's store data: WASI, wasi:http and the memory budget.
pub struct ServeState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    budget: MemoryBudget,
    hooks: Outbound,
}

impl WasiView for ServeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ServeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A live instance of the handler and its store.
type Instance = (Store<ServeState>, Proxy);

/// The component, ready to instantiate, and the instance serving now.
struct Handler {
    pre: ProxyPre<ServeState>,
    options: ServeOptions,
    outbound: Outbound,
    in_flight: std::sync::atomic::AtomicUsize,
    live: Arc<tokio::sync::Mutex<Option<Instance>>>,
}

/// Whether `component` exports `wasi:http/incoming-handler` (any version).
fn exports_handler(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@"))
}

/// Whether a run of `program` (from `path`) that `publishes` ports serves HTTP: a component
/// exporting the handler does; a command component listens through its sockets instead, and
/// a preview-1 module on the listeners pre-opened for it; any other component cannot
/// listen. Checked before any sandbox or port by `run -d -p`, which must not print an ID for
/// a container that can only fail.
pub fn serves_http(
    engine: &Engine,
    program: &super::Program,
    path: &std::path::Path,
    publishes: bool,
) -> Result<bool, ExecError> {
    if !publishes {
        return Ok(false);
    }
    let cannot_listen = || ExecError::CannotListen {
        path: path.to_path_buf(),
    };
    match program {
        super::Program::Component(component) if exports_handler(engine, component) => Ok(true),
        super::Program::Component(component) => {
            let exports_run = component
                .component_type()
                .exports(engine)
                .any(|(name, _)| name.starts_with("wasi:cli/run@"));
            exports_run.then_some(false).ok_or_else(cannot_listen)
        }
        super::Program::Module(_) => Ok(false),
    }
}

/// Checks that `component` is an HTTP handler and prepares it against the WASI and HTTP host.
pub fn prepare(
    engine: &Engine,
    component: &Component,
    path: &std::path::Path,
) -> Result<ProxyPre<ServeState>, ExecError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(ExecError::Host)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(ExecError::Host)?;
    let not_handler = || ExecError::NotHttpHandler {
        path: path.to_path_buf(),
    };
    if !exports_handler(engine, component) {
        return Err(not_handler());
    }
    let instance_pre =
        linker
            .instantiate_pre(component)
            .map_err(|source| ExecError::Instantiate {
                path: path.to_path_buf(),
                source,
            })?;
    ProxyPre::new(instance_pre).map_err(|_| not_handler())
}

/// The runtime requests are served on, built before the seccomp filter (which forbids making
/// the epoll and event descriptors it needs).
pub fn runtime() -> Result<tokio::runtime::Runtime, ExecError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExecError::Runtime)
}

/// Serves until the process is told to stop.
pub fn serve(
    runtime: tokio::runtime::Runtime,
    pre: ProxyPre<ServeState>,
    listeners: Vec<TcpListener>,
    mut options: ServeOptions,
) -> Result<(), ExecError> {
    let _in_runtime = runtime.enter();
    let outbound = Outbound::new(
        std::mem::take(&mut options.allow_outbound),
        options.broker.take(),
    )
    .map_err(ExecError::Runtime)?;
    let handler = Arc::new(Handler {
        pre,
        options,
        outbound,
        in_flight: std::sync::atomic::AtomicUsize::new(0),
        live: Arc::new(tokio::sync::Mutex::new(None)),
    });
    runtime.block_on(async move {
        let mut accepting = Vec::new();
        for listener in listeners {
            listener.set_nonblocking(true).map_err(ExecError::Runtime)?;
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(ExecError::Runtime)?;
            accepting.push(tokio::spawn(accept_loop(listener, handler.clone())));
        }
        while !(handler.options.stop_requested)() {
            tokio::time::sleep(STOP_POLL).await;
        }
        // Closing the listeners refuses new connections; requests already in flight finish
        // (`wrun stop -t` bounds how long they may take).
        for task in accepting {
            task.abort();
            let _ = task.await;
        }
        while handler.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            tokio::time::sleep(STOP_POLL).await;
        }
        Ok(())
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, handler: Arc<Handler>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

impl Handler {
    fn new_store(&self) -> wasmtime::Result<Store<ServeState>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&self.options.args)
            .envs(&self.options.env)
            .inherit_stdout()
            .inherit_stderr();
        for dir in &self.options.preopens {
            let perms = if dir.read_only {
                wasmtime_wasi::FsPerms::ReadOnly
            } else {
                wasmtime_wasi::FsPerms::ReadWrite
            };
            wasi.preopened_dir(&dir.path, &dir.guest, perms)?;
        }
        let state = ServeState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            budget: MemoryBudget::new(self.options.memory_limit),
            hooks: self.outbound.clone(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.budget);
        store.set_epoch_deadline(self.ticks_per_request());
        store.epoch_deadline_trap();
        Ok(store)
    }

    /// Epoch ticks one request may run: the epoch only advances while serving with a
    /// `--request-timeout` (or on a stop request).
    fn ticks_per_request(&self) -> u64 {
        self.options.request_timeout.map_or(1 << 40, |t| {
            (t.as_millis() as u64)
                .div_ceil(TICK.as_millis() as u64)
                .max(1)
        })
    }

    /// One request through the live instance (a fresh one if the last trapped). The guest
    /// runs on a task of its own: it streams the body after handing over the response head,
    /// and finishes (or traps) even if the client goes away mid-request.
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let in_flight = InFlight::new(self.clone());
        let mut live = self.live.clone().lock_owned().await;
        if live.is_none() {
            match self.instantiate().await {
                Ok(instance) => *live = Some(instance),
                Err(response) => return response,
            }
        }
        let (store, _) = live.as_mut().expect("instantiated above");
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok((req, out))
        })();
        let Ok((req, out)) = prepared else {
            return plain(400, "bad request\n");
        };
        // Each request gets the whole budget of epoch ticks again.
        store.set_epoch_deadline(self.ticks_per_request());
        let call = tokio::spawn(async move {
            let _in_flight = in_flight;
            let (store, proxy) = live.as_mut().expect("instantiated above");
            let called = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await;
            let e = called.err()?;
            // Dropping the instance drops the response sender it may still hold.
            *live = None;
            crate::err_line!("wrun: request failed: {e:#}");
            Some(e.downcast_ref::<Trap>() == Some(&Trap::Interrupt))
        });
        match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => plain(500, &format!("the handler failed: {code:?}\n")),
            Err(_) => match call.await {
                Ok(Some(true)) => plain(503, "the request timed out\n"),
                Ok(Some(false)) | Err(_) => plain(500, "the handler trapped\n"),
                Ok(None) => plain(500, "the handler sent no response\n"),
            },
        }
    }

    async fn instantiate(
        &self,
    ) -> Result<(Store<ServeState>, Proxy), hyper::Response<HyperOutgoingBody>> {
        let mut store = self.new_store().map_err(|e| {
            crate::err_line!("wrun: failed to prepare the handler's WASI context: {e:#}");
            plain(500, "the handler could not be instantiated\n")
        })?;
        match self.pre.instantiate_async(&mut store).await {
            Ok(proxy) => Ok((store, proxy)),
            Err(e) => {
                crate::err_line!("wrun: failed to instantiate the handler: {e:#}");
                Err(plain(500, "the handler could not be instantiated\n"))
            }
        }
    }
}

/// Counts a request from its arrival until its guest call has ended.
struct InFlight(Arc<Handler>);

impl InFlight {
    fn new(handler: Arc<Handler>) -> InFlight {
        handler
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(handler)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How often a serving sandbox looks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How often the engine's epoch advances while serving (the unit of `--request-timeout`).
pub const TICK: Duration = Duration::from_millis(10);

fn plain(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = http_body_util::Full::new(bytes::Bytes::from(text.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body)
        .expect("a valid response")
}
