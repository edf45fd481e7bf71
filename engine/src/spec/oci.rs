//! OCI runtime bundles: a bundle's `config.json` checked and turned into a run (native, or
//! Wasm when its entrypoint is a module).

use super::validate::{unsupported, Caller};
use crate::sandbox::native::profile;
use crate::spec::{
    JoinedNamespaces, Limits, NativeSpec, Payload, PodResolver, Preopen, RootfsSource, RunSpec,
    SandboxSpec, WasmPayload,
};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("failed to read the bundle's config.json in `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("unsupported in config.json: {0}")]
    Unsupported(String),
    #[error("invalid config.json: {0}")]
    Invalid(String),
    #[error(transparent)]
    Seccomp(#[from] profile::SeccompSpecError),
    #[error("failed to read `{path}`, mounted at the container's `{destination}`")]
    MountedFile {
        path: PathBuf,
        destination: String,
        #[source]
        source: std::io::Error,
    },
}

/// Annotation a bundle may carry to say its entrypoint is a Wasm module (value `wasm`).
pub const WASM_ANNOTATION: &str = "io.wrun.runtime";

/// crun's annotation for images built for Wasm runtimes: `compat` (the entrypoint is a Wasm
/// module) or `compat-smart` (it may be: run it as Wasm when it is one).
pub const CRUN_WASM_ANNOTATION: &str = "module.wasm.image/variant";

/// Reads the bundle at `dir` into a run: Wasm if its entrypoint is a `.wasm` file (or the
/// annotation says so), native otherwise. Security-relevant fields wrun cannot honour are
/// refused, never ignored.
pub fn load(dir: &Path, cgroup_parent: &str) -> Result<RunSpec, BundleError> {
    load_for(dir, cgroup_parent, Caller::Run)
}

/// [`load`] for the OCI runtime verbs, which run the bundle's hooks in the runtime's
/// namespaces.
pub fn load_with_hooks(dir: &Path, cgroup_parent: &str) -> Result<RunSpec, BundleError> {
    load_for(dir, cgroup_parent, Caller::Runtime)
}

fn load_for(dir: &Path, cgroup_parent: &str, caller: Caller) -> Result<RunSpec, BundleError> {
    let path = dir.join("config.json");
    let spec = Spec::load(&path).map_err(|source| BundleError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| BundleError::Invalid("no root".into()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    super::validate::validate(&spec, caller)?;
    let (cgroup_parent, cgroup_name) = match spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        Some(path) => cgroup_placement(&path.to_string_lossy())?,
        None => (cgroup_parent.to_string(), None),
    };
    let mut run = runnable(spec, dir, &rootfs, &cgroup_parent)?;
    run.sandbox.cgroup_name = cgroup_name;
    Ok(run)
}

/// Where `linux.cgroupsPath` puts the run's cgroup: `(parent, name)`. Both forms runc takes:
/// a path (`/kubepods/burstable/pod1/ID`) and systemd's `slice:prefix:name`, whose slice is
/// expanded to its path the way systemd does (`a-b.slice` is `a.slice/a-b.slice`).
pub fn cgroup_placement(path: &str) -> Result<(String, Option<String>), BundleError> {
    let invalid = || BundleError::Invalid(format!("linux.cgroupsPath `{path}`"));
    let relative = match path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] if !path.starts_with('/') => {
            let leaf = if name.ends_with(".slice") {
                name.to_string()
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            format!(
                "{}/{leaf}",
                expand_slice(if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                })
                .ok_or_else(invalid)?
            )
        }
        [_] => path.to_string(),
        _ => return Err(invalid()),
    };
    let checked = crate::spec::parse_cgroup_parent(&relative).map_err(|_| invalid())?;
    match checked.rsplit_once('/') {
        Some((parent, name)) => Ok((parent.to_string(), Some(name.to_string()))),
        None => Ok((String::new(), Some(checked))),
    }
}

/// `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> Option<String> {
    let stem = slice.strip_suffix(".slice")?;
    if stem == "-" {
        return Some(String::new());
    }
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        return None;
    }
    let parts: Vec<&str> = stem.split('-').collect();
    let levels: Vec<String> = (1..=parts.len())
        .map(|n| format!("{}.slice", parts[..n].join("-")))
        .collect();
    Some(levels.join("/"))
}

/// The run a checked spec describes, Wasm or native.
fn runnable(
    spec: Spec,
    dir: &Path,
    rootfs: &Path,
    cgroup_parent: &str,
) -> Result<RunSpec, BundleError> {
    let rootfs = rootfs.to_path_buf();
    let limits = limits_of(&spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| BundleError::Invalid("no process".into()))?;
    let args = process.args().clone().unwrap_or_default();
    if entrypoint_is_wasm(&spec, &rootfs, args.first()) {
        return wasm_run(&spec, &rootfs, dir, args, limits, cgroup_parent);
    }
    if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        profile::from_spec(seccomp)?;
    }
    Ok(RunSpec {
        sandbox: SandboxSpec::new(limits, cgroup_parent),
        payload: Payload::Native(Box::new(NativeSpec {
            spec,
            rootfs: RootfsSource::Directory(rootfs),
            init: false,
            bundle: Some(dir.to_path_buf()),
        })),
    })
}

/// Whether the bundle runs in wasmtime: annotated so (`io.wrun.runtime=wasm`, crun's
/// `module.wasm.image/variant=compat`), or its entrypoint inside the root is a Wasm module (a
/// `.wasm` name or the `\0asm` magic; crun's `compat-smart` asks exactly this).
fn entrypoint_is_wasm(spec: &Spec, rootfs: &Path, entry: Option<&String>) -> bool {
    let annotation = |key| spec.annotations().as_ref()?.get(key).map(String::as_str);
    if annotation(WASM_ANNOTATION) == Some("wasm")
        || annotation(CRUN_WASM_ANNOTATION) == Some("compat")
    {
        return true;
    }
    let Some(entry) = entry else {
        return false;
    };
    entry.ends_with(".wasm") || has_wasm_magic(rootfs, entry)
}

/// Whether `entry`, a path inside `rootfs`, starts with the Wasm magic (looked up inside the
/// root: a symbolic link cannot lead it out to the host's files).
fn has_wasm_magic(rootfs: &Path, entry: &str) -> bool {
    use std::io::Read;
    let Ok(root) = cap_std::fs::Dir::open_ambient_dir(rootfs, cap_std::ambient_authority()) else {
        return false;
    };
    let mut magic = [0u8; 4];
    root.open(entry.trim_start_matches('/'))
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\0asm")
}

/// A Wasm bundle: the module inside the root, the root preopened read-only at `/`, each bind
/// mount preopened at its destination as its options say.
fn wasm_run(
    spec: &Spec,
    rootfs: &Path,
    bundle: &Path,
    args: Vec<String>,
    limits: Limits,
    cgroup_parent: &str,
) -> Result<RunSpec, BundleError> {
    let entry = args
        .first()
        .ok_or_else(|| BundleError::Invalid("the process has no arguments".into()))?;
    let module = rootfs.join(entry.trim_start_matches('/'));
    let mut preopens = vec![Preopen {
        host: rootfs.to_path_buf(),
        guest: "/".into(),
        read_only: true,
    }];
    let join = joined_namespaces(spec);
    let mut resolver = PodResolver::default();
    for m in spec.mounts().iter().flatten() {
        let options = m.options().clone().unwrap_or_default();
        let is_bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            continue;
        }
        let Some(source) = m.source().clone() else {
            continue;
        };
        let source = if source.is_relative() {
            bundle.join(source)
        } else {
            source
        };
        if !source.is_dir() {
            if join.network.is_some() {
                read_resolver_file(&mut resolver, &source, m.destination())?;
            }
            continue;
        }
        preopens.push(Preopen {
            host: source,
            guest: m.destination().display().to_string(),
            read_only: options.iter().any(|o| o == "ro"),
        });
    }
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Ok(RunSpec {
        sandbox: SandboxSpec {
            join,
            own_namespaces: true,
            ..SandboxSpec::new(limits, cgroup_parent)
        },
        payload: Payload::Wasm(WasmPayload {
            module,
            args,
            env,
            preopens,
            resolver: Box::new(resolver),
            ..WasmPayload::default()
        }),
    })
}

/// The namespaces given by path (a pod's), which a Wasm run joins.
fn joined_namespaces(spec: &Spec) -> JoinedNamespaces {
    let joined = |kind| {
        spec.linux()
            .as_ref()?
            .namespaces()
            .as_ref()?
            .iter()
            .find(|n| n.typ() == kind)?
            .path()
            .clone()
    };
    JoinedNamespaces {
        network: joined(LinuxNamespaceType::Network),
        ipc: joined(LinuxNamespaceType::Ipc),
        uts: joined(LinuxNamespaceType::Uts),
    }
}

/// The largest resolv.conf or hosts file a pod may hand a Wasm container.
const RESOLVER_FILE_LIMIT: u64 = 1 << 20;

/// Keeps the text of a file mounted at `/etc/resolv.conf` or `/etc/hosts` (what CRI gives a
/// pod's containers): the guest's name lookups in the pod read them from memory, the
/// sandbox having no files of the host's.
fn read_resolver_file(
    resolver: &mut PodResolver,
    source: &Path,
    destination: &Path,
) -> Result<(), BundleError> {
    let slot = match destination.to_str() {
        Some("/etc/resolv.conf") => &mut resolver.resolv_conf,
        Some("/etc/hosts") => &mut resolver.hosts,
        _ => return Ok(()),
    };
    let read = || -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        let file = std::fs::File::open(source)?;
        file.take(RESOLVER_FILE_LIMIT).read_to_string(&mut text)?;
        Ok(text)
    };
    *slot = Some(read().map_err(|source_error| BundleError::MountedFile {
        path: source.to_path_buf(),
        destination: destination.display().to_string(),
        source: source_error,
    })?);
    Ok(())
}

/// The cgroup limits a spec asks for.
fn limits_of(spec: &Spec) -> Result<Limits, BundleError> {
    let mut limits = Limits::default();
    let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return Ok(limits);
    };
    if let Some(memory) = resources.memory() {
        if memory.reservation().is_some()
            || memory.swap().is_some() && memory.swap() != memory.limit()
        {
            tracing::debug!("memory reservation and swap limits are not applied separately");
        }
        limits.memory = memory.limit().filter(|&l| l > 0).map(|l| l as u64);
    }
    if let Some(cpu) = resources.cpu() {
        limits.cpu_quota_us = cpu.quota().filter(|&q| q > 0).map(|q| q as u64);
        // Zero is unset, as runc reads it (Docker sends `"shares": 0`).
        limits.cpu_period_us = cpu.period().filter(|&p| p > 0);
        limits.cpu_shares = cpu.shares().filter(|&s| s > 0);
        let given = |set: &Option<String>| set.as_ref().is_some_and(|s| !s.is_empty());
        if given(cpu.cpus())
            || given(cpu.mems())
            || cpu.realtime_runtime().is_some_and(|r| r != 0)
            || cpu.realtime_period().is_some_and(|p| p != 0)
        {
            return Err(unsupported(
                "linux.resources.cpu cpus, mems and realtime settings",
            ));
        }
    }
    if let Some(pids) = resources.pids() {
        limits.pids = (pids.limit() > 0).then_some(pids.limit() as u64);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &serde_json::Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        dir
    }

    fn base() -> serde_json::Value {
        serde_json::to_value(Spec::default()).unwrap()
    }

    #[test]
    fn cgroups_paths_in_both_of_runcs_forms() {
        let placed = |p: &str| cgroup_placement(p).unwrap();
        assert_eq!(
            placed("/kubepods/burstable/pod1/abc"),
            ("kubepods/burstable/pod1".into(), Some("abc".into()))
        );
        assert_eq!(
            placed("/default/web"),
            ("default".into(), Some("web".into()))
        );
        assert_eq!(placed("solo"), (String::new(), Some("solo".into())));
        assert_eq!(
            placed("kubepods-besteffort-pod1.slice:cri-containerd:abc"),
            (
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice".into(),
                Some("cri-containerd-abc.scope".into())
            )
        );
        assert_eq!(
            placed(":wrun:abc"),
            ("system.slice".into(), Some("wrun-abc.scope".into()))
        );
        for bad in [
            "/a/../b",
            "/",
            "a:b",
            "x.slice:p:n/../m",
            "bad-.slice:p:n",
            "a:b:c:d",
        ] {
            assert!(cgroup_placement(bad).is_err(), "{bad}");
        }
        let mut config = base();
        config["linux"]["cgroupsPath"] = serde_json::json!("/default/web");
        let dir = bundle(&config);
        let run = load(dir.path(), "wrun").unwrap();
        assert_eq!(run.cgroup_path("ignored"), "default/web");
    }

    #[test]
    fn a_default_spec_loads_as_native_with_its_limits() {
        let mut config = base();
        config["process"]["args"] = serde_json::json!(["/bin/true"]);
        config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 67108864});
        config["linux"]["resources"]["pids"] = serde_json::json!({"limit": 16});
        config["linux"]["resources"]["cpu"] =
            serde_json::json!({"quota": 50000, "period": 100000, "shares": 512});
        let dir = bundle(&config);
        let run = load(dir.path(), "wrun").unwrap();
        assert!(run.native().is_some());
        assert_eq!(run.sandbox.limits.memory, Some(64 << 20));
        assert_eq!(run.sandbox.limits.pids, Some(16));
        assert_eq!(run.sandbox.limits.cpu_quota_us, Some(50_000));
        assert_eq!(run.sandbox.limits.cpu_shares, Some(512));
    }

    #[test]
    fn a_wasm_entrypoint_runs_in_wasmtime_with_the_root_read_only() {
        let mut config = base();
        config["process"]["args"] = serde_json::json!(["/app.wasm", "x"]);
        config["process"]["env"] = serde_json::json!(["A=1"]);
        let dir = bundle(&config);
        let run = load(dir.path(), "wrun").unwrap();
        let run = run.wasm().expect("a wasm run");
        assert_eq!(run.module, dir.path().join("rootfs/app.wasm"));
        assert_eq!(run.preopens[0].guest, "/");
        assert!(run.preopens[0].read_only);
        assert_eq!(run.env, vec![("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn a_wasm_container_in_a_pod_keeps_the_pods_resolv_conf_and_hosts() {
        let mut config = base();
        config["process"]["args"] = serde_json::json!(["/app.wasm"]);
        let dir = bundle(&config);
        let files = dir.path().join("pod");
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join("resolv.conf"), "nameserver 10.96.0.10\n").unwrap();
        std::fs::write(files.join("hosts"), "10.0.0.9 web\n").unwrap();
        let mount = |name: &str| {
            serde_json::json!({"destination": format!("/etc/{name}"), "type": "bind",
                "source": files.join(name), "options": ["rbind", "ro"]})
        };
        config["mounts"] =
            serde_json::json!([mount("resolv.conf"), mount("hosts"), mount("hostname")]);
        let in_pod = |config: &mut serde_json::Value| {
            let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
            let network = namespaces.iter_mut().find(|n| n["type"] == "network");
            network.unwrap()["path"] = serde_json::json!("/proc/1/ns/net");
        };
        // Outside a pod the files are not read: its sandbox has no network to ask.
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let run = load(dir.path(), "wrun").unwrap();
        assert_eq!(*run.wasm().unwrap().resolver, PodResolver::default());
        in_pod(&mut config);
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let run = load(dir.path(), "wrun").unwrap();
        let resolver = &run.wasm().unwrap().resolver;
        assert_eq!(
            resolver.resolv_conf.as_deref(),
            Some("nameserver 10.96.0.10\n")
        );
        assert_eq!(resolver.hosts.as_deref(), Some("10.0.0.9 web\n"));
        // A file the bundle names but that is not there fails the load, naming it.
        std::fs::remove_file(files.join("hosts")).unwrap();
        let error = load(dir.path(), "wrun").unwrap_err();
        assert!(matches!(error, BundleError::MountedFile { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "failed to read `{}`, mounted at the container's `/etc/hosts`",
                files.join("hosts").display()
            )
        );
    }

    #[test]
    fn security_fields_wrun_cannot_honour_are_refused() {
        let cases: Vec<(&str, serde_json::Value)> = vec![(
            "hooks",
            serde_json::json!({"prestart": [{"path": "/bin/true"}]}),
        )];
        for (field, value) in cases {
            let mut config = base();
            config[field] = value;
            let dir = bundle(&config);
            assert!(
                matches!(load(dir.path(), "wrun"), Err(BundleError::Unsupported(_))),
                "{field}"
            );
        }
        let mut config = base();
        config["process"]["apparmorProfile"] = serde_json::json!("docker-default");
        assert!(matches!(
            load(bundle(&config).path(), "wrun"),
            Err(BundleError::Unsupported(_))
        ));
        let mut config = base();
        config["process"]["terminal"] = serde_json::json!(true);
        assert!(matches!(
            load(bundle(&config).path(), "wrun"),
            Err(BundleError::Unsupported(_))
        ));
        let mut config = base();
        config["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        assert!(matches!(
            load(bundle(&config).path(), "wrun"),
            Err(BundleError::Unsupported(_))
        ));
        let mut config = base();
        config["linux"]["resources"]["devices"] =
            serde_json::json!([{"allow": true, "access": "rwm"}]);
        assert!(matches!(
            load(bundle(&config).path(), "wrun"),
            Err(BundleError::Unsupported(_))
        ));
        let mut config = base();
        let namespaces: Vec<serde_json::Value> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] != "pid")
            .cloned()
            .collect();
        config["linux"]["namespaces"] = serde_json::json!(namespaces);
        assert!(matches!(
            load(bundle(&config).path(), "wrun"),
            Err(BundleError::Unsupported(_))
        ));
    }

    #[test]
    fn only_namespaced_sysctls_of_the_containers_own_namespaces_are_taken() {
        let with = |key: &str, host_network: bool| {
            let mut config = base();
            config["linux"]["sysctl"] = serde_json::json!({ key: "1" });
            if host_network {
                let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
                namespaces.retain(|n| n["type"] != "network");
            }
            load(bundle(&config).path(), "wrun")
        };
        for key in ["net.ipv4.ip_forward", "kernel.shmmax", "fs.mqueue.msg_max"] {
            assert!(with(key, false).is_ok(), "{key}");
        }
        for key in ["vm.swappiness", "kernel.pid_max"] {
            assert!(
                matches!(with(key, false), Err(BundleError::Unsupported(_))),
                "{key}"
            );
        }
        assert!(matches!(
            with("net.ipv4.ip_forward", true),
            Err(BundleError::Unsupported(_))
        ));
        for key in ["net/../../kernel/x", "net..x", "net.", "net"] {
            assert!(
                matches!(with(key, false), Err(BundleError::Invalid(_))),
                "{key}"
            );
        }
    }

    #[test]
    fn rlimits_the_workload_could_not_get_are_refused_by_name() {
        let with = |rlimit: serde_json::Value| {
            let mut config = base();
            config["process"]["rlimits"] = serde_json::json!([rlimit]);
            load(bundle(&config).path(), "wrun")
        };
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(
            with(serde_json::json!({"type": "RLIMIT_NOFILE", "soft": 64, "hard": hard})).is_ok()
        );
        let inverted = with(serde_json::json!({"type": "RLIMIT_NOFILE", "soft": 65, "hard": 64}));
        assert!(matches!(inverted, Err(BundleError::Invalid(m)) if m.contains("RLIMIT_NOFILE")));
        let may_raise = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap();
        if hard < u64::MAX && !may_raise {
            let above = serde_json::json!({"type": "RLIMIT_NOFILE", "soft": 64, "hard": hard + 1});
            let refused = with(above);
            assert!(
                matches!(&refused, Err(BundleError::Invalid(m)) if m.contains("RLIMIT_NOFILE") && m.contains("CAP_SYS_RESOURCE")),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn wasm_is_told_by_annotation_name_or_magic_and_the_rest_runs_natively() {
        let kind = |entry: &str, annotation: Option<(&str, &str)>, content: &[u8]| {
            let mut config = base();
            config["process"]["args"] = serde_json::json!([entry]);
            if let Some((key, value)) = annotation {
                config["annotations"] = serde_json::json!({ key: value });
            }
            let dir = bundle(&config);
            let inside = dir
                .path()
                .join("rootfs")
                .join(entry.trim_start_matches('/'));
            std::fs::write(inside, content).unwrap();
            let run = load(dir.path(), "wrun").unwrap();
            if run.wasm().is_some() {
                "wasm"
            } else {
                "native"
            }
        };
        let (wasm, script) = (b"\0asm\x01\0\0\0".as_slice(), b"#!/bin/sh\n".as_slice());
        let compat = Some((CRUN_WASM_ANNOTATION, "compat"));
        let smart = Some((CRUN_WASM_ANNOTATION, "compat-smart"));
        let cases = [
            ("/app", None, wasm, "wasm"),
            ("/app", None, script, "native"),
            ("/app.wasm", None, script, "wasm"),
            ("/app", compat, script, "wasm"),
            ("/app", smart, wasm, "wasm"),
            ("/app", smart, script, "native"),
            ("/app", Some((WASM_ANNOTATION, "wasm")), script, "wasm"),
        ];
        for (entry, annotation, content, expected) in cases {
            let got = kind(entry, annotation, content);
            assert_eq!(got, expected, "{entry} {annotation:?}");
        }
        // A link out of the root is not followed to the host's file, Wasm or not.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), wasm).unwrap();
        let mut config = base();
        config["process"]["args"] = serde_json::json!(["/app"]);
        let dir = bundle(&config);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("rootfs/app")).unwrap();
        assert!(load(dir.path(), "wrun").unwrap().native().is_some());
    }
}
