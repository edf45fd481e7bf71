//! The shim process: `start` (spawn or reuse the pod's daemon), `delete` (clean up after a
//! daemon that is gone), and the daemon's task service.

use crate::process::Bundle;
use crate::task::Tasks;
use containerd_shim as shim;
use shim::publisher::RemotePublisher;
use shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use std::path::PathBuf;
use std::sync::Arc;

/// Annotations that put containers in one shim daemon: a pod's, as runc.v2 groups them.
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

pub struct Service {
    namespace: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

/// Blocks SIGCHLD and SIGPIPE for what is left of a `start`: it only prints the address.
/// The crate's signal-hook handlers outlive the socket they write to, which `start` closes
/// before it exits; a daemon that found the pod's socket already served exits at about
/// that moment, and its SIGCHLD then made the handler's write fail with EPIPE, whose
/// SIGPIPE ran the same handler again, forever (seen once in CI: `start` spinning at 100%
/// CPU, containerd waiting on it). Blocked, the signals stay pending until the process ends.
/// After the spawn: the daemon must not inherit the mask.
fn hold_signals_until_exit() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut held = SigSet::empty();
    held.add(Signal::SIGCHLD);
    held.add(Signal::SIGPIPE);
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), None) {
        log::debug!("failed to block SIGCHLD and SIGPIPE for the rest of start: {e}");
    }
}

impl shim::Shim for Service {
    type T = Tasks;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            namespace: args.namespace.clone(),
            bundle: PathBuf::from(&args.bundle),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// Runs with the bundle as working directory; prints the daemon's address.
    fn start_shim(&mut self, opts: StartOpts) -> shim::Result<String> {
        let grouping = shim::util::read_spec_from_file(".")
            .ok()
            .and_then(|spec| {
                let annotations = spec.annotations().clone()?;
                GROUP_LABELS
                    .iter()
                    .find_map(|label| annotations.get(*label).cloned())
            })
            .unwrap_or_else(|| opts.id.clone());
        // Binds the pod's socket, or finds that a live daemon already serves it.
        let (_pid, address) = shim::spawn(opts, &grouping, Vec::new())?;
        hold_signals_until_exit();
        shim::util::write_address(&address)?;
        Ok(address)
    }

    /// containerd calls this after the daemon has gone (also after a normal shutdown): anything
    /// the daemon left of this task is ended and unmounted here.
    fn delete_shim(&mut self) -> shim::Result<DeleteResponse> {
        let bundle = if self.bundle.as_os_str().is_empty() {
            std::env::current_dir().map_err(|e| shim::Error::Other(format!("no bundle: {e}")))?
        } else {
            self.bundle.clone()
        };
        Bundle::new(bundle).clean_up_after_daemon();
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(shim::util::timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Tasks {
        Tasks::new(self.namespace.clone(), self.exit.clone(), publisher)
    }
}
