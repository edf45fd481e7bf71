//! A `wrun daemon` for the startup rows of the pooled path, on a state root of its own.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running daemon; stopped (SIGTERM) when dropped.
pub struct PoolDaemon {
    child: Child,
    wrun: PathBuf,
    root: PathBuf,
}

impl PoolDaemon {
    /// The state root the daemon serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts `wrun daemon --pool SIZE` on `root`, and checks that a run of `module` is taken
    /// by the pool (its cache warmed on the way).
    pub fn start(wrun: &Path, root: PathBuf, size: usize, module: &Path) -> Result<PoolDaemon> {
        let child = Command::new(wrun)
            .arg("--root")
            .arg(&root)
            .args([
                "daemon",
                "--pool",
                &size.to_string(),
                "--cgroup-parent",
                "wrun-bench",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start wrun daemon")?;
        let daemon = PoolDaemon {
            child,
            wrun: wrun.to_path_buf(),
            root,
        };
        let socket = daemon.root.join("daemon.sock");
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("wrun daemon did not start listening");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(200));
            let out = daemon
                .run_cmd(module)
                .env("WRUN_TIMINGS", "1")
                .output()
                .context("failed to run wrun")?;
            if String::from_utf8_lossy(&out.stderr).contains("pool: finished") {
                return Ok(daemon);
            }
        }
        bail!("runs were not taken by the pool")
    }

    /// `wrun run MODULE` against the daemon's root.
    pub fn run_cmd(&self, module: &Path) -> Command {
        let mut cmd = Command::new(&self.wrun);
        cmd.arg("--root")
            .arg(&self.root)
            .args(["run", "--cgroup-parent", "wrun-bench"])
            .arg(module);
        cmd
    }
}

impl Drop for PoolDaemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
