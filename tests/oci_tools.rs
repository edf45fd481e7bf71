//! wrun as an OCI runtime under the real tools, Debian's packages, each private to its test:
//! Podman 4.3 (conmon calls `wrun create/start/exec/kill/delete`) and Docker 20.10 (a dockerd
//! with its own containerd, whose runc.v2 shim calls wrun as it calls runc).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use wrun_tests::*;

/// Prints `tty tty` when stdin and stdout are a terminal (the terminal turns `\n` to `\r\n`).
const TTY_CHECK: &str = "test -t 0 && test -t 1 && echo tty tty";

/// What `exec` gives through either tool in the running native container `sidecar`, whose
/// command is `sleep`: its PID namespace, the exit code, a terminal, the user and directory.
fn check_exec(tool: impl Fn(&[&str]) -> Output, sleep: &str) {
    let exec = |args: &[&str]| tool(&[&["exec"], args].concat());
    let seen = ok(exec(&[
        "sidecar",
        "sh",
        "-c",
        "echo $(tr '\\0' ' ' < /proc/1/cmdline)",
    ]));
    assert_eq!(seen.trim(), sleep);
    assert_exit(&exec(&["sidecar", "sh", "-c", "exit 3"]), 3);
    let tty = exec(&["-t", "sidecar", "sh", "-c", TTY_CHECK]);
    assert_output(&tty, 0, "tty tty\r\n");
    let user = exec(&[
        "-u",
        "nobody",
        "-w",
        "/etc",
        "sidecar",
        "sh",
        "-c",
        "echo $(id -u) $(pwd)",
    ]);
    assert_output(&user, 0, "65534 /etc\n");
}

/// Docker's placement rules, case by case, with `cp` (Docker's or wrun's) on `container`
/// (whose `/data` holds `top` and `sub/f`): what each case left on the host (under `host`)
/// and in the container (listed by `shell`), and which cases failed.
fn cp_cases(
    cp: impl Fn(&str, &str) -> Output,
    container: &str,
    host: &Path,
    shell: impl Fn(&str) -> String,
) -> (String, String, Vec<bool>) {
    std::fs::create_dir_all(host).unwrap();
    for dir in ["exist", "contents", "exist2"] {
        std::fs::create_dir(host.join(dir)).unwrap();
    }
    let at = |name: &str| host.join(name).to_string_lossy().into_owned();
    let inside = |path: &str| format!("{container}:{path}");
    let results = [
        cp(&inside("/data"), &at("new")),
        cp(&inside("/data"), &at("exist")),
        cp(&inside("/data/."), &at("contents")),
        cp(&inside("/data/sub/f"), &at("file")),
        cp(&inside("/data/sub/f"), &format!("{}/", at("exist2"))),
        cp(&inside("/data"), &at("file")),
        cp(&inside("/data/sub/f"), &format!("{}/", at("absent"))),
        cp(&at("new"), &inside("/in-new")),
        cp(&at("new"), &inside("/etc")),
        cp(&format!("{}/.", at("new")), &inside("/etc")),
        cp(&at("file"), &inside("/in-file")),
    ];
    let listed = Command::new("sh")
        .args(["-c", "cd \"$1\" && find . | sort", "sh", s(host)])
        .output()
        .unwrap();
    let in_container = shell("echo /in-new/* /in-new/*/* /etc/new/* /etc/sub/* /etc/top /in-file");
    (
        String::from_utf8_lossy(&listed.stdout).into_owned(),
        in_container,
        results.iter().map(|r| r.status.success()).collect(),
    )
}

/// A directory tree for an image: busybox and the applets the tests use.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("busybox-rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    for applet in [
        "sh", "echo", "sleep", "cat", "id", "pwd", "ps", "hostname", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    rootfs
}

/// A tar of `dir`'s contents, for `import`.
fn tar_of(dir: &Path, tar: &Path) -> PathBuf {
    let made = Command::new("tar")
        .args(["-C", s(dir), "-cf", s(tar), "."])
        .status()
        .unwrap();
    assert!(made.success());
    tar.to_path_buf()
}

/// Imports the sample `module` as the one-file image `image` (`/app.wasm`, its entrypoint),
/// as `docker import` and `podman import` make one.
fn import_wasm(tool: impl Fn(&[&str]) -> Output, dir: &Path, module: &str, image: &str) {
    let tree = dir.join(format!("{image}-tree"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::copy(sample(module), tree.join("app.wasm")).unwrap();
    let tar = tar_of(&tree, &dir.join(format!("{image}.tar")));
    ok(tool(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/app.wasm\"]",
        s(&tar),
        image,
    ]));
}

fn ok(output: Output) -> String {
    assert_exit(&output, 0);
    stdout(&output)
}

/// Podman with storage, state, configuration and runtime of its own.
struct Podman {
    dir: tempfile::TempDir,
    cgroup_parent: String,
}

impl Podman {
    fn new(world: &World) -> Podman {
        let dir = tempfile::tempdir().unwrap();
        // Root here lacks CAP_SYS_RESOURCE: Podman's default ulimits would fail for every runtime.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\ndefault_sysctls = []\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman {
            dir,
            cgroup_parent: format!("/{}", world.cgroup_parent),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .args([
                "--root",
                s(&dir.join("storage")),
                "--runroot",
                s(&dir.join("run")),
            ])
            .args(["--storage-driver", "vfs", "--runtime", s(&wrun_bin())])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("podman (apt-get install podman)")
    }

    /// `podman run --network none --cgroup-parent <the world's>` with `args`.
    fn run_container(&self, args: &[&str]) -> Output {
        let run = [
            "run",
            "--network",
            "none",
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        self.run(&[&run[..], args].concat())
    }
}

#[test]
fn podman_runs_native_and_wasm_images_and_execs_through_wrun() {
    let world = privileged_test!(World::new());
    let podman = Podman::new(&world);
    let scratch = podman.dir.path();
    ok(podman.run(&[
        "import",
        s(&tar_of(&busybox_rootfs(scratch), &scratch.join("bb.tar"))),
        "busybox",
    ]));
    let hello = podman.run_container(&["--rm", "busybox", "echo", "hello from podman"]);
    assert_output(&hello, 0, "hello from podman\n");
    assert_exit(
        &podman.run_container(&["--rm", "busybox", "sh", "-c", "exit 7"]),
        7,
    );
    // A terminal through conmon's console socket: the streams are one, and it controls it.
    let tty = podman.run_container(&["--rm", "-t", "busybox", "sh", "-c", TTY_CHECK]);
    assert_output(&tty, 0, "tty tty\r\n");
    // A Wasm image, as `podman import` makes it: the entrypoint is the module.
    import_wasm(|args| podman.run(args), scratch, "echo", "echo-wasm");
    let echoed = ok(podman.run_container(&["--rm", "echo-wasm", "one", "two"]));
    assert_contains(&echoed, "args: one two");
    // exec into a running native container; its exit code comes back.
    ok(podman.run_container(&["-d", "--name", "sidecar", "busybox", "sleep", "300"]));
    check_exec(|args| podman.run(args), "sleep 300");
    import_wasm(|args| podman.run(args), scratch, "idle", "idle-wasm");
    ok(podman.run_container(&["-d", "--name", "guest", "idle-wasm"]));
    let refused = podman.run(&["exec", "guest", "true"]);
    assert_ne!(refused.status.code(), Some(0));
    assert_contains(&stderr(&refused), "Wasm");
    ok(podman.run(&["stop", "-t", "2", "sidecar", "guest"]));
    let listed = ok(podman.run(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
    assert_contains(&listed, "sidecar Exited");
    assert_contains(&listed, "guest Exited");
    ok(podman.run(&["rm", "sidecar", "guest"]));
    assert_eq!(ok(podman.run(&["ps", "-aq"])), "");
    // Podman keeps conmon in a cgroup of its own under the parent: its, not wrun's.
    for dir in cgroup_dirs(&world.cgroup_parent) {
        std::fs::remove_dir(dir.join("conmon")).expect("conmon's cgroup, empty");
    }
    world.assert_nothing_left();
}

/// A dockerd of the test's own: data, exec root, socket and containerd namespace in a
/// temporary directory, no iptables, no bridge, wrun added as the runtime `wrun`.
struct Dockerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let config = serde_json::json!({"runtimes": {"wrun": {"path": s(&wrun_bin())}}});
        std::fs::write(path.join("daemon.json"), config.to_string()).unwrap();
        let daemon = Command::new("dockerd")
            .args([
                "--data-root",
                s(&path.join("data")),
                "--exec-root",
                s(&path.join("exec")),
            ])
            .args(["-H", &format!("unix://{}", s(&path.join("docker.sock")))])
            .args(["--pidfile", s(&path.join("docker.pid"))])
            .args(["--config-file", s(&path.join("daemon.json"))])
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .args(["--containerd-namespace", "wrun-test"])
            .args(["--containerd-plugins-namespace", "wrun-test-plugins"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("dockerd.log")).unwrap())
            .spawn()
            .expect("dockerd (apt-get install docker.io)");
        let dockerd = Dockerd { dir, daemon };
        wait_until(60, "dockerd never answered", || {
            dockerd.run(&["version"]).status.success()
        });
        dockerd
    }

    /// Debian's client (another `docker` may come first on PATH).
    fn run(&self, args: &[&str]) -> Output {
        let socket = format!("unix://{}", s(&self.dir.path().join("docker.sock")));
        Command::new("/usr/bin/docker")
            .args(["-H", &socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker (apt-get install docker.io)")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

/// `docker rm -f` of every container the test makes.
const REMOVE_ALL: [&str; 6] = [
    "rm",
    "-f",
    "frontend-app-1",
    "frontend-app-2",
    "frontend-app-3",
    "sidecar",
];

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.run(&REMOVE_ALL);
        // SIGTERM: dockerd stops its containerd and unmounts what it mounted.
        kill(self.daemon.id() as i32, libc::SIGTERM);
        let _ = self.daemon.wait();
    }
}

#[test]
fn docker_runs_wasm_replicas_and_execs_into_a_native_container_through_wrun() {
    let world = privileged_test!(World::new());
    let docker = Dockerd::start();
    let scratch = docker.dir.path();
    let parent = format!("/{}", world.cgroup_parent);
    let run = |args: &[&str]| {
        let base = [
            "run",
            "--runtime",
            "wrun",
            "--network",
            "none",
            "--cgroup-parent",
            &parent,
        ];
        docker.run(&[&base[..], args].concat())
    };
    import_wasm(|args| docker.run(args), scratch, "idle", "frontend-app");
    // The lesson's three replicas, detached, named.
    for n in 1..=3 {
        let name = format!("frontend-app-{n}");
        let started = run(&[
            "-d",
            "--name",
            &name,
            "-e",
            &format!("REPLICA={name}"),
            "-l",
            "tier=front",
            "frontend-app",
        ]);
        assert_eq!(
            started.status.code(),
            Some(0),
            "{}\n{}",
            stderr(&started),
            docker.log()
        );
    }
    for n in 1..=3 {
        let name = format!("frontend-app-{n}");
        wait_until(10, "a replica never logged", || {
            stdout(&docker.run(&["logs", &name])) == format!("{name} ready\n")
        });
    }
    let running = ok(docker.run(&["ps", "--format", "{{.Names}}"]));
    for n in 1..=3 {
        assert_contains(&running, &format!("frontend-app-{n}"));
    }
    // exec into a native container, as `docker exec` drives runc.
    let rootfs = busybox_rootfs(scratch);
    std::fs::create_dir_all(rootfs.join("data/sub")).unwrap();
    std::fs::write(rootfs.join("data/sub/f"), "hi\n").unwrap();
    std::fs::write(rootfs.join("data/top"), "top\n").unwrap();
    let bb = tar_of(&rootfs, &scratch.join("bb.tar"));
    ok(docker.run(&["import", s(&bb), "busybox"]));
    ok(run(&[
        "-d",
        "--name",
        "sidecar",
        "-l",
        "kind=helper",
        "busybox",
        "sleep",
        "301",
    ]));
    check_exec(|args| docker.run(args), "sleep 301");
    // `wrun cp` places files where `docker cp` does, from and into the same tree.
    let own_rootfs = scratch.join("wrun-rootfs");
    let copied = Command::new("cp")
        .args(["-a", s(&rootfs), s(&own_rootfs)])
        .status()
        .unwrap();
    assert!(copied.success());
    let boxed = world.wrun(&[
        "run",
        "-d",
        "--name",
        "cpbox",
        "--rootfs",
        s(&own_rootfs),
        "sleep",
        "302",
    ]);
    assert!(boxed.status.success(), "{}", stderr(&boxed));
    let by_docker = cp_cases(
        |a, b| docker.run(&["cp", a, b]),
        "sidecar",
        &scratch.join("docker-cp"),
        |script| ok(docker.run(&["exec", "sidecar", "sh", "-c", script])),
    );
    let by_wrun = cp_cases(
        |a, b| world.wrun(&["cp", a, b]),
        "cpbox",
        &scratch.join("wrun-cp"),
        |script| ok(world.wrun(&["exec", "cpbox", "sh", "-c", script])),
    );
    assert_eq!(by_wrun, by_docker);
    assert!(world.wrun(&["rm", "-f", "cpbox"]).status.success());
    // wrun's own `ps --format` renders Docker's templates as Docker's CLI does: the same
    // containers by name and label, created in the same order, print the same table.
    for name in [
        "frontend-app-1",
        "frontend-app-2",
        "frontend-app-3",
        "sidecar",
    ] {
        let label = if name == "sidecar" {
            "kind=helper"
        } else {
            "tier=front"
        };
        let idle = sample("idle");
        let started = world.wrun(&["run", "-d", "--name", name, "-l", label, s(&idle)]);
        assert!(started.status.success(), "{}", stderr(&started));
    }
    let template = r"table {{.Names}}\t{{.State}}\t{{.Labels}}\t{{upper .State}}";
    let docker_table = ok(docker.run(&["ps", "--format", template]));
    let wrun_table = ok(world.wrun(&["ps", "--format", template]));
    assert_eq!(wrun_table, docker_table);
    let removed = world.wrun(&REMOVE_ALL);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let tty = run(&["--rm", "-t", "busybox", "sh", "-c", TTY_CHECK]);
    assert_output(&tty, 0, "tty tty\r\n");
    let missing = docker.run(&["exec", "sidecar", "no-such-tool"]);
    assert_ne!(missing.status.code(), Some(0));
    // Docker prints an exec's start failure on stdout.
    let said = |output: &Output| format!("{}{}", stdout(output), stderr(output));
    assert_contains(&said(&missing), "not found");
    let refused = docker.run(&["exec", "frontend-app-1", "true"]);
    assert_ne!(refused.status.code(), Some(0));
    assert_contains(&said(&refused), "Wasm");
    ok(docker.run(&["stop", "-t", "2", "frontend-app-1"]));
    let stopped = ok(docker.run(&[
        "ps",
        "-a",
        "--filter",
        "name=frontend-app-1",
        "--format",
        "{{.Status}}",
    ]));
    assert_contains(&stopped, "Exited");
    ok(docker.run(&REMOVE_ALL));
    assert_eq!(ok(docker.run(&["ps", "-aq"])), "");
    // Nothing of wrun's left: no container state under the runtime root, no cgroup, no process.
    let runtime_root = scratch.join("exec/runtime-runc/wrun-test/oci");
    let left: Vec<_> = std::fs::read_dir(&runtime_root)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "containers left in {}: {left:?}",
        runtime_root.display()
    );
    wait_until(10, "a container's process outlived it", || {
        processes_matching(&["sleep 301"]).is_empty()
    });
    world.assert_nothing_left();
}
