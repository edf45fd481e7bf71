//! The validated description of one run: the sandbox it gets and the payload it runs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod native;
pub mod oci;
mod parse;
mod validate;

pub use parse::*;

/// Everything a sandboxed run needs, checked before any system state is touched: the
/// sandbox around it, and what runs inside.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub sandbox: SandboxSpec,
    pub payload: Payload,
}

/// Reads a container record's spec: this form, or the flat one records had before the
/// payload was its own type. Only records need it: a pool claim (on the start path) is read
/// directly, without the buffering an untagged enum costs.
pub fn read_stored<'de, D: serde::Deserializer<'de>>(from: D) -> Result<RunSpec, D::Error> {
    StoredSpec::deserialize(from).map(RunSpec::from)
}

/// A spec as a container record stores it (read, never written in the flat form).
// Only ever a moment on the way to a `RunSpec`: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredSpec {
    Current {
        sandbox: SandboxSpec,
        payload: Payload,
    },
    Flat(FlatSpec),
}

/// The flat spec: sandbox and payload fields side by side, a native run's Wasm fields blank.
#[derive(Deserialize)]
struct FlatSpec {
    module: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    limits: Limits,
    cgroup_parent: String,
    #[serde(default)]
    module_digest: Option<String>,
    #[serde(default)]
    native: Option<NativeSpec>,
    #[serde(default)]
    engine: crate::config::EngineSettings,
    #[serde(default)]
    cgroup_name: Option<String>,
    #[serde(default)]
    join: JoinedNamespaces,
    #[serde(default)]
    ports: Vec<PublishedPort>,
    #[serde(default)]
    request_timeout: Option<Duration>,
    #[serde(default)]
    allow_outbound: Vec<OutboundRule>,
}

impl From<StoredSpec> for RunSpec {
    fn from(stored: StoredSpec) -> RunSpec {
        let flat = match stored {
            StoredSpec::Current { sandbox, payload } => return RunSpec { sandbox, payload },
            StoredSpec::Flat(flat) => flat,
        };
        let sandbox = SandboxSpec {
            limits: flat.limits,
            cgroup_parent: flat.cgroup_parent,
            cgroup_name: flat.cgroup_name,
            join: flat.join,
            engine: flat.engine,
            own_namespaces: false,
        };
        let payload = match flat.native {
            Some(native) => Payload::Native(Box::new(native)),
            None => Payload::Wasm(WasmPayload {
                module: flat.module,
                args: flat.args,
                env: flat.env,
                preopens: flat.preopens,
                module_digest: flat.module_digest,
                ports: flat.ports,
                request_timeout: flat.request_timeout,
                allow_outbound: flat.allow_outbound,
                resolver: Box::default(),
            }),
        };
        RunSpec { sandbox, payload }
    }
}

/// The kernel sandbox and engine a run gets, whatever it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub limits: Limits,
    /// Cgroup path (relative to each hierarchy's root) under which the run's cgroup is made.
    pub cgroup_parent: String,
    /// The cgroup's own name under `cgroup_parent`; the run ID when `None`.
    #[serde(default)]
    pub cgroup_name: Option<String>,
    /// Existing namespaces a Wasm run joins instead of making its own (a pod's, from a
    /// bundle). A native run takes them from its OCI spec.
    #[serde(default)]
    pub join: JoinedNamespaces,
    /// How the wasmtime engine is built (the configuration file's `[engine]`).
    #[serde(default)]
    pub engine: crate::config::EngineSettings,
    /// An OCI bundle's run: every namespace its spec does not give by path is a new one of
    /// its own, as the runtime spec says and as Docker, Podman and containerd's CNI expect
    /// when they configure it after `create`; never the shared ones (`shared_namespaces`).
    #[serde(default)]
    pub own_namespaces: bool,
}

impl SandboxSpec {
    /// A sandbox with `limits` under `cgroup_parent`: its cgroup named after the run, its
    /// own namespaces, the default engine.
    pub fn new(limits: Limits, cgroup_parent: impl Into<String>) -> SandboxSpec {
        SandboxSpec {
            limits,
            cgroup_parent: cgroup_parent.into(),
            cgroup_name: None,
            join: JoinedNamespaces::default(),
            engine: Default::default(),
            own_namespaces: false,
        }
    }
}

/// What runs in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Payload {
    Wasm(WasmPayload),
    /// Boxed: an OCI runtime spec is large.
    Native(Box<NativeSpec>),
}

/// A WebAssembly module or component and what its guest is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WasmPayload {
    /// Path of the module (binary wasm, a component, or WAT text) as given by the user.
    pub module: PathBuf,
    /// The guest's argv, `argv[0]` included.
    pub args: Vec<String>,
    /// The guest's environment, in order; nothing of the host's is passed unless asked for.
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub preopens: Vec<Preopen>,
    /// The sha256 the module must have (an image's module); the run refuses it otherwise.
    #[serde(default)]
    pub module_digest: Option<String>,
    /// Host addresses to serve HTTP on (`-p`); the guest must be an HTTP handler.
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// How long one HTTP request may run (`--request-timeout`).
    #[serde(default)]
    pub request_timeout: Option<Duration>,
    /// Hosts the guest may send HTTP requests to (`--allow-outbound`); none by default.
    #[serde(default)]
    pub allow_outbound: Vec<OutboundRule>,
    /// In a pod: what the pod gave the container to look names up with (boxed: rarely set,
    /// and the payload is moved about).
    #[serde(default)]
    pub resolver: Box<PodResolver>,
}

/// The files a pod mounts at a container's `/etc/resolv.conf` and `/etc/hosts` (CRI's), read
/// before the sandbox exists: a Wasm guest's name lookups in the pod use them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodResolver {
    pub resolv_conf: Option<String>,
    pub hosts: Option<String>,
}

/// `--allow-outbound HOST[:PORT]`: a host (a name or an IP address) the guest may send HTTP
/// requests to, on one port or, without one, on the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRule {
    /// Lower case; an IPv6 address without brackets.
    pub host: String,
    pub port: Option<u16>,
}

/// `-p [HOST_IP:]HOST_PORT:GUEST_PORT`: wrun listens on the host address; the guest port is
/// what the guest is told it serves (requests carry it in their authority).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub host: std::net::SocketAddr,
    pub guest_port: u16,
}

/// Paths of existing namespaces (`/proc/<pid>/ns/net`, a pinned netns file) to join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl RunSpec {
    /// The engine settings this run is compiled and run with: `settings`, plus interruption
    /// checks when the run must be able to interrupt a guest that keeps running (`--timeout`,
    /// or requests with deadlines when it serves HTTP); a server waits for optimized code.
    pub fn with_engine(mut self, settings: &crate::config::EngineSettings) -> RunSpec {
        let serves = self.wasm().is_some_and(|wasm| !wasm.ports.is_empty());
        let interrupts = self.sandbox.limits.timeout.is_some() || serves;
        self.sandbox.engine = crate::config::EngineSettings {
            epoch_interruption: settings.epoch_interruption || interrupts,
            ..settings.clone()
        };
        if serves {
            self.sandbox.engine.first_run = crate::config::FirstRun::Optimized;
        }
        self
    }

    /// The run waits for optimized code even when its module is cold: it is a service, which
    /// may run for long on whatever code it starts with (a detached container, an OCI bundle).
    pub fn for_service(mut self) -> RunSpec {
        self.sandbox.engine.first_run = crate::config::FirstRun::Optimized;
        self
    }

    /// The Wasm payload, if that is what runs.
    pub fn wasm(&self) -> Option<&WasmPayload> {
        match &self.payload {
            Payload::Wasm(wasm) => Some(wasm),
            Payload::Native(_) => None,
        }
    }

    /// The native payload, if that is what runs.
    pub fn native(&self) -> Option<&NativeSpec> {
        match &self.payload {
            Payload::Native(native) => Some(native),
            Payload::Wasm(_) => None,
        }
    }

    /// The workload's argv: the guest's, or the native process's.
    pub fn argv(&self) -> &[String] {
        match &self.payload {
            Payload::Wasm(wasm) => &wasm.args,
            Payload::Native(native) => native
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.args().as_deref())
                .unwrap_or_default(),
        }
    }

    /// Memory the kernel limit allows beyond `--memory`: the Wasm runtime's own needs. A
    /// native workload's limit is exactly what was asked for.
    pub fn memory_headroom(&self) -> u64 {
        match self.payload {
            Payload::Wasm(_) => RUNTIME_MEMORY_HEADROOM,
            Payload::Native(_) => 0,
        }
    }

    /// The run's cgroup, relative to each hierarchy's root.
    pub fn cgroup_path(&self, id: &str) -> String {
        let sandbox = &self.sandbox;
        let name = sandbox.cgroup_name.as_deref().unwrap_or(id);
        if sandbox.cgroup_parent.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", sandbox.cgroup_parent)
        }
    }

    /// The cgroup memory limit that backs `--memory`.
    pub fn cgroup_memory(&self) -> Option<u64> {
        self.sandbox
            .limits
            .memory
            .map(|m| m.saturating_add(self.memory_headroom()))
    }

    /// The native image's writable layer, which the run makes and removes (or `wrun rm`).
    pub fn writable_layer(&self) -> Option<&std::path::Path> {
        match &self.native()?.rootfs {
            RootfsSource::Image { work, .. } => Some(work),
            RootfsSource::Directory(_) => None,
        }
    }
}

/// A native (Linux binary) workload: an OCI runtime spec, resolved, and its root file system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NativeSpec {
    /// The runtime spec: process, mounts, namespaces, capabilities, seccomp, masked paths.
    /// `root.path` is ignored in favour of `rootfs`.
    pub spec: oci_spec::runtime::Spec,
    pub rootfs: RootfsSource,
    /// Run a minimal init as PID 1 that reaps adopted zombies (`--init`).
    #[serde(default)]
    pub init: bool,
    /// The bundle directory, against which relative bind-mount sources resolve.
    #[serde(default)]
    pub bundle: Option<PathBuf>,
}

/// Where a native workload's root file system comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RootfsSource {
    /// An image's unpacked layers, read-only, under a private writable layer made in
    /// `work` (which the run removes, or `wrun rm` for a container).
    Image { layers: PathBuf, work: PathBuf },
    /// A directory used as it is (`--rootfs`, a bundle).
    Directory(PathBuf),
}

/// A host directory made visible to the guest at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Resource limits of one run; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of linear memory and table space the guest may grow to (for a native workload:
    /// its cgroup's memory limit).
    pub memory: Option<u64>,
    /// CPU quota in microseconds per period.
    pub cpu_quota_us: Option<u64>,
    /// The CFS period; [`CPU_PERIOD_US`] when `None`.
    #[serde(default)]
    pub cpu_period_us: Option<u64>,
    /// Relative CPU weight (cgroup v1 `cpu.shares`).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    pub pids: Option<u64>,
    pub timeout: Option<Duration>,
}

/// The CFS period the `--cpus` quota is expressed against (Docker's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Memory the kernel limit allows beyond `--memory` for the runtime itself (engine, code,
/// stacks), so that the guest meets wasmtime's refusal before the kernel's OOM killer.
pub const RUNTIME_MEMORY_HEADROOM: u64 = 32 << 20;

impl Limits {
    /// The cgroup memory limit that backs `--memory`.
    pub fn cgroup_memory(&self) -> Option<u64> {
        self.memory
            .map(|m| m.saturating_add(RUNTIME_MEMORY_HEADROOM))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_services_wait_for_optimized_code_and_other_runs_as_configured() {
        use crate::config::{EngineSettings, FirstRun};
        let spec = |ports: Vec<PublishedPort>, timeout| RunSpec {
            sandbox: SandboxSpec::new(
                Limits {
                    timeout,
                    ..Limits::default()
                },
                "wrun",
            ),
            payload: Payload::Wasm(WasmPayload {
                module: "/m.wasm".into(),
                ports,
                ..WasmPayload::default()
            }),
        };
        let settings = EngineSettings::default();
        let first_run = |spec: RunSpec| spec.sandbox.engine.first_run;
        assert_eq!(
            first_run(spec(vec![], None).with_engine(&settings)),
            FirstRun::Baseline
        );
        let timed = spec(vec![], Some(std::time::Duration::from_secs(1))).with_engine(&settings);
        assert!(timed.sandbox.engine.epoch_interruption);
        assert_eq!(first_run(timed), FirstRun::Baseline);
        let port = PublishedPort {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port: 80,
        };
        assert_eq!(
            first_run(spec(vec![port], None).with_engine(&settings)),
            FirstRun::Optimized
        );
        assert_eq!(
            first_run(spec(vec![], None).with_engine(&settings).for_service()),
            FirstRun::Optimized
        );
        let waits = EngineSettings {
            first_run: FirstRun::Optimized,
            ..settings
        };
        assert_eq!(
            first_run(spec(vec![], None).with_engine(&waits)),
            FirstRun::Optimized
        );
    }

    #[test]
    fn specs_round_trip_and_flat_records_still_read() {
        let spec = RunSpec {
            sandbox: SandboxSpec::new(Limits::default(), "wrun"),
            payload: Payload::Wasm(WasmPayload {
                module: "/m.wasm".into(),
                args: vec!["m".into()],
                ..WasmPayload::default()
            }),
        };
        let text = serde_json::to_string(&spec).unwrap();
        let back: RunSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.wasm().unwrap().module, PathBuf::from("/m.wasm"));
        // As container records stored it before the payload was its own type.
        let flat = r#"{"module":"/old.wasm","args":["old","x"],"env":[["A","1"]],"preopens":[],
            "limits":{"memory":1048576,"cpu_quota_us":null,"pids":null,"timeout":null},
            "cgroup_parent":"wrun","module_digest":null,"native":null}"#;
        let stored = |text: &str| read_stored(&mut serde_json::Deserializer::from_str(text));
        assert_eq!(
            stored(&text).unwrap().wasm().unwrap().module,
            PathBuf::from("/m.wasm")
        );
        let old = stored(flat).unwrap();
        let wasm = old.wasm().expect("a wasm run");
        assert_eq!(wasm.module, PathBuf::from("/old.wasm"));
        assert_eq!(old.argv(), ["old", "x"]);
        assert_eq!(old.sandbox.limits.memory, Some(1 << 20));
        let flat_native = r#"{"module":"","args":["true"],"env":[],"preopens":[],"limits":{},
            "cgroup_parent":"wrun","native":{"spec":{"ociVersion":"1.0.2"},
            "rootfs":{"Directory":"/r"}}}"#;
        let native = stored(flat_native).unwrap();
        assert!(native.native().is_some());
    }
}
