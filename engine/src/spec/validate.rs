//! What wrun refuses in a bundle rather than ignore: security-relevant fields it cannot
//! honour, sysctls that would change the host, rlimits the workload could never get, device
//! rules beyond the standard devices.

use super::oci::BundleError;
use crate::sandbox::native::process::rlimit_of;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxNamespace, LinuxNamespaceType, Spec};

fn check_hooks(spec: &Spec, support: Caller) -> Result<(), BundleError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    let given =
        |list: &Option<Vec<oci_spec::runtime::Hook>>| list.as_ref().is_some_and(|l| !l.is_empty());
    match support {
        Caller::Run
            if given(hooks.prestart())
                || given(hooks.create_runtime())
                || given(hooks.poststart())
                || given(hooks.poststop())
                || given(hooks.create_container())
                || given(hooks.start_container()) =>
        {
            Err(unsupported(
                "hooks (run the bundle with `wrun create` and `wrun start`)",
            ))
        }
        _ if given(hooks.create_container()) || given(hooks.start_container()) => Err(unsupported(
            "hooks.createContainer and hooks.startContainer (hooks inside the container)",
        )),
        _ => Ok(()),
    }
}

/// Whether a section asks for nothing: absent, or with every field empty or zero, which
/// runc reads as unset (Docker sends `"blockIO": {"weight": 0}` when no option was given).
fn is_empty_section<T: serde::Serialize>(section: &Option<T>) -> bool {
    let Some(section) = section else {
        return true;
    };
    match serde_json::to_value(section) {
        Ok(serde_json::Value::Object(fields)) => fields.values().all(|value| match value {
            serde_json::Value::Null => true,
            serde_json::Value::Array(items) => items.is_empty(),
            serde_json::Value::Object(map) => map.is_empty(),
            serde_json::Value::Number(number) => number.as_f64() == Some(0.0),
            serde_json::Value::Bool(set) => !set,
            _ => false,
        }),
        _ => false,
    }
}

pub(super) fn unsupported(what: impl Into<String>) -> BundleError {
    BundleError::Unsupported(what.into())
}

/// Who runs the bundle, and so what it may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `run --bundle` (the shim): no hooks, no terminal.
    Run,
    /// The OCI runtime verbs: the hooks run in the runtime's namespaces (prestart,
    /// createRuntime, poststart, poststop; those inside the container are refused), and a
    /// terminal given through `--console-socket`.
    Runtime,
}

/// Refuses what wrun would otherwise have to ignore.
pub(super) fn validate(spec: &Spec, caller: Caller) -> Result<(), BundleError> {
    check_hooks(spec, caller)?;
    if let Some(process) = spec.process() {
        check_rlimits(process)?;
        if process.terminal().unwrap_or(false) && caller == Caller::Run {
            return Err(unsupported(
                "process.terminal (a terminal needs `wrun create --console-socket`)",
            ));
        }
        if process
            .apparmor_profile()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            return Err(unsupported("process.apparmorProfile"));
        }
        if process
            .selinux_label()
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        {
            return Err(unsupported("process.selinuxLabel"));
        }
        if process.io_priority().is_some() || process.scheduler().is_some() {
            return Err(unsupported("process.ioPriority and process.scheduler"));
        }
    }
    let Some(linux) = spec.linux() else {
        return Err(BundleError::Invalid("no linux section".into()));
    };
    if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
    {
        return Err(unsupported(
            "linux.uidMappings/gidMappings (user namespaces)",
        ));
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported("linux.devices (extra device nodes)"));
    }
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(unsupported("linux.mountLabel"));
    }
    if linux.intel_rdt().is_some()
        || linux.personality().is_some()
        || linux.time_offsets().is_some()
    {
        return Err(unsupported(
            "linux.intelRdt, linux.personality and linux.timeOffsets",
        ));
    }
    let namespaces: Vec<_> = linux.namespaces().clone().unwrap_or_default();
    for (key, _) in linux.sysctl().iter().flatten() {
        check_sysctl(key, &namespaces)?;
    }
    for required in [LinuxNamespaceType::Pid, LinuxNamespaceType::Mount] {
        match namespaces.iter().find(|n| n.typ() == required) {
            None => {
                return Err(unsupported(format!(
                    "sharing the host's {required:?} namespace"
                )))
            }
            Some(n) if n.path().is_some() => {
                return Err(unsupported(format!(
                    "joining an existing {required:?} namespace"
                )))
            }
            Some(_) => {}
        }
    }
    for ns in &namespaces {
        if matches!(
            ns.typ(),
            LinuxNamespaceType::User | LinuxNamespaceType::Time
        ) {
            return Err(unsupported(format!("a {:?} namespace", ns.typ())));
        }
    }
    if let Some(resources) = linux.resources() {
        if !is_empty_section(resources.block_io())
            || resources
                .hugepage_limits()
                .as_ref()
                .is_some_and(|h| !h.is_empty())
            || !is_empty_section(resources.network())
            || resources.rdma().as_ref().is_some_and(|r| !r.is_empty())
            || resources.unified().as_ref().is_some_and(|u| !u.is_empty())
        {
            return Err(unsupported(
                "linux.resources other than memory, cpu, pids and devices",
            ));
        }
        check_device_rules(resources.devices().as_deref().unwrap_or_default())?;
    }
    for m in spec.mounts().iter().flatten() {
        let kind = m.typ().clone().unwrap_or_else(|| "bind".into());
        let known = [
            "bind", "proc", "tmpfs", "devpts", "mqueue", "sysfs", "cgroup", "cgroup2",
        ];
        if !known.contains(&kind.as_str())
            && !m
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind")
        {
            return Err(unsupported(format!(
                "a mount of type `{kind}` at {}",
                m.destination().display()
            )));
        }
    }
    Ok(())
}

/// Refuses an rlimit the workload could never get: an unknown one, a soft limit above its
/// hard one, or a hard limit above this process's (which the workload inherits) without
/// CAP_SYS_RESOURCE to raise it — named, before anything is made.
fn check_rlimits(process: &oci_spec::runtime::Process) -> Result<(), BundleError> {
    let may_raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    for rlimit in process.rlimits().iter().flatten() {
        let Some((name, resource)) = rlimit_of(rlimit) else {
            return Err(BundleError::Invalid(format!(
                "process.rlimits: unknown type {:?}",
                rlimit.typ()
            )));
        };
        let (soft, hard) = (rlimit.soft(), rlimit.hard());
        if soft > hard {
            return Err(BundleError::Invalid(format!(
                "process.rlimits {name}: soft {soft} is above hard {hard}"
            )));
        }
        let (_, hard_here) = nix::sys::resource::getrlimit(resource)
            .map_err(|e| BundleError::Invalid(format!("process.rlimits {name}: {e}")))?;
        if hard > hard_here && !may_raise {
            return Err(BundleError::Invalid(format!(
                "process.rlimits {name}: hard {hard} is above the hard limit here, {hard_here} (raising it needs CAP_SYS_RESOURCE)"
            )));
        }
    }
    Ok(())
}

/// System V IPC sysctls, which the IPC namespace holds.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Refuses a sysctl that would change the host, as runc does: one no namespace holds, or
/// one of a namespace the container shares with the host; and a key that is no plain dotted
/// name (it becomes a path under `/proc/sys`).
fn check_sysctl(key: &str, namespaces: &[LinuxNamespace]) -> Result<(), BundleError> {
    let plain = key
        .split('.')
        .all(|part| !part.is_empty() && !part.contains(['/', '\0']));
    let kind = if !plain || !key.contains('.') {
        return Err(BundleError::Invalid(format!("linux.sysctl `{key}`")));
    } else if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key == "kernel.domainname" || key == "kernel.hostname" {
        LinuxNamespaceType::Uts
    } else {
        return Err(unsupported(format!(
            "linux.sysctl `{key}`: no namespace holds it, it would change the host"
        )));
    };
    if !namespaces.iter().any(|n| n.typ() == kind) {
        return Err(unsupported(format!(
            "linux.sysctl `{key}` with the host's {kind:?} namespace"
        )));
    }
    Ok(())
}

/// Device cgroup rules: wrun gives a container only the standard devices (bound from the
/// host) and never `CAP_MKNOD` beyond what the spec grants; rules that would allow more
/// (block devices, every device) cannot be honoured and are refused.
fn check_device_rules(rules: &[LinuxDeviceCgroup]) -> Result<(), BundleError> {
    for rule in rules.iter().filter(|r| r.allow()) {
        let kind = rule.typ().map(|t| format!("{t:?}").to_lowercase());
        let wildcard = rule.major().is_none() || rule.minor().is_none();
        let char_device = kind
            .as_deref()
            .is_some_and(|k| k.starts_with('c') || k == "char");
        if !char_device || wildcard && rule.major() != Some(136) {
            return Err(unsupported(
                "linux.resources.devices rules allowing more than the standard character devices",
            ));
        }
    }
    Ok(())
}
