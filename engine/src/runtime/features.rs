//! What wrun supports as an OCI runtime, as runtime-spec's features.md describes it
//! (`runc features`): read by callers that adapt a spec to their runtime.

use crate::sandbox::native::mounts::MOUNT_OPTIONS;
use oci_spec::runtime::{
    ApparmorBuilder, CgroupBuilder, Features, FeaturesBuilder, LinuxFeatureBuilder, SeccompBuilder,
    SelinuxBuilder,
};
use oci_spec::runtime::{Arch, LinuxNamespaceType, LinuxSeccompAction};
use std::collections::HashMap;

/// The hooks the OCI verbs run (those inside the container are refused).
pub const HOOKS: [&str; 4] = ["prestart", "createRuntime", "poststart", "poststop"];

/// wrun's features (an error only if a builder refused its input: a bug).
pub fn features() -> Result<Features, oci_spec::OciSpecError> {
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Cgroup,
        ])
        .capabilities(
            caps::all()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
        )
        .cgroup(
            CgroupBuilder::default()
                .v1(true)
                .v2(true)
                .systemd(false)
                .systemd_user(false)
                .rdma(false)
                .build()?,
        )
        .seccomp(
            SeccompBuilder::default()
                .enabled(true)
                .actions(vec![
                    LinuxSeccompAction::ScmpActAllow,
                    LinuxSeccompAction::ScmpActErrno,
                    LinuxSeccompAction::ScmpActKill,
                    LinuxSeccompAction::ScmpActKillThread,
                    LinuxSeccompAction::ScmpActKillProcess,
                    LinuxSeccompAction::ScmpActTrap,
                    LinuxSeccompAction::ScmpActLog,
                ])
                .operators(
                    [
                        "SCMP_CMP_NE",
                        "SCMP_CMP_LT",
                        "SCMP_CMP_LE",
                        "SCMP_CMP_EQ",
                        "SCMP_CMP_GE",
                        "SCMP_CMP_GT",
                        "SCMP_CMP_MASKED_EQ",
                    ]
                    .map(String::from)
                    .to_vec(),
                )
                .archs(vec![Arch::ScmpArchX86_64])
                .build()?,
        )
        .apparmor(ApparmorBuilder::default().enabled(false).build()?)
        .selinux(SelinuxBuilder::default().enabled(false).build()?)
        .build()?;
    let annotations = HashMap::from([
        (
            "io.github.wrun.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            crate::spec::oci::CRUN_WASM_ANNOTATION.to_string(),
            "compat, compat-smart: the entrypoint runs in wasmtime".to_string(),
        ),
    ]);
    FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max(super::OCI_VERSION)
        .hooks(HOOKS.map(String::from).to_vec())
        .mount_options(MOUNT_OPTIONS.map(String::from).to_vec())
        .linux(linux)
        .annotations(annotations)
        .build()
}
