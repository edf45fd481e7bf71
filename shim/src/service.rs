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
