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

    /// How much of wrun's code the daemon has mapped in 2 MiB pages, as a sentence.
    pub fn code_pages(&self) -> Option<String> {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.child.id())).ok()?;
        let (size_kb, pmd_kb) = code_mapping(&smaps)?;
        Some(format!(
            "wrun's code in 2 MiB page mappings (`FilePmdMapped` of the pool daemon's code \
             mapping): {:.1} of {:.1} MiB",
            pmd_kb as f64 / 1024.0,
            size_kb as f64 / 1024.0
        ))
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

/// The size and the part mapped in 2 MiB pages (KiB) of the first executable file mapping in
/// `smaps`, the binary's code.
fn code_mapping(smaps: &str) -> Option<(u64, u64)> {
    let mut lines = smaps.lines();
    lines.find(|l| {
        let fields: Vec<_> = l.split_whitespace().collect();
        fields.len() >= 6 && fields[1] == "r-xp" && fields[5].starts_with('/')
    })?;
    // This mapping's fields: up to the next mapping's header (the only lines with a '-' in
    // their first word).
    let fields: Vec<&str> = lines
        .take_while(|l| !l.split_whitespace().next().is_some_and(|w| w.contains('-')))
        .collect();
    let field = |name: &str| -> Option<u64> {
        let line = fields.iter().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((field("Size:")?, field("FilePmdMapped:")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_code_mapping_is_the_first_executable_file_mapping() {
        let smaps = "00400000-00401000 r--p 00000000 fe:00 7 /usr/bin/wrun
Size:                  4 kB
FilePmdMapped:         0 kB
00600000-01a28000 r-xp 00200000 fe:00 7 /usr/bin/wrun
Size:              20640 kB
Rss:               14108 kB
FilePmdMapped:      6144 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
Size:                  4 kB
FilePmdMapped:         0 kB
";
        assert_eq!(super::code_mapping(smaps), Some((20640, 6144)));
        assert_eq!(super::code_mapping("garbage"), None);
        let without_the_field = "00600000-01a28000 r-xp 00200000 fe:00 7 /usr/bin/wrun
Size:              20640 kB
7f0000000000-7f0000001000 r-xp 00000000 fe:00 8 /usr/lib/other
Size:                  4 kB
FilePmdMapped:      2048 kB
";
        assert_eq!(super::code_mapping(without_the_field), None);
    }
}
