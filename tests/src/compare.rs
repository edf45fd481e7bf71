//! Runs one guest under wrun and under the in-process reference (`wasmtime-reference`) the
//! same way, and captures what can be compared: exit code, stdout, stderr, the files left.

use crate::World;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The reference binary built beside `wrun` (tests/src/bin/wasmtime-reference.rs).
pub fn reference_bin() -> PathBuf {
    let bin = crate::wrun_bin().with_file_name("wasmtime-reference");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release --bins` builds it (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// How a guest is run: the same under both runtimes.
pub struct Invocation {
    pub module: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The preopened directories.
    pub dirs: Vec<GuestDir>,
    pub stdin: Vec<u8>,
    /// Extra `wrun run` options (limits), which must not change the result.
    pub wrun_options: Vec<String>,
}

pub struct GuestDir {
    pub guest: String,
    pub source: DirSource,
}

/// What a preopened directory holds when the guest starts.
pub enum DirSource {
    /// A fresh empty directory per run; what the guest leaves there is compared.
    Empty,
    /// A fresh copy of this directory per run; what the guest leaves there is compared.
    CopyOf(PathBuf),
    /// This directory itself, which the guest only reads (`:ro` under wrun).
    ReadOnly(PathBuf),
}

/// What a run left: its exit code, its output, and the tree of every writable preopen.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub trees: Vec<Vec<String>>,
}

impl Outcome {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Invocation {
    /// Runs under `wrun run` in `world`, the directories made under `scratch/wrun`.
    pub fn under_wrun(&self, world: &World, scratch: &Path) -> Outcome {
        let hosts = self.fresh_dirs(&scratch.join("wrun"));
        let args = self.wrun_run_args(&hosts);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.feed(world.run_cmd(&argv));
        self.outcome(output, &hosts)
    }

    /// Runs under the reference, the directories made under `scratch/reference`.
    pub fn under_reference(&self, scratch: &Path) -> Outcome {
        let hosts = self.fresh_dirs(&scratch.join("reference"));
        let output = self.feed(self.reference_cmd(&reference_bin(), &hosts, &[]));
        self.outcome(output, &hosts)
    }

    /// What follows `wrun run`: the options, the preopens at `hosts` (from
    /// [`Invocation::fresh_dirs`]), the environment, the module and its arguments.
    pub fn wrun_run_args(&self, hosts: &[PathBuf]) -> Vec<String> {
        let mut args: Vec<String> = self.wrun_options.clone();
        for (host, dir) in hosts.iter().zip(&self.dirs) {
            let mode = match dir.source {
                DirSource::ReadOnly(_) => ":ro",
                _ => "",
            };
            args.push("--dir".into());
            args.push(format!("{}::{}{mode}", host.display(), dir.guest));
        }
        for (name, value) in &self.env {
            args.push("-e".into());
            args.push(format!("{name}={value}"));
        }
        args.push(self.module.display().to_string());
        args.extend(self.args.iter().cloned());
        args
    }

    /// The reference `bin` running the guest with the preopens at `hosts`, after its own
    /// `options` (`--precompiled FILE`, `--epoch-interruption`).
    pub fn reference_cmd(&self, bin: &Path, hosts: &[PathBuf], options: &[String]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(options);
        for (host, dir) in hosts.iter().zip(&self.dirs) {
            cmd.arg("--dir")
                .arg(format!("{}::{}", host.display(), dir.guest));
        }
        for (name, value) in &self.env {
            cmd.arg("--env").arg(format!("{name}={value}"));
        }
        cmd.arg(&self.module).args(&self.args);
        cmd
    }

    /// The host side of each preopen, made afresh under `base` (a read-only one is its
    /// source itself).
    pub fn fresh_dirs(&self, base: &Path) -> Vec<PathBuf> {
        let _ = std::fs::remove_dir_all(base);
        std::fs::create_dir_all(base).unwrap();
        self.dirs
            .iter()
            .enumerate()
            .map(|(index, dir)| {
                let host = base.join(format!("dir{index}"));
                match &dir.source {
                    DirSource::Empty => std::fs::create_dir(&host).unwrap(),
                    DirSource::CopyOf(seed) => copy_tree(seed, &host),
                    DirSource::ReadOnly(shared) => return shared.clone(),
                }
                host
            })
            .collect()
    }

    /// Runs `cmd` with the guest's stdin, capturing its output.
    pub fn feed(&self, mut cmd: Command) -> Output {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the runtime");
        let mut stdin = child.stdin.take().unwrap();
        let input = self.stdin.clone();
        let writer = std::thread::spawn(move || {
            // A guest that never reads its stdin closes it early: EPIPE is its right.
            let _ = stdin.write_all(&input);
        });
        let output = child.wait_with_output().expect("wait for the runtime");
        writer.join().unwrap();
        output
    }

    fn outcome(&self, output: Output, hosts: &[PathBuf]) -> Outcome {
        Outcome {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
            trees: hosts
                .iter()
                .zip(&self.dirs)
                .filter(|(_, dir)| !matches!(dir.source, DirSource::ReadOnly(_)))
                .map(|(host, _)| tree(host))
                .collect(),
        }
    }
}

/// Every entry below `root`, sorted: path, kind, permission bits, and a file's size, content
/// hash (FNV-1a) and link count, or a link's target. Times are left out: they differ
/// between any two runs.
pub fn tree(root: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    walk(root, root, &mut entries);
    entries.sort();
    entries
}

fn walk(root: &Path, dir: &Path, entries: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            entries.push(format!("{name} link -> {}", target.display()));
        } else if meta.is_dir() {
            entries.push(format!("{name} dir {mode:o}"));
            walk(root, &path, entries);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            entries.push(format!(
                "{name} file {mode:o} {} bytes fnv {:016x} links {}",
                bytes.len(),
                fnv1a(&bytes),
                meta.nlink()
            ));
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Copies `from` to `to` (directories, files and symlinks), as a fresh input for one run.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}
