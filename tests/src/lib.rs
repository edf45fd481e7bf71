//! Helpers for the integration tests: the real `wrun` binary, the built samples, a private
//! state root and cgroup parent per test, and checks that nothing was left behind.

mod assert;
pub mod compare;
mod ports;
mod process;
pub mod real_programs;
pub mod registry;
mod wait;

pub use assert::*;
pub use ports::port;
pub use process::*;
pub use wait::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The `wrun` binary next to this test executable (`target/<profile>/wrun`), or `$WRUN_BIN`.
pub fn wrun_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WRUN_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    existing(
        profile_dir.join("wrun"),
        "build it first (scripts/test.sh does)",
    )
}

/// `path`, asserted to exist; else the failure says how to make it.
#[track_caller]
fn existing(path: PathBuf, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path
}

/// `wrun-hooked`: `wrun` with the test hooks (see engine/src/sandbox/test_hooks.rs).
/// The system calls the escape suite has `wrun-hooked` make from inside a sandbox, right
/// after its seccomp filter (`WRUN_TEST_SYSCALL`), that must fail with EPERM.
pub const FORBIDDEN_CALLS: &[&str] = &[
    "mount",
    "umount",
    "socket",
    "socket-unix",
    "socketpair",
    "shmget",
    "semget",
    "msgget",
    "mq_open",
    "execve",
    "ptrace",
    "unshare-user",
    "setns",
    "fork",
    "kill",
    "bpf",
    "keyctl",
    "kexec_load",
    "open",
    "chroot",
    "capset",
    "ioctl-tiocsti",
    "memfd",
    "mmap-exec",
    "mprotect-exec",
];

/// Calls made as [`FORBIDDEN_CALLS`] are that must fail with ENOSYS, so that libc falls
/// back (clone3's flags are out of seccomp's reach: libc then uses the checked clone).
pub const UNIMPLEMENTED_CALLS: &[&str] = &["clone3", "uname"];

pub fn wrun_hooked_bin() -> PathBuf {
    let bin = wrun_bin().with_file_name("wrun-hooked");
    existing(
        bin,
        "build it with --features test-hooks (scripts/test.sh does)",
    )
}

/// A sample built by scripts/build-samples.sh, e.g. `sample("hello")` or `sample("hello.component")`.
pub fn sample(name: &str) -> PathBuf {
    let path = repo().join("samples/build").join(format!("{name}.wasm"));
    existing(path, "run scripts/build-samples.sh")
}

/// A file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Under `CI=true` a missing privilege or tool fails the test; elsewhere it says why the
/// test skips.
pub fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason} (CI=true forbids skipping)");
    }
    eprintln!("skipped: {reason}");
}

/// True when the tests may use namespaces and cgroups, else [`skip`]s.
pub fn privileged() -> bool {
    if nix_is_root() {
        return true;
    }
    skip("needs root for namespaces and cgroups");
    false
}

/// Returns from a test that needs root, as [`privileged`] decides. Given the test's setup,
/// evaluates to it once the test may go on: `let world = privileged_test!(World::new());`.
#[macro_export]
macro_rules! privileged_test {
    () => {
        if !$crate::privileged() {
            return;
        }
    };
    ($setup:expr) => {{
        $crate::privileged_test!();
        $setup
    }};
}

/// A path as the `&str` an argument list wants.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One test's world: a state root of its own and a cgroup parent of its own, so parallel
/// tests can check for leaks without seeing each other.
pub struct World {
    pub root: tempfile::TempDir,
    pub cgroup_parent: String,
}

/// The hierarchies a run creates cgroups in on this machine (v1: one per controller).
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.join(parent)];
    }
    ["memory", "pids", "cpu"]
        .iter()
        .map(|c| base.join(c).join(parent))
        .collect()
}

impl World {
    pub fn new() -> World {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // tempfile makes it 0777 less the umask; wrun refuses a root others can enter.
        let root = tempfile::Builder::new()
            .prefix("wrun-test-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("temp dir");
        World {
            root,
            cgroup_parent: format!("wrun-test/{}-{n}", std::process::id()),
        }
    }

    /// `BIN --root ROOT`, stdin closed.
    pub fn command(&self, bin: PathBuf) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--root").arg(self.root.path()).stdin(Stdio::null());
        cmd
    }

    /// `BIN --root ROOT run --cgroup-parent PARENT ARGS...`, stdin closed.
    fn run_command(&self, bin: PathBuf, args: &[&str]) -> Command {
        let mut cmd = self.command(bin);
        cmd.args(["run", "--cgroup-parent", &self.cgroup_parent])
            .args(args);
        cmd
    }

    /// `wrun --root ROOT run --cgroup-parent PARENT ARGS...`, stdin closed.
    pub fn run_cmd(&self, args: &[&str]) -> Command {
        self.run_command(wrun_bin(), args)
    }

    /// Starts `wrun run ARGS...` with stdout and stderr piped, to be waited for later.
    pub fn spawn_run(&self, args: &[&str]) -> std::process::Child {
        self.run_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wrun")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(args).output().expect("spawn wrun")
    }

    /// Runs `wrun --root ROOT ARGS...` (any subcommand).
    pub fn wrun(&self, args: &[&str]) -> Output {
        self.command(wrun_bin())
            .args(args)
            .output()
            .expect("spawn wrun")
    }

    /// Like [`World::run_cmd`], with the hooked binary.
    pub fn hooked_cmd(&self, args: &[&str]) -> Command {
        self.run_command(wrun_hooked_bin(), args)
    }

    /// Native image runs' writable layers (`<root>/overlays/<id>`).
    pub fn writable_layers(&self) -> Vec<String> {
        match std::fs::read_dir(self.root.path().join("overlays")) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Run records (live or stale) in this world's state root. A pool's free reusable record
    /// (`.slot-<n>.lock`, empty) records no run: a stopping daemon's sweep removes those it
    /// finds free, the next command's sweep one a run emptied after its daemon stopped.
    pub fn run_records(&self) -> Vec<String> {
        let free_slot = |entry: &std::fs::DirEntry| {
            entry.file_name().to_string_lossy().starts_with(".slot-")
                && entry.metadata().is_ok_and(|m| m.len() == 0)
        };
        std::fs::read_dir(self.root.path().join("runs"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| !free_slot(e))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cgroups of runs under this world's parent that still exist.
    pub fn live_cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
            .into_iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    }

    /// `file` of the live cgroup of this world's run in the v1 `controller` hierarchy, trimmed.
    pub fn cgroup_file(&self, controller: &str, file: &str) -> Option<String> {
        let dir = self
            .live_cgroups()
            .into_iter()
            .find(|d| d.starts_with(format!("/sys/fs/cgroup/{controller}/")))?;
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        Some(text.trim().to_string())
    }

    /// Fails if a run left a cgroup, or a mount of this world's state root in the host.
    pub fn assert_nothing_left(&self) {
        assert_eq!(
            self.live_cgroups(),
            Vec::<PathBuf>::new(),
            "cgroups left behind"
        );
        assert_eq!(
            self.writable_layers(),
            Vec::<String>::new(),
            "writable layers left behind"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = self.root.path().to_string_lossy().into_owned();
        assert!(
            !mountinfo.contains(&root),
            "a mount under {root} leaked into the host: {mountinfo}"
        );
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A test that failed half-way may have left containers running: end them while their
        // records still exist (the temporary root goes right after this).
        let wrun = |args: &[&str]| self.command(wrun_bin()).args(args).output();
        if let Ok(listed) = wrun(&["ps", "-aq"]) {
            let listed = String::from_utf8_lossy(&listed.stdout);
            let ids: Vec<&str> = listed.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = wrun(&[&["rm", "-f"], &ids[..]].concat());
            }
        }
        // And attached runs a failed test never ended (their processes outlive the test's):
        // a claimed pooled run's supervisor and client, say.
        kill_and_wait(&processes_of(self.root.path()), 5);
        for dir in cgroup_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
        end_background_compilers(self.root.path());
    }
}

/// The busybox image built by samples/busybox-image.sh.
pub fn busybox_archive() -> PathBuf {
    existing(
        repo().join("samples/build/busybox-oci.tar"),
        "run scripts/build-samples.sh",
    )
}

/// A world with the busybox image imported.
pub fn busybox_world() -> World {
    let world = World::new();
    let archive = busybox_archive();
    let out = world.wrun(&["image", "import", archive.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    world
}

/// An unprivileged local user made for one test (`useradd`), removed when dropped: the
/// other user on a shared host.
pub struct LocalUser {
    pub name: String,
}

impl LocalUser {
    pub fn new() -> LocalUser {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("wrun-t{}-{n}", std::process::id());
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(made.success(), "useradd {name} failed");
        LocalUser { name }
    }

    /// Runs `argv` as this user (no supplementary groups, no capabilities).
    pub fn run(&self, argv: &[&str]) -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.name))
            .arg(format!("--regid={}", self.name))
            .args(["--clear-groups", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv")
    }
}

impl Default for LocalUser {
    fn default() -> Self {
        LocalUser::new()
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// The output's stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The output's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// GET `path` on 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    use std::io::{Read, Write};
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// KiB of anonymous memory process `pid` holds (its smaps); None once it is gone.
pub fn anonymous_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
}

/// KiB of `pid`'s read-only mappings of the executable `binary` that are resident (its code
/// and read-only data, as smaps counts them).
pub fn code_rss_kib(pid: u32, binary: &Path) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let binary = binary
        .canonicalize()
        .unwrap_or_else(|_| binary.to_path_buf());
    let mut counted = false;
    let mut total = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: "start-end perms offset dev inode [path]".
        if fields.len() >= 5 && fields[0].contains('-') && fields[1].len() == 4 {
            counted =
                fields.get(5).map(Path::new) == Some(binary.as_path()) && !fields[1].contains('w');
        } else if counted && fields.first() == Some(&"Rss:") {
            total += fields[1].parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// The PIDs whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The contents of `path` once it exists (a PID file); panics after 10 s.
pub fn wait_for_file(path: &Path) -> String {
    wait_for(10, &format!("{} never appeared", path.display()), || {
        std::fs::read_to_string(path).ok()
    })
}

/// The files of a run handed over as the containerd shim hands one over, in `dir`: the start
/// gate (a FIFO, made here), the PID file and the stdout file.
pub struct Handoff {
    pub gate: PathBuf,
    pub pid_file: PathBuf,
    pub out: PathBuf,
}

impl Handoff {
    pub fn in_dir(dir: &Path) -> Handoff {
        let handoff = Handoff {
            gate: dir.join("gate"),
            pid_file: dir.join("pid"),
            out: dir.join("out"),
        };
        let made = Command::new("mkfifo").arg(&handoff.gate).status();
        assert!(made.expect("mkfifo").success(), "mkfifo");
        handoff
    }

    /// `--id ID --pid-file … --start-gate … --stdout …`
    pub fn args<'a>(&'a self, id: &'a str) -> Vec<&'a str> {
        let out = self.out.to_str().expect("utf-8 path");
        [vec!["--id", id], self.held_args(), vec!["--stdout", out]].concat()
    }

    /// `--pid-file … --start-gate …` only.
    pub fn held_args(&self) -> Vec<&str> {
        vec![
            "--pid-file",
            self.pid_file.to_str().expect("utf-8 path"),
            "--start-gate",
            self.gate.to_str().expect("utf-8 path"),
        ]
    }

    /// Opens the gate of the held run `child` and checks that it ends with 0, having written
    /// `expected` to the stdout file.
    pub fn start_and_expect(&self, child: std::process::Child, expected: &str) {
        std::fs::write(&self.gate, b"1").expect("open the gate");
        let output = child.wait_with_output().expect("wait");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(
            std::fs::read_to_string(&self.out).expect("stdout file"),
            expected
        );
    }
}

/// A Wasm OCI bundle in `dir` (runc's default spec) running `module`, in the network
/// namespace at `netns` if given, else in one of its own.
pub fn wasm_bundle(dir: &Path, module: &Path, netns: Option<&str>) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::copy(module, bundle.join("rootfs/app.wasm")).unwrap();
    let spec = Command::new("runc")
        .args(["spec", "-b"])
        .arg(&bundle)
        .status()
        .expect("runc is installed (scripts/setup.sh)");
    assert!(spec.success());
    let mut config = std::fs::read_to_string(bundle.join("config.json"))
        .unwrap()
        .replace("\"terminal\": true", "\"terminal\": false")
        .replacen("\"sh\"", "\"/app.wasm\"", 1);
    if let Some(netns) = netns {
        config = config.replace(
            "\"type\": \"network\"",
            &format!("\"type\": \"network\", \"path\": \"{netns}\""),
        );
    }
    std::fs::write(bundle.join("config.json"), config).unwrap();
    bundle
}
