//! The last step of every Wasm sandbox, standalone or pooled: lock down, run the guest (or
//! serve HTTP with it), turn how it ended into an exit code, and say so.

use super::child::ChildError;
use super::harden::{self, HardenError};
use super::signals::{self, StopReason};
use super::test_hooks;
use crate::exit;
use crate::idle_memory;
use crate::timeline;
use crate::wasm::exec::{self, GuestDir, Host, Outcome};
use crate::wasm::{self, Program};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// A guest made ready to run: everything but the lock-down and the run itself.
pub(crate) struct GuestWork {
    pub engine: wasmtime::Engine,
    /// Whether `engine` has interruption checks, so that a stop signal or the timeout can
    /// interrupt the guest (without, either ends the process at once).
    pub checks: bool,
    pub program: Program,
    pub module: PathBuf,
    pub memory_limit: Option<u64>,
    pub timeout: Option<Duration>,
    pub run: GuestRun,
    pub lock: Lock,
    /// Whom to tell the code before the process is gone (a pooled run's caller).
    pub report: Option<Reporter>,
    /// Whether the allocator's free pages went back to the kernel before the work came (a
    /// pooled sandbox's, before it said it was ready); else that is done before the guest
    /// runs, so that a guest that idles does not hold them.
    pub heap_given_back: bool,
}

/// What the guest does.
// One per sandbox, moved a few times on the way to the run: not worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum GuestRun {
    /// Runs its command to its end.
    Command {
        host: Host,
        preopens: Vec<GuestDir>,
        filter: seccompiler::BpfProgram,
    },
    /// Serves HTTP requests on the listeners (`-p`) until told to stop.
    Serve {
        server: Server,
        listeners: Vec<std::net::TcpListener>,
        options: wasm::serve::ServeOptions,
    },
}

/// What is left of the lock-down when the guest is about to run.
pub(crate) enum Lock {
    /// Everything: resource limits, capabilities, `no_new_privs`, the filter.
    Full,
    /// Only the filter: the rest was done before the sandbox waited for its claim.
    FilterOnly,
    /// The capability sets and the narrowing filter: the rest was done before the sandbox
    /// waited for its go-ahead (`harden::lock_for_set_up`).
    AfterSetUp,
}

impl Lock {
    fn apply(&self, filter: &seccompiler::BpfProgram) -> Result<(), HardenError> {
        match self {
            Lock::Full => {
                harden::limit_resources()?;
                harden::drop_capabilities()?;
                harden::set_no_new_privs()?;
            }
            Lock::AfterSetUp => harden::drop_capability_sets()?,
            Lock::FilterOnly => {}
        }
        harden::install_seccomp(filter)
    }
}

/// Where a pooled run's code goes as soon as it is known: the caller's status pipe, then
/// the supervisor.
pub(crate) struct Reporter {
    pub status: Option<OwnedFd>,
    pub supervisor: OwnedFd,
}

impl Reporter {
    fn report(&self, code: i32) {
        // write(2), which the filter allows, where send(2) is refused: the caller first.
        if let Some(status) = &self.status {
            let _ = nix::unistd::write(status, &[code as u8]);
        }
        let _ = nix::unistd::write(&self.supervisor, &[code as u8]);
    }
}

/// Runs the guest to its end: its exit code.
pub(super) fn run(work: GuestWork) -> Result<i32, ChildError> {
    let GuestWork {
        engine,
        checks,
        program,
        module,
        memory_limit,
        timeout,
        run,
        lock,
        report,
        heap_given_back,
    } = work;
    let code = match run {
        GuestRun::Command {
            mut host,
            preopens,
            filter,
        } => {
            host.preopen(&preopens)?;
            lock.apply(&filter)?;
            timeline::mark("locked down");
            test_hooks::after_seccomp();
            if !heap_given_back {
                idle_memory::free_heap_pages();
            }
            signals::arm(checks.then_some(&engine), timeout);
            let outcome = exec::run(&engine, &program, &module, host, memory_limit)?;
            timeline::mark("guest returned");
            let guests_own = matches!(outcome, Outcome::Exited(_));
            let code = exit_code_of(outcome, timeout);
            if guests_own && signals::stop_reason().is_none() && report.is_none() {
                // A guest may exit 125-127 itself: `-v` tells it from wrun's own failure.
                // (Not in a pooled sandbox, whose logging is the daemon's.)
                tracing::debug!("exit {code}: the guest's own exit code");
            }
            code
        }
        GuestRun::Serve {
            server,
            listeners,
            options,
        } => server.serve(&engine, timeout, listeners, options, &lock, heap_given_back)?,
    };
    if let Some(report) = report {
        // The output is complete once flushed: the caller may have its answer before this
        // process and its namespaces are torn down.
        flush_output();
        let_go_of_stdio();
        report.report(code);
    }
    Ok(code)
}

/// An HTTP handler made ready to serve: what can be done before the cgroup is joined.
pub(crate) struct Server {
    pre: wasmtime_wasi_http::p2::bindings::ProxyPre<wasm::serve::ServeState>,
    runtime: tokio::runtime::Runtime,
    filter: seccompiler::BpfProgram,
}

impl Server {
    /// Checks that `program` (from `path`) is an HTTP handler and prepares it, to serve
    /// under `filter` (the HTTP server's, or a pooled sandbox's narrowing one).
    pub(super) fn prepare(
        engine: &wasmtime::Engine,
        program: &Program,
        path: &std::path::Path,
        filter: seccompiler::BpfProgram,
    ) -> Result<Server, ChildError> {
        let Program::Component(component) = program else {
            return Err(exec::ExecError::NotHttpHandler {
                path: path.to_path_buf(),
            }
            .into());
        };
        Ok(Server {
            pre: wasm::serve::prepare(engine, component, path)?,
            runtime: wasm::serve::runtime()?,
            filter,
        })
    }

    /// Locks the process down as `lock` says and serves on `listeners` until told to stop.
    fn serve(
        self,
        engine: &wasmtime::Engine,
        timeout: Option<Duration>,
        listeners: Vec<std::net::TcpListener>,
        options: wasm::serve::ServeOptions,
        lock: &Lock,
        heap_given_back: bool,
    ) -> Result<i32, ChildError> {
        let ticker_engine = engine.clone();
        let ticks = options.request_timeout.is_some();
        lock.apply(&self.filter)?;
        crate::allocator::allocate_for_speed();
        if !heap_given_back {
            idle_memory::free_heap_pages();
        }
        signals::arm_server(engine, timeout);
        if ticks {
            std::thread::spawn(move || loop {
                std::thread::sleep(wasm::serve::TICK);
                ticker_engine.increment_epoch();
            });
        }
        wasm::serve::serve(self.runtime, self.pre, listeners, options)?;
        Ok(0)
    }
}

/// The exit code of a guest that ended with `outcome`, reporting a trap or timeout on stderr.
fn exit_code_of(outcome: Outcome, timeout: Option<Duration>) -> i32 {
    match (outcome, signals::stop_reason()) {
        // The timeout wins over whatever the guest did once it passed: a host call it was
        // blocked in (opening a FIFO, say) fails, and the guest may well exit 0 on that.
        (_, Some(StopReason::Timeout)) | (Outcome::Interrupted, None) => {
            let after = timeout
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_default();
            crate::err_line!("wrun: timeout: the workload was interrupted after {after}");
            exit::TIMEOUT
        }
        (Outcome::Exited(code), _) => code,
        (_, Some(StopReason::Signal(signo))) => exit::signaled(signo),
        (Outcome::Trapped(error), None) => {
            report_trap(&error);
            exit::TRAP
        }
    }
}

fn report_trap(error: &wasmtime::Error) {
    let mut report = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wrun: {trap}"),
        None => format!("wrun: the guest failed: {:#}", error.root_cause()),
    };
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        report.push('\n');
        report.push_str(&backtrace.to_string());
    }
    crate::err_line!("{}", report.trim_end());
}

/// Flushes what wrun buffered for the workload's streams.
pub(super) fn flush_output() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// Closes the caller's streams once the output is complete, before the code is reported:
/// whoever reads the output through a pipe (a shell's `$(wrun run …)`, `wrun-bench`) then has
/// its end of file when the caller exits, not only once this process and its namespaces are
/// torn down (≈0.3 ms later). Nothing is written to them afterwards; the code goes to the
/// status pipe and the supervisor.
fn let_go_of_stdio() {
    for fd in 0..=2 {
        let _ = nix::unistd::close(fd);
    }
}
