//! Rootless mode: the core cases run by an unprivileged user that the test set-up creates.
//! wrun then makes its own user namespace; without a delegated cgroup it warns about the
//! limits the kernel will not enforce and goes on.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use wrun_tests::*;

const USER: &str = "wrun-rootless";

/// The test user (created if missing) and a world-readable copy of the binary and samples,
/// since the checkout may sit under a directory the user cannot enter (such as /root).
struct Rootless {
    uid: u32,
    gid: u32,
    dir: tempfile::TempDir,
}

impl Rootless {
    fn new() -> Option<Rootless> {
        if !privileged() {
            return None;
        }
        let exists = Command::new("id")
            .arg(USER)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let made = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ])
                .status()
                .unwrap();
            assert!(made.success(), "useradd {USER} failed");
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, USER]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let dir = tempfile::Builder::new()
            .prefix("wrun-rootless-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(wrun_bin(), dir.path().join("wrun")).unwrap();
        for name in [
            "hello",
            "hello.component",
            "exit",
            "echo",
            "cat",
            "escape",
            "hog",
            "spin",
            "frontend-app",
        ] {
            std::fs::copy(sample(name), dir.path().join(format!("{name}.wasm"))).unwrap();
        }
        let rootless = Rootless {
            uid: id("-u"),
            gid: id("-g"),
            dir,
        };
        for path in [rootless.state(), rootless.data()] {
            std::fs::create_dir(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(rootless.uid), Some(rootless.gid)).unwrap();
        }
        // A state root must be its owner's alone.
        std::fs::set_permissions(rootless.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Some(rootless)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn module(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.wasm"))
            .to_string_lossy()
            .into_owned()
    }

    /// `wrun --root STATE run ARGS...` as the unprivileged user.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.dir.path().join("wrun"))
            .arg("--root")
            .arg(self.state())
            .arg("run")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn assert_nothing_left(&self) {
        let records: Vec<_> = std::fs::read_dir(self.state().join("runs"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(records.is_empty(), "run records left: {records:?}");
        let mine = self.dir.path().to_string_lossy().into_owned();
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .filter(|c| c.contains(&mine))
            .collect();
        assert!(left.is_empty(), "processes left: {left:?}");
    }
}

#[test]
fn rootless_runs_modules_and_components() {
    let Some(r) = Rootless::new() else { return };
    for guest in ["hello", "hello.component"] {
        let out = r.run(&[&r.module(guest)]);
        assert_eq!(out.status.code(), Some(0), "{guest}: {}", stderr(&out));
        assert_eq!(stdout(&out), "Hello from WebAssembly in a wrun sandbox!\n");
        assert_eq!(stderr(&out), "", "no warning without limits");
    }
    for code in [0, 3, 42] {
        let out = r.run(&[&r.module("exit"), &code.to_string()]);
        assert_eq!(out.status.code(), Some(code));
    }
    let out = r.run(&["-e", "A=1", &r.module("echo"), "x", "y"]);
    assert_eq!(stdout(&out), "args: x y\nenv: A=1\n");
    r.assert_nothing_left();
}

#[test]
fn rootless_preopens_and_escapes() {
    let Some(r) = Rootless::new() else { return };
    let data = r.data();
    std::fs::write(data.join("in.txt"), "rootless\n").unwrap();
    std::os::unix::fs::chown(data.join("in.txt"), Some(r.uid), Some(r.gid)).unwrap();
    let rw = format!("{}::/d", s(&data));
    let cat = r.module("cat");
    let out = r.run(&["--dir", &rw, &cat, "-o", "/d/out.txt", "/d/in.txt"]);
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "rootless\n"
    );
    let ro = format!("{}::/d:ro", s(&data));
    let refused = r.run(&["--dir", &ro, &cat, "-o", "/d/new.txt", "/d/in.txt"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(!data.join("new.txt").exists());
    for path in ["/d/../state", "/etc/passwd", "/d/../../../etc/shadow"] {
        let out = r.run(&["--dir", &rw, &r.module("escape"), "read", path]);
        assert!(
            stdout(&out).starts_with("denied: "),
            "{path}: {}",
            stdout(&out)
        );
    }
    r.assert_nothing_left();
}

#[test]
fn rootless_warns_about_unenforced_limits_and_keeps_the_wasm_ones() {
    let Some(r) = Rootless::new() else { return };
    let out = r.run(&["--memory", "16m", "--pids", "8", &r.module("hog")]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("hog: memory.grow refused after "));
    let err = stderr(&out);
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // A v2 host may delegate a subtree: then there is nothing to warn about.
        assert!(err.is_empty() || err.contains("not enforced"), "{err}");
    } else {
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("wrun: warning: rootless"), "{err}");
        assert!(err.contains("--memory") && err.contains("--pids") && !err.contains("--cpus"));
    }
    let timeout = r.run(&["--timeout", "300ms", &r.module("spin")]);
    assert_eq!(timeout.status.code(), Some(124));
    r.assert_nothing_left();
}

#[test]
fn rootless_cannot_publish_a_privileged_port() {
    let Some(r) = Rootless::new() else { return };
    let out = r.run(&["-p", "127.0.0.1:80:8080", &r.module("frontend-app")]);
    assert_one_line_error(
        &out,
        125,
        "failed to listen on 127.0.0.1:80 (-p): permission denied (ports below 1024",
    );
    r.assert_nothing_left();
}
