//! The containerd rows of `wrun-bench density`: idle pods started with `ctr run -d`, a Wasm
//! one through wrun's shim and busybox `sleep` through runc.v2, so the shim each pod costs
//! is counted with it.

use crate::containerd::Containerd;
use crate::density::Subject;
use crate::fixtures::Fixtures;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::Stdio;

/// A private containerd with the idle Wasm image and busybox imported.
pub struct Pods {
    ctd: Containerd,
    wrun_config: PathBuf,
}

impl Pods {
    pub fn start(fx: &Fixtures) -> Result<Pods> {
        let (ctd, wrun_config) = Containerd::with_images(fx, &["idle:v1"])?;
        Ok(Pods { ctd, wrun_config })
    }

    /// The containerd daemon, which is not a pod's cost.
    pub fn daemon_pid(&self) -> i32 {
        self.ctd.pid()
    }
}

/// Which pods a row starts.
#[derive(Clone, Copy, PartialEq)]
pub enum PodKind {
    WrunWasm,
    RuncBusybox,
}

pub struct PodRow<'a> {
    pub pods: &'a Pods,
    pub kind: PodKind,
    pub cgroup_parent: String,
}

impl PodRow<'_> {
    fn id(&self, n: usize) -> String {
        let kind = match self.kind {
            PodKind::WrunWasm => "wasm",
            PodKind::RuncBusybox => "runc",
        };
        format!("density-ctr-{kind}-{n}")
    }

    fn ctr_ok(&self, args: &[&str]) -> Result<()> {
        let out = self.pods.ctd.ctr(args).stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Subject for PodRow<'_> {
    fn start(&self, n: usize) -> Result<()> {
        let id = self.id(n);
        let cgroup = format!("/{}/{id}", self.cgroup_parent);
        let config = self.pods.wrun_config.to_str().unwrap();
        let mut args = vec!["run", "-d", "--null-io", "--cgroup", &cgroup];
        match self.kind {
            PodKind::WrunWasm => args.extend([
                "--runtime",
                "io.containerd.wrun.v1",
                "--runtime-config-path",
                config,
                "docker.io/library/idle:v1",
                &id,
            ]),
            PodKind::RuncBusybox => args.extend([
                "--runtime",
                "io.containerd.runc.v2",
                "docker.io/library/busybox:latest",
                &id,
                "sleep",
                "1000000",
            ]),
        }
        self.ctr_ok(&args)
    }

    fn remove_all(&self, count: usize) -> Result<()> {
        for n in 0..count {
            let id = self.id(n);
            self.ctr_ok(&["task", "delete", "--force", &id])?;
            self.ctr_ok(&["container", "delete", &id])?;
        }
        Ok(())
    }

    fn cgroup(&self) -> Option<String> {
        Some(self.cgroup_parent.clone())
    }
}
