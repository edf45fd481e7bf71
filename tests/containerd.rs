//! The containerd shim end to end: Debian's containerd, started here with its own config,
//! root, state and sockets, runs Wasm and native images through `io.containerd.wrun.v1`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use wrun_tests::*;

const RUNTIME: &str = "io.containerd.wrun.v1";

/// A private containerd, killed (with every task it left) when dropped.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// Every task's cgroup is made under this one, so leaks are this test's own.
    cgroup_parent: String,
}

/// The annotation that makes containers one pod (one shim, shared namespaces).
const POD: [&str; 2] = ["--annotation", "io.kubernetes.cri.sandbox-id=pod-1"];

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("wrun-ctd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).expect("bin dir");
        let shim = wrun_bin().with_file_name("containerd-shim-wrun-v1");
        assert!(
            shim.exists(),
            "{} is missing: build it first",
            shim.display()
        );
        std::os::unix::fs::symlink(&shim, d.join("bin/containerd-shim-wrun-v1")).unwrap();
        std::os::unix::fs::symlink(wrun_bin(), d.join("bin/wrun")).unwrap();
        let config = format!(
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             root = \"{0}/root\"\nstate = \"{0}/state\"\n\
             [grpc]\n  address = \"{0}/ctd.sock\"\n[ttrpc]\n  address = \"{0}/ctd.sock.ttrpc\"\n",
            d.display()
        );
        std::fs::write(d.join("containerd.toml"), config).unwrap();
        std::fs::write(
            d.join("wrun.toml"),
            format!("root = \"{}/wrun\"\n", d.display()),
        )
        .unwrap();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut ctd = Containerd {
            dir,
            daemon: None,
            cgroup_parent: format!("wrun-shim-test/{}-{n}", std::process::id()),
        };
        ctd.run_daemon();
        ctd
    }

    fn run_daemon(&mut self) {
        let d = self.dir.path();
        let path = format!(
            "{}:{}",
            d.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .env("PATH", path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (scripts/setup.sh)");
        self.daemon = Some(daemon);
        wait_until(20, "containerd did not come up", || {
            self.ctr(&["version"]).status.success()
        });
    }

    /// Stops containerd (not its shims) and starts it again.
    fn restart(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = kill(daemon.id() as i32, libc::SIGTERM);
            let _ = daemon.wait();
        }
        self.run_daemon();
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(self.dir.path().join("ctd.sock"))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("ctr")
    }

    /// `ctr run` through wrun's shim with this test's wrun configuration.
    fn run_wrun(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
        let config = self.dir.path().join("wrun.toml");
        let mut all = vec!["run", "--runtime", RUNTIME, "--runtime-config-path"];
        all.push(config.to_str().unwrap());
        let cgroup = self.cgroup_of(id);
        all.extend_from_slice(&["--cgroup", &cgroup]);
        all.extend_from_slice(extra);
        all.push(image);
        all.push(id);
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    fn wrun(&self, args: &[&str]) -> Output {
        Command::new(wrun_bin())
            .arg("--root")
            .arg(self.dir.path().join("wrun"))
            .args(args)
            .output()
            .expect("wrun")
    }

    /// Packs a sample as an image, exports it and imports it into containerd.
    fn import_sample(&self, sample_name: &str, reference: &str) {
        let tar = self.dir.path().join(format!("{sample_name}.tar"));
        let packed = self.wrun(&[
            "image",
            "pack",
            sample(sample_name).to_str().unwrap(),
            "-t",
            reference,
        ]);
        assert!(packed.status.success(), "{}", stderr(&packed));
        let exported = self.wrun(&["image", "export", reference, "-o", tar.to_str().unwrap()]);
        assert!(exported.status.success(), "{}", stderr(&exported));
        self.import(&tar);
    }

    fn import_busybox(&self) {
        self.import(&repo().join("samples/build/busybox-oci.tar"));
    }

    fn import(&self, tar: &Path) {
        let out = self.ctr(&["image", "import", "--all-platforms", tar.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// (status, pid) of a task as `ctr task ls` shows it.
    fn task(&self, id: &str) -> Option<(String, i32)> {
        let out = self.ctr(&["task", "ls"]);
        stdout(&out).lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.first() == Some(&id))
                .then(|| (fields[2].to_string(), fields[1].parse().unwrap()))
        })
    }

    fn wait_for_status(&self, id: &str, status: &str) {
        wait_until(10, &format!("task {id} never became {status}"), || {
            self.task(id).map(|t| t.0).as_deref() == Some(status)
        });
    }

    /// A detached busybox `sleep` as pod `pod-1`'s first container: its PID, and `--with-ns`
    /// values for its network and IPC namespaces.
    fn run_sidecar(&self) -> (i32, [String; 2]) {
        let out = self.run_wrun(
            &["-d", POD[0], POD[1]],
            "docker.io/library/busybox:latest",
            "sidecar",
            &["sleep", "1000"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let (_, sidecar) = self.task("sidecar").unwrap();
        let net = format!("network:/proc/{sidecar}/ns/net");
        let ipc = format!("ipc:/proc/{sidecar}/ns/ipc");
        (sidecar, [net, ipc])
    }

    /// A detached idle Wasm container `app` in the pod, joining the sidecar's namespaces
    /// (`[net, ipc]` from [`Containerd::run_sidecar`]); the `idle:v1` image imported.
    fn run_pod_app(&self, [net, ipc]: &[String; 2]) -> Output {
        self.run_wrun(
            &["-d", "--with-ns", net, "--with-ns", ipc, POD[0], POD[1]],
            "docker.io/library/idle:v1",
            "app",
            &[],
        )
    }

    /// Pod `pod-1` with the busybox sidecar and the `tcp-kv` server detached as `kv` in it,
    /// `tcp-client:v1` imported: the sidecar's PID and the pod's `--with-ns` values.
    fn run_pod_with_kv(&self) -> (i32, [String; 2]) {
        self.import_busybox();
        self.import_sample("tcp-kv", "tcp-kv:v1");
        self.import_sample("tcp-client", "tcp-client:v1");
        let (sidecar, [net, ipc]) = self.run_sidecar();
        let in_pod = ["-d", "--with-ns", &net, "--with-ns", &ipc, POD[0], POD[1]];
        let out = self.run_wrun(&in_pod, "docker.io/library/tcp-kv:v1", "kv", &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        (sidecar, [net, ipc])
    }

    /// `lines` (printf escapes: `\\n` between lines; QUIT is added) sent to 127.0.0.1:7000
    /// with busybox nc from the sidecar, once something answers there: what came back.
    fn talk_from_sidecar(&self, lines: &str) -> String {
        let mut attempt = 0;
        wait_for(10, "nothing answered on the pod's port 7000", || {
            attempt += 1;
            let exec_id = format!("nc-{attempt}");
            let talk = format!("printf '{lines}\\nQUIT\\n' | nc 127.0.0.1 7000");
            let exec = [
                "task",
                "exec",
                "--exec-id",
                &exec_id,
                "sidecar",
                "sh",
                "-c",
                &talk,
            ];
            Some(stdout(&self.ctr(&exec))).filter(|said| !said.is_empty())
        })
    }

    /// `--mount` flags giving a container the pod's resolver files as CRI does: a
    /// resolv.conf naming the pod's loopback DNS server (see [`PodDns`]) with a search
    /// domain, and a hosts file naming `kv-by-hosts`.
    fn pod_resolver_mounts(&self) -> Vec<String> {
        let files = [
            (
                "resolv.conf",
                "search svc.cluster.local\nnameserver 127.0.0.1\noptions ndots:5 timeout:2 attempts:2\n",
            ),
            ("hosts", "127.0.0.1\tlocalhost\n127.0.0.1\tkv-by-hosts\n"),
        ];
        let mut flags = Vec::new();
        for (name, text) in files {
            let path = self.dir.path().join(format!("pod-{name}"));
            std::fs::write(&path, text).unwrap();
            flags.push("--mount".to_string());
            flags.push(format!(
                "type=bind,src={},dst=/etc/{name},options=rbind:ro",
                path.display()
            ));
        }
        flags
    }

    /// Kills, deletes and removes a detached container.
    fn end(&self, id: &str) -> Output {
        self.ctr(&["task", "kill", "-s", "KILL", id]);
        self.wait_for_status(id, "STOPPED");
        let deleted = self.ctr(&["task", "delete", id]);
        let removed = self.ctr(&["container", "rm", id]);
        assert!(removed.status.success(), "{}", stderr(&removed));
        deleted
    }

    /// Live (not zombie) shim processes serving this containerd.
    fn shims(&self) -> Vec<i32> {
        let address = self.dir.path().join("ctd.sock").display().to_string();
        processes_matching(&["containerd-shim-wrun-v1", &address])
    }

    fn assert_nothing_left(&self) {
        wait_until(5, "shims left", || self.shims().is_empty());
        let state = self.dir.path().display().to_string();
        assert!(
            processes_matching(&["run --bundle", &state]).is_empty(),
            "wrun processes left"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&format!("{state}/state")),
            "a task's root is still mounted"
        );
        for dir in cgroup_dirs(&self.cgroup_parent) {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.path().is_dir())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "cgroups left in {}: {left:?}",
                dir.display()
            );
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let out = self.ctr(&["task", "ls", "-q"]);
        for id in stdout(&out).lines() {
            self.ctr(&["task", "kill", "-s", "KILL", id]);
            std::thread::sleep(Duration::from_millis(100));
            self.ctr(&["task", "delete", id]);
        }
        let out = self.ctr(&["container", "ls", "-q"]);
        for id in stdout(&out).lines() {
            self.ctr(&["container", "rm", id]);
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for pid in self.shims() {
            let _ = kill(pid, libc::SIGKILL);
        }
        for dir in cgroup_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
        let root = self.dir.path().display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            if let Some(target) = line.split(' ').nth(4).filter(|t| t.starts_with(&root)) {
                let _ = Command::new("umount").args(["-l", target]).status();
            }
        }
    }
}

#[test]
fn a_wasm_image_runs_through_the_shim_with_its_output_and_exit_code() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_sample("hello", "hello:v1");
    ctd.import_sample("exit", "exit:v1");
    let out = ctd.run_wrun(&["--rm"], "docker.io/library/hello:v1", "hello-1", &[]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    let out = ctd.run_wrun(
        &["--rm"],
        "docker.io/library/exit:v1",
        "exit-1",
        &["/app.wasm", "42"],
    );
    assert_exit(&out, 42);
    ctd.assert_nothing_left();
}

#[test]
fn containerd_pulls_what_wrun_pushed_to_a_registry_and_runs_it_through_the_shim() {
    let ctd = privileged_test!(Containerd::start());
    let registry = wrun_tests::registry::Registry::plain();
    let reference = format!("{}/hello:v1", registry.host);
    let packed = ctd.wrun(&["image", "pack", s(&sample("hello")), "-t", &reference]);
    assert!(packed.status.success(), "{}", stderr(&packed));
    let pushed = ctd.wrun(&["push", &reference]);
    assert!(
        pushed.status.success(),
        "{}\n{}",
        stderr(&pushed),
        registry.log()
    );
    let pulled = ctd.ctr(&["image", "pull", "--plain-http", &reference]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let out = ctd.run_wrun(&["--rm"], &reference, "pulled-1", &[]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    ctd.assert_nothing_left();
}

#[test]
fn the_native_busybox_image_runs_through_the_same_shim() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    let out = ctd.run_wrun(
        &["--rm"],
        "docker.io/library/busybox:latest",
        "bb-1",
        &["sh", "-c", "echo native on $(hostname); exit 3"],
    );
    assert_output(&out, 3, "native on bb-1\n");
    ctd.assert_nothing_left();
}

#[test]
fn a_detached_task_is_listed_killed_and_deleted_with_its_exit_status() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    let out = ctd.run_wrun(
        &["-d"],
        "docker.io/library/busybox:latest",
        "d1",
        &["sleep", "1000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, pid) = ctd.task("d1").expect("task listed");
    assert_eq!(status, "RUNNING");
    let ps = stdout(&ctd.ctr(&["task", "ps", "d1"]));
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "{ps}"
    );
    let metrics = stdout(&ctd.ctr(&["task", "metrics", "d1"]));
    assert_contains(&metrics, "pids.current             1");
    let killed = ctd.ctr(&["task", "kill", "-s", "KILL", "d1"]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    ctd.wait_for_status("d1", "STOPPED");
    let deleted = ctd.ctr(&["task", "delete", "d1"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_contains(&stderr(&deleted), "exit code 137");
    assert!(ctd.ctr(&["container", "rm", "d1"]).status.success());
    ctd.assert_nothing_left();
}

#[test]
fn the_memory_limit_is_the_cgroups_and_is_enforced() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    let limit = (64u64 << 20).to_string();
    let out = ctd.run_wrun(
        &["-d", "--memory-limit", &limit],
        "docker.io/library/busybox:latest",
        "m1",
        &["sleep", "1000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = cgroup_dirs(&ctd.cgroup_of("m1"))
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory") || d.join("memory.max").exists())
        .expect("a memory cgroup");
    let file = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .map(|f| dir.join(f))
        .find(|f| f.exists())
        .expect("a memory limit file");
    assert_eq!(std::fs::read_to_string(file).unwrap().trim(), limit);
    ctd.end("m1");
    let out = ctd.run_wrun(
        &["--rm", "--memory-limit", &limit],
        "docker.io/library/busybox:latest",
        "m2",
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail -c 200000000 >/dev/null && echo survived",
        ],
    );
    assert!(
        !stdout(&out).contains("survived"),
        "200 MB fit under a 64 MiB limit"
    );
    assert_ne!(out.status.code(), Some(0));
    ctd.assert_nothing_left();
}

#[test]
fn a_second_run_of_an_image_uses_the_compiled_artifact() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_sample("hello", "hello:v1");
    let cache = ctd.dir.path().join("wrun/cache");
    let artifacts = || -> Vec<(PathBuf, u64)> {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| (e.path(), e.metadata().unwrap().ino()))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Packing precompiled for the CLI's engine; the shim path must reuse, not rebuild.
    let out = ctd.run_wrun(&["--rm"], "docker.io/library/hello:v1", "c1", &[]);
    assert_exit(&out, 0);
    let first = artifacts();
    assert!(
        !first.is_empty(),
        "no compiled artifact in {}",
        cache.display()
    );
    let out = ctd.run_wrun(&["--rm"], "docker.io/library/hello:v1", "c2", &[]);
    assert_exit(&out, 0);
    assert_eq!(artifacts(), first, "the second run compiled again");
    ctd.assert_nothing_left();
}

#[test]
fn events_arrive_in_lifecycle_order() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_sample("hello", "hello:v1");
    let mut events = ctd
        .ctr_cmd(&["events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = ctd.run_wrun(&["--rm"], "docker.io/library/hello:v1", "ev1", &[]);
    assert_exit(&out, 0);
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let text = stdout(&events.wait_with_output().unwrap());
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|topic| topic.starts_with("/tasks/"))
        .collect();
    assert_eq!(
        order,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{text}"
    );
    ctd.assert_nothing_left();
}

#[test]
fn a_wasm_container_and_a_native_sidecar_share_the_pods_namespaces_and_shim() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    ctd.import_sample("idle", "idle:v1");
    let (sidecar, namespaces) = ctd.run_sidecar();
    let out = ctd.run_pod_app(&namespaces);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, app) = ctd.task("app").unwrap();
    assert_eq!(status, "RUNNING");
    for kind in ["net", "ipc"] {
        let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        assert_eq!(link(sidecar), link(app), "{kind} namespace not shared");
    }
    let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(
        link(sidecar),
        link(app),
        "each container has its own PID namespace"
    );
    assert_eq!(ctd.shims().len(), 1, "one shim serves the pod");
    ctd.end("app");
    ctd.end("sidecar");
    ctd.assert_nothing_left();
}

#[test]
fn a_wasm_tcp_server_in_a_pod_answers_its_sidecar_and_a_wasm_client() {
    let ctd = privileged_test!(Containerd::start());
    let (_, [net, ipc]) = ctd.run_pod_with_kv();
    let in_pod = ["--with-ns", &net, "--with-ns", &ipc, POD[0], POD[1]];
    // No -p under containerd: the server binds its port in the pod's network namespace, and
    // the native sidecar reaches it over the pod's loopback with busybox nc.
    assert_eq!(ctd.talk_from_sidecar("SET a pod\\nGET a"), "OK\npod\n");
    // A Wasm client in the pod connects without --allow-outbound: the pod's network is the
    // one its containers use.
    let out = ctd.run_wrun(
        &[&["--rm"], &in_pod[..]].concat(),
        "docker.io/library/tcp-client:v1",
        "client",
        &["/app.wasm", "127.0.0.1:7000", "GET a"],
    );
    assert_output(&out, 0, "pod\n");
    ctd.end("kv");
    ctd.end("sidecar");
    ctd.assert_nothing_left();
}

/// A DNS server (Debian's dnsmasq) on the loopback of the network namespace of `pid`: the
/// pod's DNS, answering `kv.svc.cluster.local` with 127.0.0.1 and nothing else; killed when
/// dropped.
struct PodDns(Child);

impl PodDns {
    fn start(pid: i32) -> PodDns {
        let child = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args([
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--port=53",
                "--user=root",
                "--pid-file=",
                "--local=/svc.cluster.local/",
                "--address=/kv.svc.cluster.local/127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq (scripts/setup.sh installs dnsmasq-base)");
        let mut dns = PodDns(child);
        // Listening once `nsenter ... ss` would show it; dnsmasq binds before it logs.
        wait_until(10, "dnsmasq never listened in the pod", || {
            let listening = Command::new("nsenter")
                .arg(format!("--net=/proc/{pid}/ns/net"))
                .args(["ss", "-Hlun", "sport = :53"])
                .output()
                .is_ok_and(|out| !out.stdout.is_empty());
            if let Ok(Some(status)) = dns.0.try_wait() {
                panic!("dnsmasq ended: {status}");
            }
            listening
        });
        dns
    }
}

impl Drop for PodDns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_wasm_guest_in_a_pod_looks_names_up_with_the_pods_dns_and_hosts_file() {
    let ctd = privileged_test!(Containerd::start());
    let (sidecar, [net, ipc]) = ctd.run_pod_with_kv();
    let _dns = PodDns::start(sidecar);
    let in_pod = ["--with-ns", &net, "--with-ns", &ipc, POD[0], POD[1]];
    assert_eq!(ctd.talk_from_sidecar("SET a named"), "OK\n");
    let mounts = ctd.pod_resolver_mounts();
    let mut client = [&["--rm"], &in_pod[..]].concat();
    client.extend(mounts.iter().map(String::as_str));
    let run_client = |id: &str, address: &str| {
        let args = ["/app.wasm", address, "GET a"];
        ctd.run_wrun(&client, "docker.io/library/tcp-client:v1", id, &args)
    };
    // `kv` through the search domain to the pod's DNS server; the full name; the name only
    // the pod's hosts file has.
    assert_output(&run_client("by-search", "kv:7000"), 0, "named\n");
    assert_output(
        &run_client("by-fqdn", "kv.svc.cluster.local:7000"),
        0,
        "named\n",
    );
    assert_output(&run_client("by-hosts", "kv-by-hosts:7000"), 0, "named\n");
    // A name neither knows fails as getaddrinfo's failure does in Rust.
    let out = run_client("unknown", "nowhere:7000");
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "cannot connect to nowhere:7000");
    assert_contains(&stderr(&out), "failed to lookup address information");
    // Without the pod's files (no resolv.conf, no hosts) names do not resolve at all.
    let bare = [&["--rm"], &in_pod[..]].concat();
    let out = ctd.run_wrun(
        &bare,
        "docker.io/library/tcp-client:v1",
        "no-files",
        &["/app.wasm", "kv-by-hosts:7000", "GET a"],
    );
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "failed to lookup address information");
    ctd.end("kv");
    ctd.end("sidecar");
    ctd.assert_nothing_left();
}

#[test]
fn a_wasm_guest_in_a_pod_has_udp_sockets_of_its_own_in_the_pods_network() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    ctd.import_sample("udp-echo", "udp-echo:v1");
    let (sidecar, [net, ipc]) = ctd.run_sidecar();
    let in_pod = ["--with-ns", &net, "--with-ns", &ipc, POD[0], POD[1]];
    let echo = "docker.io/library/udp-echo:v1";
    let out = ctd.run_wrun(
        &[&["-d"], &in_pod[..]].concat(),
        echo,
        "echo",
        &["/app.wasm", "serve", "9000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A Wasm client in the pod, once the server's port is bound; by a name of the pod's
    // hosts file too.
    let mut client = [&["--rm"], &in_pod[..]].concat();
    let mounts = ctd.pod_resolver_mounts();
    client.extend(mounts.iter().map(String::as_str));
    let mut attempt = 0;
    let said = wait_for(10, "the Wasm UDP server never answered", || {
        attempt += 1;
        let id = format!("client-{attempt}");
        let args = ["/app.wasm", "send", "127.0.0.1:9000", "one", "two"];
        let out = ctd.run_wrun(&client, echo, &id, &args);
        out.status.success().then(|| stdout(&out))
    });
    assert_eq!(said, "one\ntwo\n");
    let args = ["/app.wasm", "send", "kv-by-hosts:9000", "named"];
    assert_output(&ctd.run_wrun(&client, echo, "by-name", &args), 0, "named\n");
    // A native peer in the pod's network namespace reaches the same socket.
    let native = Command::new("nsenter")
        .arg(format!("--net=/proc/{sidecar}/ns/net"))
        .args(["python3", "-c"])
        .arg(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.settimeout(5); s.sendto(b'native', ('127.0.0.1', 9000)); \
             print(s.recv(100).decode())",
        )
        .output()
        .unwrap();
    assert_output(&native, 0, "native\n");
    ctd.end("echo");
    ctd.end("sidecar");
    ctd.assert_nothing_left();
}

#[test]
fn exec_into_a_pods_native_sidecar_runs_in_it_and_a_wasm_task_refuses_it() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    ctd.import_sample("idle", "idle:v1");
    let (sidecar, namespaces) = ctd.run_sidecar();
    assert!(ctd.run_pod_app(&namespaces).status.success());
    let exec = |id: &str, exec_id: &str, args: &[&str]| {
        let base = ["task", "exec", "--exec-id", exec_id, id];
        ctd.ctr(&[&base[..], args].concat())
    };
    // In the sidecar's PID namespace (its first process is `sleep 1000`) and cgroup.
    let seen = exec(
        "sidecar",
        "e1",
        &[
            "sh",
            "-c",
            "cat /proc/1/cmdline; echo; cat /proc/self/cgroup",
        ],
    );
    assert_exit(&seen, 0);
    let text = stdout(&seen).replace('\0', " ");
    assert_contains(&text, "sleep 1000");
    let memory = |cgroups: &str| {
        cgroups
            .lines()
            .find(|l| l.contains(":memory:"))
            .map(str::to_string)
    };
    let sidecar_cgroups = std::fs::read_to_string(format!("/proc/{sidecar}/cgroup")).unwrap();
    assert_eq!(memory(&text), memory(&sidecar_cgroups));
    // The exit code, and a process that is not there, as containerd reports them.
    assert_exit(&exec("sidecar", "e2", &["sh", "-c", "exit 4"]), 4);
    let missing = exec("sidecar", "e3", &["no-such-tool"]);
    assert_ne!(missing.status.code(), Some(0));
    assert_contains(&stderr(&missing), "not found");
    // With a terminal (ctr wants one of its own: `script` gives it).
    let ctr = format!(
        "ctr -a {} task exec -t --exec-id e6 sidecar sh -c 'test -t 0 && test -t 1 && echo tty; exit 2'",
        ctd.dir.path().join("ctd.sock").display()
    );
    let tty = Command::new("script")
        .args(["-qec", &ctr, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(tty.status.code(), Some(2), "{}", stdout(&tty));
    assert_contains(&stdout(&tty), "tty");
    let refused = exec("app", "e4", &["true"]);
    assert_ne!(refused.status.code(), Some(0));
    assert_contains(&stderr(&refused), "Wasm");
    // A detached exec is signalled through the shim, and dies with its container.
    let mut held = ctd
        .ctr_cmd(&["task", "exec", "--exec-id", "e5", "sidecar", "sleep", "999"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(10, "the exec'd sleep never ran", || {
        processes_matching(&["sleep 999"]).into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\0999\0")
        })
    });
    let killed = ctd.ctr(&["task", "kill", "--exec-id", "e5", "-s", "TERM", "sidecar"]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    assert_eq!(held.wait().unwrap().code(), Some(143));
    ctd.end("app");
    ctd.end("sidecar");
    ctd.assert_nothing_left();
}

#[test]
fn a_task_survives_a_containerd_restart_and_is_still_managed() {
    let mut ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    let out = ctd.run_wrun(
        &["-d"],
        "docker.io/library/busybox:latest",
        "r1",
        &["sleep", "1000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, pid) = ctd.task("r1").unwrap();
    ctd.restart();
    assert_eq!(ctd.task("r1"), Some(("RUNNING".to_string(), pid)));
    let deleted = ctd.end("r1");
    assert_contains(&stderr(&deleted), "exit code 137");
    ctd.assert_nothing_left();
}

#[test]
fn a_bad_image_fails_create_with_wruns_reason_and_leaves_nothing() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    let out = ctd.run_wrun(
        &["--rm"],
        "docker.io/library/busybox:latest",
        "bad-1",
        &["/missing.wasm"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_contains(&stderr(&out), "missing.wasm");
    let _ = ctd.ctr(&["container", "rm", "bad-1"]);
    ctd.assert_nothing_left();
}

#[test]
fn with_a_wrun_daemon_the_shim_runs_wasm_tasks_in_pooled_sandboxes() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_sample("hello", "hello:v1");
    ctd.import_sample("idle", "idle:v1");
    let pool_parent = format!("{}-pool", ctd.cgroup_parent);
    // The daemon the shim's `wrun` finds: same configuration, so the same state root.
    let mut daemon = Command::new(wrun_bin())
        .arg("--config")
        .arg(ctd.dir.path().join("wrun.toml"))
        .args(["daemon", "--pool", "2", "--cgroup-parent", &pool_parent])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wrun daemon");
    let pooled = || -> Vec<u32> {
        children(daemon.id())
            .into_iter()
            .flat_map(children)
            .collect()
    };
    let wait_for_pool = || {
        wait_until(10, "the pool never filled", || pooled().len() >= 2);
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_for_pool();
    let ready = pooled();
    let out = ctd.run_wrun(&["--rm"], "docker.io/library/hello:v1", "p1", &[]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    assert!(
        ready
            .iter()
            .any(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
        "no pooled sandbox was claimed: {ready:?}"
    );
    wait_for_pool();
    let ready = pooled();
    let out = ctd.run_wrun(&["-d"], "docker.io/library/idle:v1", "p2", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, pid) = ctd.task("p2").expect("task listed");
    assert_eq!(status, "RUNNING");
    assert!(
        ready.contains(&(pid as u32)),
        "{pid} is not one of {ready:?}"
    );
    // In the task's cgroup, where containerd's metrics and `kill --all` look.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let task_cgroup = ctd.cgroup_of("p2");
    for controller in [":memory:", ":pids:"] {
        assert!(
            cgroups
                .lines()
                .any(|l| l.contains(controller) && l.ends_with(&task_cgroup)),
            "{cgroups}"
        );
    }
    let metrics = stdout(&ctd.ctr(&["task", "metrics", "p2"]));
    assert_contains(&metrics, "pids.current             1");
    let deleted = ctd.end("p2");
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_contains(&stderr(&deleted), "exit code 137");
    // A pod's container: the pooled sandbox joins the pod's network and IPC namespaces at
    // its claim, then holds no capability at all.
    ctd.import_busybox();
    let (sidecar, namespaces) = ctd.run_sidecar();
    wait_for_pool();
    let ready = pooled();
    let out = ctd.run_pod_app(&namespaces);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, app) = ctd.task("app").unwrap();
    assert!(
        ready.contains(&(app as u32)),
        "{app} is not one of {ready:?}"
    );
    for kind in ["net", "ipc"] {
        let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        assert_eq!(link(sidecar), link(app), "{kind} namespace not shared");
    }
    let status = std::fs::read_to_string(format!("/proc/{app}/status")).unwrap();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    ctd.end("app");
    // A TCP server in the pod: its first run compiles (standalone), the next is pooled and
    // binds in the pod's network namespace all the same.
    ctd.import_sample("tcp-kv", "tcp-kv:v1");
    ctd.import_sample("tcp-client", "tcp-client:v1");
    let resolver_mounts = ctd.pod_resolver_mounts();
    let [net, ipc] = &namespaces;
    let in_pod = ["-d", "--with-ns", net, "--with-ns", ipc, POD[0], POD[1]];
    for (round, id) in ["kv-1", "kv-2"].into_iter().enumerate() {
        wait_for_pool();
        let ready = pooled();
        let out = ctd.run_wrun(&in_pod, "docker.io/library/tcp-kv:v1", id, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let said = ctd.talk_from_sidecar(&format!("SET r {id}\\nGET r"));
        assert_eq!(said, format!("OK\n{id}\n"));
        let (_, pid) = ctd.task(id).unwrap();
        if round == 1 {
            assert!(
                ready.contains(&(pid as u32)),
                "{pid} is not one of {ready:?}"
            );
        }
        // A client in the pod finds it by the name the pod's hosts file gives: the claim
        // carries the pod's resolver files to the pooled sandbox.
        wait_for_pool();
        let ready = pooled();
        let mut client = vec!["--rm", "--with-ns", net.as_str(), "--with-ns", ipc.as_str()];
        client.extend(POD);
        client.extend(resolver_mounts.iter().map(String::as_str));
        let args = ["/app.wasm", "kv-by-hosts:7000", "GET r"];
        let out = ctd.run_wrun(&client, "docker.io/library/tcp-client:v1", "c", &args);
        assert_output(&out, 0, &format!("{id}\n"));
        if round == 1 {
            assert!(
                ready
                    .iter()
                    .any(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
                "the client claimed none of {ready:?}"
            );
        }
        ctd.end(id);
    }
    ctd.end("sidecar");
    ctd.assert_nothing_left();
    let _ = kill(daemon.id() as i32, libc::SIGTERM);
    let _ = daemon.wait();
    wait_until(5, "pool cgroups left", || {
        !(cgroup_dirs(&pool_parent).iter().any(|d| {
            std::fs::read_dir(d)
                .is_ok_and(|mut entries| entries.any(|e| e.unwrap().path().is_dir()))
        }))
    });
    for dir in cgroup_dirs(&pool_parent) {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn containerds_runc_shim_drives_wrun_as_its_runtime_binary_wasm_and_native() {
    let ctd = privileged_test!(Containerd::start());
    ctd.import_busybox();
    ctd.import_sample("hello", "hello:v1");
    let runc_root = ctd.dir.path().join("runc");
    let wrun = wrun_bin();
    // As containerd's own runc.v2 shim runs runc: `create`, `start`, `state`, `kill`, `delete`.
    let through_runc_shim = |image: &str, id: &str, args: &[&str]| {
        let cgroup = ctd.cgroup_of(id);
        let mut all = vec!["run", "--rm", "--runtime", "io.containerd.runc.v2"];
        all.extend(["--runc-binary", s(&wrun), "--runc-root", s(&runc_root)]);
        all.extend(["--cgroup", &cgroup, image, id]);
        all.extend(args);
        ctd.ctr(&all)
    };
    let script = "echo native via runc.v2 on $(hostname); exit 3";
    let out = through_runc_shim(
        "docker.io/library/busybox:latest",
        "oci-1",
        &["sh", "-c", script],
    );
    assert_output(&out, 3, "native via runc.v2 on oci-1\n");
    let out = through_runc_shim("docker.io/library/hello:v1", "oci-2", &[]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    wait_until(5, "runc shims left", || {
        processes_matching(&["containerd-shim-runc-v2", s(ctd.dir.path())]).is_empty()
    });
    // wrun kept them under the root the shim gave it, and deleted them.
    let containers = std::fs::read_dir(runc_root.join("default/oci")).expect("wrun's state");
    assert_eq!(
        containers.count(),
        0,
        "containers left in the runtime's state"
    );
    ctd.assert_nothing_left();
}
