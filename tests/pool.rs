//! The warm pool: `wrun daemon` with real pooled sandboxes, and `wrun run` handing its
//! workload to them (or running standalone when they cannot take it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wrun_tests::*;

/// A daemon serving `world`'s state root, with the world's cgroup parent.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(world: &World, pool: usize) -> Daemon {
        Daemon::start_with(world, pool, &[])
    }

    /// With the timeline on: each pooled sandbox's marks go to its client's stderr.
    fn start_timed(world: &World, pool: usize) -> Daemon {
        Daemon::start_with(world, pool, &[("WRUN_TIMINGS", "1")])
    }

    fn start_with(world: &World, pool: usize, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_binary(wrun_bin(), world, pool, env)
    }

    /// A daemon of `wrun-hooked` whose pooled sandboxes make `call` right after their
    /// claim's filter (see the escape suite).
    fn start_hooked(world: &World, call: &str) -> Daemon {
        let env = [("WRUN_TEST_SYSCALL", call)];
        Daemon::start_binary(wrun_hooked_bin(), world, 1, &env)
    }

    fn start_binary(bin: PathBuf, world: &World, pool: usize, env: &[(&str, &str)]) -> Daemon {
        let child = Command::new(bin)
            .envs(env.iter().copied())
            .arg("--root")
            .arg(world.root.path())
            .args(["daemon", "--pool", &pool.to_string(), "--cgroup-parent"])
            .arg(&world.cgroup_parent)
            .stdin(Stdio::null())
            // Kept: pooled sandboxes hold it until their claim (see the warm-up test).
            .stdout(File::create(world.root.path().join("daemon.stdout")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wrun daemon");
        let daemon = Daemon {
            child,
            socket: world.root.path().join("daemon.sock"),
        };
        daemon.wait_for_pool(pool);
        daemon
    }

    /// Waits until `size` sandboxes are ready (each supervisor has its sandbox child).
    fn wait_for_pool(&self, size: usize) {
        wait_until(10, "the pool never filled", || {
            self.socket.exists() && self.ready_sandboxes() >= size
        });
        // The last one's "ready" crosses two sockets after its process exists.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Pooled sandboxes: the grandchildren of the daemon.
    fn ready_sandboxes(&self) -> usize {
        self.ready_pids().len()
    }

    /// The pooled sandboxes' PIDs (the supervisors' children).
    fn ready_pids(&self) -> Vec<u32> {
        self.supervisors().into_iter().flat_map(children).collect()
    }

    fn supervisors(&self) -> Vec<u32> {
        children(self.child.id())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill(self.child.id() as i32, libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Runs with the timeline on, so the test can tell which path ran; the timeline is not
/// part of the output compared.
fn run_timed(world: &World, args: &[&str]) -> (Output, bool) {
    let out = world
        .run_cmd(args)
        .env("WRUN_TIMINGS", "1")
        .output()
        .expect("spawn wrun");
    let pooled = stderr(&out).contains("pool: finished");
    let kept: String = stderr(&out)
        .lines()
        .filter(|l| !l.starts_with("wrun-timing"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = Output {
        status: out.status,
        stdout: out.stdout,
        stderr: kept.into_bytes(),
    };
    (out, pooled)
}

/// The run cgroups under the world's parent, by name (one per sandbox, in every hierarchy).
fn sandbox_cgroups(world: &World) -> usize {
    let mut names: Vec<_> = world
        .live_cgroups()
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names.len()
}

#[test]
fn a_pooled_run_behaves_like_a_standalone_one() {
    let pooled_world = privileged_test!(World::new());
    let daemon = Daemon::start(&pooled_world, 2);
    let standalone_world = World::new();
    let cases: Vec<Vec<String>> = vec![
        vec![s(&sample("hello")).into()],
        vec![s(&sample("hello.component")).into()],
        vec![s(&sample("exit")).into(), "42".into()],
        vec![
            "-e".into(),
            "A=1".into(),
            s(&sample("echo")).into(),
            "x".into(),
            "y z".into(),
        ],
        vec![
            "--timeout".into(),
            "300ms".into(),
            s(&sample("spin")).into(),
        ],
        vec!["--memory".into(), "16m".into(), s(&sample("hog")).into()],
        vec![
            s(&sample("escape")).into(),
            "read".into(),
            "/etc/passwd".into(),
        ],
    ];
    for case in &cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let (pooled, was_pooled) = run_timed(&pooled_world, &args);
        let (standalone, was_standalone_pooled) = run_timed(&standalone_world, &args);
        assert!(
            was_pooled,
            "{args:?} did not run in the pool: {}",
            stderr(&pooled)
        );
        assert!(!was_standalone_pooled);
        assert_eq!(pooled.status.code(), standalone.status.code(), "{args:?}");
        assert_eq!(stdout(&pooled), stdout(&standalone), "{args:?}");
        assert_eq!(stderr(&pooled), stderr(&standalone), "{args:?}");
        daemon.wait_for_pool(2);
    }
    // Stop signals reach the workload as they do standalone.
    for world in [&pooled_world, &standalone_world] {
        let mut client = world.run_cmd(&[s(&sample("spin"))]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        kill(client.id() as i32, libc::SIGTERM);
        let status = client.wait().unwrap();
        assert_eq!(status.code(), Some(143), "a stopped spin");
    }
    daemon.wait_for_pool(2);
    // Directories: attached to the pooled sandbox's root with the same flags and limits.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "from the host\n").unwrap();
    let rw = format!("{}::/d", data.path().display());
    let ro = format!("{}::/d:ro", data.path().display());
    let (cat, escape, hello) = (sample("cat"), sample("escape"), sample("hello"));
    // The first case writes /d/out.txt: both paths must write the same.
    let dir_cases: Vec<Vec<&str>> = vec![
        vec!["--dir", &rw, s(&cat), "-o", "/d/out.txt", "/d/in.txt"],
        vec!["--dir", &ro, s(&cat), "-o", "/d/new.txt", "/d/in.txt"],
        vec!["--dir", &rw, s(&escape), "read", "/d/../../etc/passwd"],
        vec!["--dir", &ro, s(&escape), "write", "/d/in.txt"],
        vec!["--dir", &rw, s(&escape), "tour", "/d"],
    ];
    for args in &dir_cases {
        let _ = std::fs::remove_file(data.path().join("out.txt"));
        let (pooled, was_pooled) = run_timed(&pooled_world, args);
        let written = std::fs::read_to_string(data.path().join("out.txt")).ok();
        let _ = std::fs::remove_file(data.path().join("out.txt"));
        let (standalone, _) = run_timed(&standalone_world, args);
        let written_standalone = std::fs::read_to_string(data.path().join("out.txt")).ok();
        assert_eq!(written, written_standalone, "{args:?}");
        assert!(
            was_pooled,
            "{args:?} did not run in the pool: {}",
            stderr(&pooled)
        );
        assert_eq!(pooled.status.code(), standalone.status.code(), "{args:?}");
        assert_eq!(stdout(&pooled), stdout(&standalone), "{args:?}");
        assert_eq!(stderr(&pooled), stderr(&standalone), "{args:?}");
        daemon.wait_for_pool(2);
    }
    assert!(!data.path().join("new.txt").exists());
    // More directories than a pooled sandbox has mount points for: standalone, same result.
    let many: Vec<String> = (0..9)
        .map(|n| format!("{}::/d{n}:ro", data.path().display()))
        .collect();
    let mut args: Vec<&str> = many.iter().flat_map(|d| ["--dir", d.as_str()]).collect();
    args.push(s(&hello));
    let (out, pooled) = run_timed(&pooled_world, &args);
    assert!(!pooled);
    assert_exit(&out, 0);
    // Bad input gets the standalone path's one-line errors.
    let out = pooled_world.run(&["/missing.wasm"]);
    assert_one_line_error(&out, 127, "/missing.wasm");
    drop(daemon);
    pooled_world.assert_nothing_left();
    standalone_world.assert_nothing_left();
}

#[test]
fn pooled_sandboxes_are_single_use() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let secret = tempfile::NamedTempFile::new().unwrap();
    let mut served = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let before = daemon.supervisors();
        let out = world
            .run_cmd(&["--verbose", s(&sample("hello"))])
            .stdin(std::fs::File::open(secret.path()).unwrap())
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let id = stderr(&out)
            .split("id=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(String::from)
            .unwrap_or_else(|| panic!("no pooled sandbox took the run: {}", stderr(&out)));
        ids.push(id);
        daemon.wait_for_pool(2);
        let after = daemon.supervisors();
        served.extend(before.into_iter().filter(|pid| !after.contains(pid)));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "a sandbox served twice: {ids:?}");
    assert_eq!(served.len(), 3, "each claim ends its sandbox");
    for pid in served {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} lives on"
        );
    }
    // No pooled process holds the descriptor an earlier workload was given.
    for pid in processes_of(world.root.path()) {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert_ne!(
                target,
                secret.path(),
                "{pid} holds the first workload's stdin"
            );
        }
    }
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

#[test]
fn pooled_sandboxes_are_in_cgroups_of_their_own_and_their_guests_hold_no_host_directory() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let mut client = world.run_cmd(&[s(&sample("spin"))]).spawn().unwrap();
    // Two ready again, and the claimed one running its guest.
    daemon.wait_for_pool(3);
    std::thread::sleep(Duration::from_millis(300));
    let sandboxes = daemon.ready_pids();
    assert_eq!(sandboxes.len(), 3, "{sandboxes:?}");
    let busy = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or_default();
        // utime, in clock ticks: the 14th field, the 12th after the name.
        let utime: u64 = after_name
            .split_whitespace()
            .nth(11)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        utime >= 10
    };
    assert_eq!(
        sandboxes.iter().filter(|&&pid| busy(pid)).count(),
        1,
        "one guest spinning"
    );
    let hierarchies = cgroup_dirs(&world.cgroup_parent).len();
    let under_parent = format!("/{}/", world.cgroup_parent);
    let mut seen = Vec::new();
    for pid in sandboxes {
        // Single-threaded, as moving itself (one thread) into a cgroup v1 needs.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count();
        assert_eq!(threads, 1, "sandbox {pid}");
        // A ready sandbox keeps the cgroup hierarchies it moves itself in with (v1) until its
        // claim, for a claim placing it in a cgroup of its own; its guest never holds them.
        let directories = directory_descriptors(pid);
        if busy(pid) {
            assert_eq!(directories, Vec::<String>::new(), "claimed sandbox {pid}");
        } else {
            assert!(
                directories.iter().all(|dir| dir == "/sys/fs/cgroup"),
                "ready sandbox {pid}: {directories:?}"
            );
        }
        let mut own: Vec<String> = cgroups_of(pid)
            .into_iter()
            .map(|(_, path)| path)
            .filter(|path| path.starts_with(&under_parent))
            .collect();
        assert_eq!(own.len(), hierarchies, "sandbox {pid} in {own:?}");
        own.dedup();
        assert_eq!(own.len(), 1, "sandbox {pid} in different cgroups: {own:?}");
        seen.push(own.remove(0));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "sandboxes sharing a cgroup: {seen:?}");
    client.kill().unwrap();
    let _ = client.wait();
    drop(daemon);
    world.assert_nothing_left();
}

#[test]
fn the_pool_survives_crashes_departures_and_a_crowd() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 4);
    // A pooled sandbox that crashes is replaced.
    let supervisor = daemon.supervisors()[0];
    let sandbox = children(supervisor)[0];
    kill(sandbox as i32, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    daemon.wait_for_pool(4);
    assert!(!daemon.supervisors().contains(&supervisor));
    let (out, pooled) = run_timed(&world, &[s(&sample("hello"))]);
    assert!(pooled && out.status.success(), "{}", stderr(&out));

    // A client that goes away takes its workload with it.
    daemon.wait_for_pool(4);
    let mut client = world.run_cmd(&[s(&sample("spin"))]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sandbox_cgroups(&world), 5, "four ready and the workload's");
    client.kill().unwrap();
    client.wait().unwrap();
    daemon.wait_for_pool(4);
    wait_until(5, "the workload outlived its client", || {
        sandbox_cgroups(&world) <= 4
    });

    // 200 claims at once on a pool of 4: the excess runs standalone; all succeed.
    let crowd: Vec<Child> = (0..200)
        .map(|_| world.spawn_run(&[s(&sample("hello"))]))
        .collect();
    for child in crowd {
        let out = child.wait_with_output().unwrap();
        assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    }
    daemon.wait_for_pool(4);
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

/// The run records in `world`'s state root: name, inode and text, by name.
fn record_files(world: &World) -> Vec<(String, u64, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut records: Vec<_> = std::fs::read_dir(world.root.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let inode = entry.metadata().unwrap().ino();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            (name, inode, text)
        })
        .collect();
    records.sort();
    records
}

/// Asserts that every record is a pool's slot, free or naming a cgroup that exists.
fn assert_slots_name_live_cgroups(world: &World, records: &[(String, u64, String)]) {
    let live = world.live_cgroups();
    for (name, _, text) in records {
        assert!(
            name.starts_with(".slot-") && name.ends_with(".lock"),
            "{name}"
        );
        for cgroup in text.lines() {
            assert!(
                live.iter().any(|dir| dir.ends_with(cgroup)),
                "{name} names {cgroup}, which is gone; live: {live:?}"
            );
        }
    }
}

#[test]
fn pooled_runs_are_recorded_in_reusable_records_that_a_sweep_removes_once_free() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let first = record_files(&world);
    assert_eq!(first.len(), 2, "one per ready sandbox: {first:?}");
    assert!(first.iter().all(|(_, _, text)| !text.is_empty()));
    assert_slots_name_live_cgroups(&world, &first);
    for _ in 0..8 {
        let (out, pooled) = run_timed(&world, &[s(&sample("hello"))]);
        assert!(pooled && out.status.success(), "{}", stderr(&out));
        daemon.wait_for_pool(2);
        wait_until(5, "a claimed supervisor outlived its run", || {
            daemon.supervisors().len() == 2
        });
    }
    let after = record_files(&world);
    assert_slots_name_live_cgroups(&world, &after);
    // Eight runs, and no file made for any but the first claimed (the refill comes before
    // the claimed supervisor has ended): the same files, emptied and taken again.
    assert!(after.len() <= 3, "{after:?}");
    let busy: Vec<_> = after
        .iter()
        .filter(|(_, _, text)| !text.is_empty())
        .collect();
    assert_eq!(busy.len(), 2, "held by the two ready sandboxes: {after:?}");
    for (name, inode, _) in &first {
        let kept = after.iter().find(|(other, _, _)| other == name);
        assert_eq!(kept.map(|(_, kept, _)| kept), Some(inode), "{name}");
    }
    drop(daemon);
    wait_until(5, "pooled processes outlived the daemon", || {
        processes_of(world.root.path()).is_empty()
    });
    // The next command sweeps: no file is left, free slots included.
    assert_exit(&world.run(&[s(&sample("hello"))]), 0);
    assert_eq!(record_files(&world), Vec::new());
    world.assert_nothing_left();
}

#[test]
fn killing_the_daemon_leaves_nothing_once_the_next_command_runs() {
    let world = privileged_test!(World::new());
    let mut daemon = Daemon::start(&world, 3);
    // A run already handed out is the client's: it outlives the daemon.
    let claimed = world
        .run_cmd(&["--timeout", "1s", s(&sample("spin"))])
        .env("WRUN_TIMINGS", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let out = claimed.wait_with_output().unwrap();
    assert_exit(&out, 124);
    assert_contains(&stderr(&out), "pool: finished");
    wait_until(5, "pooled sandboxes outlived the daemon", || {
        processes_of(world.root.path()).is_empty()
    });
    // The socket is left, but nothing answers: the run goes standalone and sweeps.
    let (out, pooled) = run_timed(&world, &[s(&sample("hello"))]);
    assert!(!pooled);
    assert_exit(&out, 0);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

#[test]
fn one_daemon_per_root_and_only_its_owner_may_connect() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&daemon.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let second = world.wrun(&["daemon", "--pool", "1"]);
    assert_one_line_error(&second, 125, "a wrun daemon is already serving");
    let bad = world.wrun(&["daemon", "--pool", "0"]);
    assert_ne!(bad.status.code(), Some(0));
    drop(daemon);
    assert!(
        !world.root.path().join("daemon.sock").exists(),
        "socket left after SIGTERM"
    );
    world.assert_nothing_left();
}

#[test]
fn a_detached_container_runs_in_the_pool_like_a_standalone_one() {
    let pooled_world = privileged_test!(World::new());
    let daemon = Daemon::start(&pooled_world, 2);
    let standalone_world = World::new();
    let mut codes = Vec::new();
    for world in [&pooled_world, &standalone_world] {
        let out = world.run(&["-d", "--name", "idle", s(&sample("idle"))]);
        assert_exit(&out, 0);
        let id = stdout(&out).trim().to_string();
        std::thread::sleep(Duration::from_millis(300));
        let ps = world.wrun(&["ps"]);
        assert_contains(&stdout(&ps), "Up");
        let logs = world.wrun(&["logs", "idle"]);
        assert_eq!(stdout(&logs), "idle ready\n");
        let inspect = stdout(&world.wrun(&["inspect", "idle"]));
        let cgroup_is_the_containers = inspect.contains(&format!("/{id}\""));
        // The pooled sandbox's cgroup is named after the sandbox, made before the container.
        assert_eq!(
            cgroup_is_the_containers,
            std::ptr::eq(world, &standalone_world),
            "{inspect}"
        );
        let started = Instant::now();
        assert!(world.wrun(&["stop", "idle"]).status.success());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stop waited for the kill"
        );
        let inspect = stdout(&world.wrun(&["inspect", "idle"]));
        let code = inspect
            .split("\"ExitCode\": ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .map(String::from);
        codes.push(code);
        assert!(world.wrun(&["rm", "idle"]).status.success());
        let out = world.run(&["-d", "--name", "exits", s(&sample("exit")), "42"]);
        assert_exit(&out, 0);
        wait_until(5, "no exit code 42 recorded", || {
            stdout(&world.wrun(&["inspect", "exits"])).contains("\"ExitCode\": 42")
        });
        assert!(world.wrun(&["rm", "exits"]).status.success());
    }
    assert_eq!(codes[0], codes[1], "stop ends both the same way");
    assert!(codes[0].is_some());
    drop(daemon);
    pooled_world.assert_nothing_left();
    standalone_world.assert_nothing_left();
    assert_eq!(pooled_world.run_records(), Vec::<String>::new());
}

#[test]
fn a_published_port_is_served_from_the_pool() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let port = port(1);
    let publish = format!("127.0.0.1:{port}:8080");
    let frontend = sample("frontend-app");
    let out = world.run(&[
        "-d",
        "--name",
        "web",
        "-e",
        "REPLICA=web-1",
        "-p",
        &publish,
        "--request-timeout",
        "300ms",
        s(&frontend),
    ]);
    assert_exit(&out, 0);
    let id = stdout(&out).trim().to_string();
    let (status, body) = wait_for(10, "never served", || http_get(port, "/api/info").ok());
    assert_eq!(status, 200);
    assert_contains(&body, "\"replica\":\"web-1\"");
    assert_eq!(http_get(port, "/trap").unwrap().0, 500);
    assert_eq!(http_get(port, "/spin").unwrap().0, 503);
    assert_eq!(http_get(port, "/api/info").unwrap().0, 200);
    let inspect = stdout(&world.wrun(&["inspect", "web"]));
    assert!(
        !inspect.contains(&format!("/{id}\"")),
        "not pooled: {inspect}"
    );
    assert!(world.wrun(&["stop", "web"]).status.success());
    assert!(http_get(port, "/").is_err(), "still accepting after stop");
    let inspect = stdout(&world.wrun(&["inspect", "web"]));
    assert_contains(&inspect, "\"ExitCode\": 0");
    assert!(world.wrun(&["rm", "web"]).status.success());
    // Neither a handler nor a component with sockets: the standalone path's error, from the
    // pooled sandbox.
    daemon.wait_for_pool(2);
    let cannot_listen = fixture("not-a-command.wat");
    let (out, pooled) = run_timed(&world, &["-p", &publish, s(&cannot_listen)]);
    assert!(pooled, "{}", stderr(&out));
    assert_one_line_error(&out, 126, "cannot listen on published ports (-p)");
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

#[test]
fn one_ready_supervisor_holds_the_pools_socket_and_no_sandbox_ever_does() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    daemon.wait_for_pool(2);
    let listener = listening_socket_inode(&daemon.socket).expect("the daemon's socket");
    let holding = |pids: Vec<u32>| -> Vec<u32> {
        pids.into_iter()
            .filter(|pid| socket_inodes(*pid).contains(&listener))
            .collect()
    };
    assert_eq!(holding(daemon.supervisors()).len(), 1, "lent to one");
    assert_eq!(holding(daemon.ready_pids()), Vec::<u32>::new());
    let holder = holding(daemon.supervisors())[0];
    let (out, pooled) = run_timed(&world, &[s(&sample("hello"))]);
    assert!(pooled, "{}", stderr(&out));
    assert!(out.status.success(), "{}", stderr(&out));
    // The one that took the client gave the socket back, and the next holds it.
    daemon.wait_for_pool(2);
    wait_until(10, "the socket was not lent again", || {
        let now = holding(daemon.supervisors());
        now.len() == 1 && now[0] != holder
    });
    assert_eq!(holding(daemon.ready_pids()), Vec::<u32>::new());
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

#[test]
fn a_stopped_daemon_costs_a_one_line_error_not_a_hang() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 1);
    // The ready sandbox holds the pool's socket: its client waits on nothing of the daemon's.
    daemon.wait_for_pool(1);
    kill(daemon.child.id() as i32, libc::SIGSTOP);
    let (out, pooled) = run_timed(&world, &[s(&sample("hello"))]);
    assert!(pooled, "{}", stderr(&out));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_contains(&stdout(&out), "Hello");
    // The next finds no sandbox holding it, and a stopped daemon lends it to none.
    let out_path = world.root.path().join("client.out");
    let err_path = world.root.path().join("client.err");
    let started = Instant::now();
    let status = world
        .run_cmd(&[s(&sample("hello"))])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    let waited = started.elapsed();
    kill(daemon.child.id() as i32, libc::SIGCONT);
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_contains(&err, "did not answer");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    // Once the daemon goes on, the abandoned claim finds its caller gone and never runs.
    std::thread::sleep(Duration::from_millis(500));
    daemon.wait_for_pool(1);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "");
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

#[test]
fn a_recent_module_is_mapped_ahead_and_a_changed_file_is_not_mistaken_for_it() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start_timed(&world, 1);
    let hello = sample("hello");
    let run = |args: &[&str]| {
        let claimed = daemon.supervisors();
        let out = world.run_cmd(args).output().expect("spawn wrun");
        // The sandbox that took the run is gone and replaced by one made after it.
        wait_until(10, "no refill", || {
            !daemon.supervisors().iter().any(|p| claimed.contains(p))
        });
        daemon.wait_for_pool(1);
        out
    };
    let first = run(&[s(&hello)]);
    assert_contains(&stderr(&first), "pool: module mapped\n");
    // The sandbox that replaced the first one was started at once, before the first claim
    // said what it ran; the one after it knows. The sample has not changed for seconds: its
    // file is recognised without being read.
    run(&[s(&hello)]);
    let again = run(&[s(&hello)]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again), stdout(&first));
    assert_contains(
        &stderr(&again),
        "pool: module mapped ahead, file recognised",
    );
    // A new file with the same bytes: resolved afresh, then the same artifact, mapped ahead.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("m.wasm");
    std::fs::copy(&hello, &copy).unwrap();
    let same_bytes = run(&[s(&copy)]);
    assert_eq!(stdout(&same_bytes), stdout(&first));
    assert!(stderr(&same_bytes).contains("pool: module mapped ahead\n"));
    // The same path rewritten with another module: never the program mapped for the old bytes.
    std::fs::copy(sample("exit"), &copy).unwrap();
    let rewritten = run(&[s(&copy), "42"]);
    assert_exit(&rewritten, 42);
    assert!(!stdout(&rewritten).contains("Hello"));
    assert_contains(&stderr(&rewritten), "pool: module mapped\n");
    // Both are recent now: the rewritten file's artifact is mapped ahead in the sandbox after
    // the next.
    run(&[s(&copy), "7"]);
    let rewritten_again = run(&[s(&copy), "7"]);
    assert_eq!(rewritten_again.status.code(), Some(7));
    assert!(stderr(&rewritten_again).contains("pool: module mapped ahead"));
}

#[test]
fn outbound_requests_go_through_the_callers_broker_from_the_pool() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 1);
    // A host-side upstream: reachable only through the broker the caller starts in the
    // host's network namespace (the pooled sandbox has its own).
    let upstream = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut client in upstream.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut client, &mut request);
            let _ = std::io::Write::write_all(
                &mut client,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            );
        }
    });
    let port = port(2);
    let allowed = format!("127.0.0.1:{upstream_port}");
    let out = world.run(&[
        "-d",
        "--name",
        "out",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "--allow-outbound",
        &allowed,
        s(&sample("frontend-app")),
    ]);
    assert_exit(&out, 0);
    let id = stdout(&out).trim().to_string();
    wait_until(10, "never served", || http_get(port, "/api/info").is_ok());
    let inspect = stdout(&world.wrun(&["inspect", "out"]));
    assert!(
        !inspect.contains(&format!("/{id}\"")),
        "not pooled: {inspect}"
    );
    let (status, body) = http_get(port, &format!("/outbound?to={allowed}")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_contains(&body, "answered 200: hi");
    let other = format!("127.0.0.1:{}", upstream_port.wrapping_add(1));
    let (_, body) = http_get(port, &format!("/outbound?to={other}")).unwrap();
    assert_contains(&body, "HttpRequestDenied");
    assert!(world.wrun(&["stop", "out"]).status.success());
    assert!(world.wrun(&["rm", "out"]).status.success());
    drop(daemon);
    world.assert_nothing_left();
    assert!(
        processes_of(world.root.path()).is_empty(),
        "a broker or sandbox outlived its container"
    );
}

#[test]
fn plain_tcp_guests_listen_and_connect_from_the_pool() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let port = port(3);
    start_pooled_server(&world, "kv", port, "tcp-kv");
    // A pooled client, through the broker its caller started, talks to the pooled server.
    daemon.wait_for_pool(2);
    let target = format!("127.0.0.1:{port}");
    let client = sample("tcp-client");
    let talk = |rules: &[&str]| {
        let mut args = rules.to_vec();
        args.extend([s(&client), target.as_str(), "SET pool yes", "GET pool"]);
        wait_for(10, "the pool never took the run", || {
            let (out, pooled) = run_timed(&world, &args);
            pooled.then_some(out)
        })
    };
    let out = wait_for(10, "never served", || {
        Some(talk(&["--allow-outbound", &target])).filter(|out| out.status.success())
    });
    assert_output(&out, 0, "OK\nyes\n");
    daemon.wait_for_pool(2);
    let out = talk(&[]);
    assert_exit(&out, 1);
    assert_contains(&stderr(&out), "Permission denied");
    assert!(world.wrun(&["rm", "-f", "kv"]).status.success());
    // A preview-1 server gets its listener pre-opened in the pooled sandbox too.
    daemon.wait_for_pool(2);
    let p1_port = wrun_tests::port(4);
    start_pooled_server(&world, "kv-p1", p1_port, "tcp-kv.p1");
    let answers = wait_for(10, "the preview-1 server never answered", || {
        kv_exchange(p1_port, "SET p1 pooled\nGET p1\n", 2).ok()
    });
    assert_eq!(answers, "OK\npooled\n");
    assert!(world.wrun(&["rm", "-f", "kv-p1"]).status.success());
    drop(daemon);
    world.assert_nothing_left();
    assert!(
        processes_of(world.root.path()).is_empty(),
        "a broker or sandbox outlived its container"
    );
}

/// Starts `sample` detached as `name`, publishing guest port 7000 on `port`, and checks that
/// a pooled sandbox took it.
fn start_pooled_server(world: &World, name: &str, port: u16, sample_name: &str) {
    let publish = format!("127.0.0.1:{port}:7000");
    let out = world.run(&[
        "-d",
        "--name",
        name,
        "-p",
        &publish,
        s(&sample(sample_name)),
    ]);
    assert_exit(&out, 0);
    let id = stdout(&out).trim().to_string();
    let inspect = stdout(&world.wrun(&["inspect", name]));
    assert!(
        !inspect.contains(&format!("/{id}\"")),
        "not pooled: {inspect}"
    );
}

/// Sends `lines` to the key-value sample on `port` and reads `answers` lines back.
fn kv_exchange(port: u16, lines: &str, answers: usize) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(lines.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut read = String::new();
    for _ in 0..answers {
        if reader.read_line(&mut read)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(read)
}

#[test]
fn pooled_runs_do_not_share_their_randomness() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..4 {
        let (out, pooled) = run_timed(&world, &[s(&sample("escape")), "random"]);
        assert!(pooled, "not pooled: {}", stderr(&out));
        assert_exit(&out, 0);
        let bytes = stdout(&out).trim().to_string();
        assert_eq!(bytes.len(), 32, "{bytes}");
        // Sandboxes forked from one daemon must not inherit one generator's state.
        assert!(!seen.contains(&bytes), "random bytes repeated: {bytes}");
        seen.push(bytes);
        daemon.wait_for_pool(2);
    }
}

#[test]
fn a_ready_sandboxs_warm_up_writes_nothing_anywhere_and_its_run_is_its_own() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    for _ in 0..2 {
        let (out, pooled) = run_timed(&world, &[s(&sample("hello"))]);
        assert!(pooled, "not pooled: {}", stderr(&out));
        assert_exit(&out, 0);
        assert_eq!(
            stdout(&out),
            "Hello from WebAssembly in a wrun sandbox!\n",
            "only the workload's output"
        );
        daemon.wait_for_pool(2);
    }
    // Each sandbox ran the warm-up guest (its fd_write included) before it was ready, with
    // the daemon's stdout as its own: none of it reached a real descriptor.
    let daemon_stdout = std::fs::read_to_string(world.root.path().join("daemon.stdout")).unwrap();
    assert_eq!(daemon_stdout, "", "the daemon's stdout");
}

#[test]
fn a_handed_over_run_is_held_at_its_gate_in_the_cgroup_it_asked_for() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let handoff = Handoff::in_dir(world.root.path());
    let Handoff {
        gate,
        pid_file,
        out,
    } = &handoff;
    let hello = sample("hello");
    // Not compiled yet: a held claim does not compile (the caller's wait for the PID is
    // bounded), so this one runs standalone, and caches the code for the next.
    let ready: Vec<u32> = daemon.ready_pids();
    let first = world
        .run_cmd(&["--id", "task-0", "--pid-file", s(pid_file), s(&hello)])
        .output()
        .expect("wrun");
    assert_exit(&first, 0);
    assert_eq!(
        stdout(&first),
        "Hello from WebAssembly in a wrun sandbox!\n"
    );
    let pid: u32 = std::fs::read_to_string(pid_file).unwrap().parse().unwrap();
    assert!(
        !ready.contains(&pid),
        "a module not compiled yet was pooled"
    );
    std::fs::remove_file(pid_file).unwrap();
    let ready: Vec<u32> = daemon.ready_pids();
    let child = world
        .run_cmd(&[handoff.args("task-1"), vec!["--memory", "64m", s(&hello)]].concat())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wrun");
    let pid = pooled_pid(pid_file, &ready);
    // Held: moved into the run's own cgroup with its limit, in every hierarchy the pool's
    // was in (on v1 the sandbox moves itself), the guest not yet run.
    let task_cgroup = format!("{}/task-1", world.cgroup_parent);
    let cgroups = cgroups_of(pid);
    let in_task_cgroup = cgroups
        .iter()
        .filter(|(_, path)| path.ends_with(&task_cgroup))
        .count();
    assert_eq!(
        in_task_cgroup,
        cgroup_dirs(&world.cgroup_parent).len(),
        "{cgroups:?}"
    );
    let limit = Path::new("/sys/fs/cgroup/memory")
        .join(&task_cgroup)
        .join("memory.limit_in_bytes");
    let limit: u64 = std::fs::read_to_string(limit)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((64 << 20..1 << 40).contains(&limit), "limit {limit}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(out).unwrap_or_default(), "");
    handoff.start_and_expect(child, "Hello from WebAssembly in a wrun sandbox!\n");
    // Answered only once the run's cgroup is gone, so the caller may reuse its path at once.
    assert!(
        !Path::new("/sys/fs/cgroup/memory")
            .join(&task_cgroup)
            .exists(),
        "the run's cgroup outlived its answer"
    );
    // Closing the gate instead: abandoned as on the standalone path, nothing of it left.
    std::fs::remove_file(pid_file).unwrap();
    daemon.wait_for_pool(2);
    let ready: Vec<u32> = daemon.ready_pids();
    let child =
        world.spawn_run(&[vec!["--id", "task-2"], handoff.held_args(), vec![s(&hello)]].concat());
    let pid = pooled_pid(pid_file, &ready);
    drop(std::fs::OpenOptions::new().write(true).open(gate));
    let output = child.wait_with_output().expect("wait");
    assert_one_line_error(&output, 125, "abandoned before it started");
    assert_eq!(stdout(&output), "");
    wait_until(5, "sandbox left", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

/// A Wasm OCI bundle (runc's default spec) running `module`, in the network namespace at
/// `netns`.
/// The escape suite's forbidden calls, made by a pooled sandbox right after its claim's
/// filter: its waiting filter and the claim's narrowing one, stacked, refuse each as a
/// standalone sandbox's one filter does (`sandbox/claim_filter.rs`).
#[test]
fn forbidden_calls_fail_in_a_pooled_sandbox_as_in_a_standalone_one() {
    let world = privileged_test!(World::new());
    let refused = FORBIDDEN_CALLS.iter().map(|call| (call, libc::EPERM));
    let unimplemented = UNIMPLEMENTED_CALLS.iter().map(|call| (call, libc::ENOSYS));
    for (call, errno) in refused.chain(unimplemented) {
        let daemon = Daemon::start_hooked(&world, call);
        let out = world.run(&[s(&sample("hello"))]);
        // Only the daemon's sandboxes make the call: a standalone run would print the hello.
        assert_eq!(stdout(&out), "", "{call}: the guest must not have run");
        let hook = format!("hook {call}: errno {errno}");
        assert!(
            stderr(&out).lines().any(|line| line == hook),
            "{call}: {}",
            stderr(&out)
        );
        drop(daemon);
    }
    world.assert_nothing_left();
}

#[test]
fn a_pods_network_namespace_is_joined_before_the_pid_is_handed_over() {
    let world = privileged_test!(World::new());
    let daemon = Daemon::start(&world, 2);
    let mut holder = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()
        .expect("unshare");
    let pod_netns = format!("/proc/{}/ns/net", holder.id());
    let netns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    while netns_of(holder.id()) == netns_of(std::process::id()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Cached first: a held claim does not compile.
    let warm = world.run(&[s(&sample("hello"))]);
    assert_exit(&warm, 0);
    let dir = world.root.path();
    let bundle = wasm_bundle(dir, &sample("hello"), Some(&pod_netns));
    let handoff = Handoff::in_dir(dir);
    let Handoff {
        pid_file,
        gate: _,
        out: _,
    } = &handoff;
    daemon.wait_for_pool(2);
    let ready: Vec<u32> = daemon.ready_pids();
    let child = world
        .run_cmd(&[vec!["--bundle", s(&bundle)], handoff.args("pod-app")].concat())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wrun");
    let pid = pooled_pid(pid_file, &ready);
    // In the pod's network namespace already when its PID is known (runc's create), and
    // without any capability.
    assert_eq!(netns_of(pid), netns_of(holder.id()));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    handoff.start_and_expect(child, "Hello from WebAssembly in a wrun sandbox!\n");
    // A path that is no network namespace: refused by the pool, reported as standalone.
    std::fs::remove_file(pid_file).unwrap();
    let wrong = wasm_bundle(
        &dir.join("wrong"),
        &sample("hello"),
        Some("/proc/self/ns/ipc"),
    );
    let refused = world.run(&["--bundle", s(&wrong), "--id", "pod-wrong"]);
    assert_ne!(refused.status.code(), Some(0), "{}", stdout(&refused));
    assert_eq!(stderr(&refused).lines().count(), 1, "{}", stderr(&refused));
    let _ = holder.kill();
    let _ = holder.wait();
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

/// Pooled sandboxes wait in the shared network and IPC namespaces, as a standalone run of the
/// CLI runs in them; a bundle's claim (Docker, Podman, containerd without a pod) has its
/// sandbox make new ones before its PID is handed over, as its standalone run would.
#[test]
fn pooled_sandboxes_share_the_pinned_namespaces_until_a_bundle_claims_one() {
    use std::os::unix::fs::MetadataExt;
    let world = privileged_test!(World::new());
    // Cached first (a held claim does not compile); it also pins the shared namespaces.
    assert_exit(&world.run(&[s(&sample("hello"))]), 0);
    let daemon = Daemon::start(&world, 2);
    let inode = |path: String| std::fs::metadata(path).unwrap().ino();
    let ready = daemon.ready_pids();
    for pid in &ready {
        for kind in ["net", "ipc"] {
            assert_eq!(
                inode(format!("/proc/{pid}/ns/{kind}")),
                inode(format!("/run/wrun-namespaces/{kind}-v1")),
                "{kind} of waiting sandbox {pid}"
            );
        }
    }
    let dir = world.root.path();
    let bundle = wasm_bundle(dir, &sample("hello"), None);
    let handoff = Handoff::in_dir(dir);
    let child = world
        .run_cmd(&[vec!["--bundle", s(&bundle)], handoff.args("bundle-app")].concat())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wrun");
    let pid = pooled_pid(&handoff.pid_file, &ready);
    for kind in ["net", "ipc"] {
        let own = inode(format!("/proc/{pid}/ns/{kind}"));
        assert_ne!(
            own,
            inode(format!("/run/wrun-namespaces/{kind}-v1")),
            "{kind}: shared"
        );
        assert_ne!(
            own,
            inode(format!("/proc/self/ns/{kind}")),
            "{kind}: the host's"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    handoff.start_and_expect(child, "Hello from WebAssembly in a wrun sandbox!\n");
    drop(daemon);
    world.assert_nothing_left();
    assert_eq!(world.run_records(), Vec::<String>::new());
}

/// The PID a held run writes to `pid_file`, checked to be one of the pool's `ready` sandboxes.
fn pooled_pid(pid_file: &Path, ready: &[u32]) -> u32 {
    let pid: u32 = wait_for_file(pid_file).trim().parse().expect("a pid");
    assert!(
        ready.contains(&pid),
        "{pid} is not one of the pool's {ready:?}"
    );
    pid
}
