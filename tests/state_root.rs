//! The state root is private to the user who runs wrun, whatever command makes it first, and
//! another local user can neither read what it holds nor run what a container wrote there.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use wrun_tests::*;

/// A directory any user may enter, holding state roots that do not exist yet.
struct Shared {
    top: tempfile::TempDir,
    cgroup_parent: String,
}

impl Shared {
    fn new() -> Shared {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let top = tempfile::Builder::new()
            .prefix("wrun-shared-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Shared {
            top,
            cgroup_parent: format!("wrun-test/{}-shared-{n}", std::process::id()),
        }
    }

    fn root(&self, name: &str) -> PathBuf {
        self.top.path().join(name)
    }

    /// `wrun --root ROOT ARGS…`; `run` gets this test's cgroup parent.
    fn wrun(&self, root: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(wrun_bin());
        cmd.arg("--root").arg(root);
        match args.split_first() {
            Some((&"run", rest)) => {
                cmd.args(["run", "--cgroup-parent", &self.cgroup_parent]);
                cmd.args(rest);
            }
            _ => {
                cmd.args(args);
            }
        }
        cmd.stdin(Stdio::null()).output().expect("spawn wrun")
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The runs' own cgroups went with them; their parent is this test's.
        for dir in cgroup_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Every path under `root` that is not 0700 (directories) or 0600 (files), but for image
/// contents and what a container wrote, which keep their own modes below 0700 directories
/// (`images/rootfs/<digest>`, `overlays/<id>`).
fn open_entries(root: &Path) -> Vec<String> {
    let mut open = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.parent() == Some(&root.join("images/rootfs")) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let expected = if meta.is_dir() { 0o700 } else { 0o600 };
            if meta.file_type().is_symlink() || meta.file_type().is_socket() {
                continue;
            }
            if mode != expected {
                open.push(format!("{} {mode:o}", path.display()));
            }
            if meta.is_dir() && path.parent() != Some(&root.join("overlays")) {
                stack.push(path);
            }
        }
    }
    open
}

#[test]
fn whatever_command_comes_first_the_state_root_is_private() {
    let shared = privileged_test!(Shared::new());
    let archive = busybox_archive();
    let echo = sample("echo");
    let firsts: [&[&str]; 5] = [
        &["images"],
        &["image", "import", s(&archive)],
        &["ps", "-a"],
        &["no-such-subcommand"],
        &["run", "-d", "--name", "web", s(&echo), "hi"],
    ];
    for (n, first) in firsts.iter().enumerate() {
        let root = shared.root(&format!("root-{n}"));
        let out = shared.wrun(&root, first);
        let meta = std::fs::metadata(&root).unwrap_or_else(|e| panic!("{first:?}: {e}"));
        assert_eq!(meta.mode() & 0o7777, 0o700, "{first:?} made the root");
        assert_eq!(meta.uid(), 0);
        // A second command adds what a container and its image leave.
        shared.wrun(&root, &["image", "import", s(&archive)]);
        let run = shared.wrun(&root, &["run", "--name", "c", "busybox", "true"]);
        assert_exit(&run, 0);
        assert_eq!(
            open_entries(&root),
            Vec::<String>::new(),
            "after {first:?} ({})",
            stderr(&out)
        );
        shared.wrun(&root, &["rm", "-f", "web", "c"]);
    }
}

#[test]
fn another_user_cannot_read_a_containers_env_or_log() {
    let shared = privileged_test!(Shared::new());
    let root = shared.root("root");
    let out = shared.wrun(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            "SECRET=hunter2",
            s(&sample("echo")),
            "the-log-line",
        ],
    );
    assert_exit(&out, 0);
    let id = stdout(&out).trim().to_string();
    wait_until(10, "no log line", || {
        stdout(&shared.wrun(&root, &["logs", "web"])).contains("the-log-line")
    });
    let record = root.join("containers").join(&id);
    let secrets: Vec<PathBuf> = std::fs::read_dir(&record)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        secrets.iter().any(|p| std::fs::read_to_string(p)
            .unwrap_or_default()
            .contains("hunter2")),
        "the secret is in the record: {secrets:?}"
    );
    let user = LocalUser::new();
    for path in secrets.iter().chain([&root.join("containers"), &root]) {
        for (tool, what) in [("cat", "readable"), ("ls", "listable")] {
            let out = user.run(&[tool, s(path)]);
            assert_ne!(out.status.code(), Some(0), "{} was {what}", path.display());
        }
    }
    shared.wrun(&root, &["rm", "-f", "web"]);
}

#[test]
fn another_user_cannot_run_what_a_container_planted_in_its_writable_layer() {
    let shared = privileged_test!(Shared::new());
    let root = shared.root("root");
    let imported = shared.wrun(&root, &["image", "import", s(&busybox_archive())]);
    assert_exit(&imported, 0);
    let out = shared.wrun(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "planter",
            "busybox",
            "sh",
            "-c",
            "stat -c %a / > /root-mode; cp /bin/busybox /planted && chmod 4755 /planted && sleep 100",
        ],
    );
    assert_exit(&out, 0);
    let id = stdout(&out).trim().to_string();
    let upper = root.join("overlays").join(&id).join("upper");
    let planted = upper.join("planted");
    wait_until(10, "nothing planted", || {
        std::fs::metadata(&planted)
            .map(|m| m.mode() & 0o4000)
            .unwrap_or(0)
            != 0
    });
    // Inside, `/` keeps the image's mode.
    assert_eq!(
        std::fs::read_to_string(upper.join("root-mode")).unwrap(),
        "755\n"
    );
    let user = LocalUser::new();
    let ran = user.run(&[s(&planted), "id", "-u"]);
    assert_ne!(
        ran.status.code(),
        Some(0),
        "a host user ran the planted binary: {}",
        stdout(&ran)
    );
    assert_ne!(user.run(&["ls", s(&upper)]).status.code(), Some(0));
    shared.wrun(&root, &["rm", "-f", "planter"]);
}

#[test]
fn an_open_or_foreign_state_root_is_refused_and_left_as_it_was() {
    let shared = privileged_test!(Shared::new());
    let open = shared.root("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = shared.wrun(&open, &["ps"]);
    assert_one_line_error(&out, 125, "is open to other users (mode 0755)");
    assert_contains(&stderr(&out), "chmod 700");
    let by_env = Command::new(wrun_bin())
        .env("WRUN_ROOT", &open)
        .arg("images")
        .output()
        .unwrap();
    assert_one_line_error(&by_env, 125, "is open to other users");
    assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_dir(&open).unwrap().count(),
        0,
        "nothing made in it"
    );

    let user = LocalUser::new();
    let foreign = shared.root("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
    let chowned = Command::new("chown")
        .arg(&user.name)
        .arg(&foreign)
        .status()
        .unwrap();
    assert!(chowned.success());
    let out = shared.wrun(&foreign, &["run", s(&sample("hello"))]);
    assert_one_line_error(&out, 125, "belongs to uid");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 0);
}
