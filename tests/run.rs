//! `wrun run` end to end: the real binary, as root, on the real kernel.

use std::os::unix::fs::symlink;
use std::process::{Child, Stdio};

use wrun_tests::*;

#[test]
fn hello_module_prints_its_greeting() {
    let world = privileged_test!(World::new());
    let out = world.run(&[s(&sample("hello"))]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    assert_eq!(stderr(&out), "");
    world.assert_nothing_left();
}

#[test]
fn hello_component_runs_as_wasi_cli_command() {
    let world = privileged_test!(World::new());
    let out = world.run(&[s(&sample("hello.component"))]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    world.assert_nothing_left();
}

#[test]
fn wat_text_runs() {
    let world = privileged_test!(World::new());
    let out = world.run(&[s(&fixture("hello.wat"))]);
    assert_output(&out, 0, "Hello from WAT\n");
}

#[test]
fn shorthand_runs_module_with_args() {
    let world = privileged_test!(World::new());
    let out = world.wrun(&[s(&sample("echo")), "one", "--two"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with("args: one --two\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn guest_exit_codes_pass_through() {
    let world = privileged_test!(World::new());
    for code in [0, 1, 3, 42, 125] {
        let out = world.run(&[s(&sample("exit")), &code.to_string()]);
        assert_exit(&out, code);
    }
    // The same 125 from the guest and from wrun: only wrun's has a `wrun:` line, and `-v`
    // names the one it was.
    let guest = world.run(&["--verbose", s(&sample("exit")), "125"]);
    assert_eq!(guest.status.code(), Some(125));
    assert_lacks(&stderr(&guest), "wrun: ");
    assert_contains(&stderr(&guest), "exit 125: the guest's own exit code");
    let ours = world.run(&[
        "--verbose",
        "--dir",
        "/no/such/dir",
        s(&sample("exit")),
        "0",
    ]);
    assert_eq!(ours.status.code(), Some(125));
    assert_contains(&stderr(&ours), "wrun: ");
    assert_contains(&stderr(&ours), "exit 125: wrun failed, not the workload");
    world.assert_nothing_left();
}

#[test]
fn args_and_env_pass_through_and_host_env_does_not() {
    let world = privileged_test!(World::new());
    let env_file = world.root.path().join("vars.env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=1\nOVERRIDDEN=file\n").unwrap();
    let out = world
        .run_cmd(&[
            "--env-file",
            s(&env_file),
            "-e",
            "OVERRIDDEN=flag",
            "--env",
            "WITH_EQUALS=a=b",
            "-e",
            "INHERITED",
            s(&sample("echo")),
            "x",
            "-y",
            "--z",
        ])
        .env("INHERITED", "from-host")
        .env("SECRET_HOST_VAR", "must-not-leak")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "args: x -y --z\n\
         env: FROM_FILE=1\n\
         env: INHERITED=from-host\n\
         env: OVERRIDDEN=flag\n\
         env: WITH_EQUALS=a=b\n"
    );
}

#[test]
fn preopen_reads_and_writes() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "through the preopen\n").unwrap();
    let dir = format!("{}::/data", s(data.path()));
    let out = world.run(&[
        "--dir",
        &dir,
        s(&sample("cat")),
        "-o",
        "/data/out.txt",
        "/data/in.txt",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "through the preopen\n"
    );
    world.assert_nothing_left();
}

#[test]
fn read_only_preopen_refuses_writes() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "x").unwrap();
    let dir = format!("{}::/data:ro", s(data.path()));
    let write = world.run(&[
        "--dir",
        &dir,
        s(&sample("cat")),
        "-o",
        "/data/new.txt",
        "/data/in.txt",
    ]);
    assert_exit(&write, 1);
    assert_contains(&stderr(&write), "cat: /data/new.txt");
    assert!(!data.path().join("new.txt").exists());
    let overwrite = world.run(&[
        "--dir",
        &dir,
        s(&sample("cat")),
        "-o",
        "/data/in.txt",
        "/data/in.txt",
    ]);
    assert_eq!(overwrite.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(data.path().join("in.txt")).unwrap(),
        "x"
    );
    let read = world.run(&["--dir", &dir, s(&sample("cat")), "/data/in.txt"]);
    assert_eq!(stdout(&read), "x");
    world.assert_nothing_left();
}

#[test]
fn preopen_escapes_fail() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    symlink(&secret, data.path().join("link-out")).unwrap();
    symlink("/etc/passwd", data.path().join("link-abs")).unwrap();
    symlink("../../../../../../etc/passwd", data.path().join("link-rel")).unwrap();
    let dir = format!("{}::/data", s(data.path()));
    let attempts = [
        "/data/../etc/passwd".to_string(),
        "/data/../../../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        s(&secret).to_string(),
        "/data/link-out".to_string(),
        "/data/link-abs".to_string(),
        "/data/link-rel".to_string(),
    ];
    for path in &attempts {
        let out = world.run(&["--dir", &dir, s(&sample("cat")), path]);
        assert_eq!(out.status.code(), Some(1), "{path}: {}", stdout(&out));
        assert_eq!(stdout(&out), "", "{path} leaked content");
    }
    world.assert_nothing_left();
}

#[test]
fn memory_limit_stops_hog_and_host_is_fine() {
    let world = privileged_test!(World::new());
    let out = world.run(&["--memory", "64m", s(&sample("hog"))]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let mib: u64 = text
        .strip_prefix("hog: memory.grow refused after ")
        .and_then(|t| t.strip_suffix(" MiB\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected hog output {text:?}"));
    assert!((32..64).contains(&mib), "refused after {mib} MiB");
    // Without the limit the same guest grows past it.
    let free = world.run(&[s(&sample("hog")), "128"]);
    assert_eq!(stdout(&free), "hog: grew 128 MiB\n");
    world.assert_nothing_left();
}

#[test]
fn timeout_interrupts_spin() {
    let world = privileged_test!(World::new());
    let out = world.run(&["--timeout", "300ms", s(&sample("spin"))]);
    assert_exit(&out, 124);
    assert_contains(&stderr(&out), "timeout");
    world.assert_nothing_left();
}

#[test]
fn trap_prints_trap_and_backtrace() {
    let world = privileged_test!(World::new());
    let out = world.run(&[s(&fixture("trap.wat"))]);
    assert_eq!(out.status.code(), Some(134));
    let err = stderr(&out);
    assert!(
        err.starts_with("wrun: wasm trap: wasm `unreachable` instruction executed\n"),
        "{err}"
    );
    assert_contains(&err, "wasm backtrace:");
    assert_contains(&err, "boom");
    world.assert_nothing_left();
}

/// Waits for the single run under `world` to be in its cgroup and inside all its namespaces
/// (the cgroup namespace is the last one it enters) and returns its host PID.
fn workload_pid(world: &World) -> i32 {
    let host_cgroup_ns = std::fs::read_link("/proc/self/ns/cgroup").unwrap();
    wait_for(20, "workload never entered its sandbox", || {
        let dirs = world.live_cgroups();
        let procs = dirs
            .iter()
            .find(|p| p.starts_with("/sys/fs/cgroup/pids/"))
            .or(dirs.first())
            .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .unwrap_or_default();
        let pid: i32 = procs.lines().next()?.trim().parse().ok()?;
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/cgroup"));
        ns.is_ok_and(|ns| ns != host_cgroup_ns).then_some(pid)
    })
}

fn start_spin(world: &World, extra: &[&str]) -> Child {
    let spin = sample("spin");
    let mut args = extra.to_vec();
    args.push(s(&spin));
    world.spawn_run(&args)
}

/// SIGTERM to a running `wrun run`: it ends with 128 + SIGTERM and leaves nothing behind.
fn terminate_and_check_nothing_left(child: Child, world: &World) {
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 128 + libc::SIGTERM);
    world.assert_nothing_left();
}

fn signal(child: &Child, signo: i32) {
    assert_eq!(kill(child.id() as i32, signo), 0);
}

#[test]
fn workload_is_pid_1_with_only_a_down_lo_and_an_empty_root() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    let dir = format!("{}::/data:ro", s(data.path()));
    let child = start_spin(&world, &["--timeout", "60s", "--dir", &dir]);
    let pid = workload_pid(&world);

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    // Every capability set empty, the bounding set too; no new privileges; a seccomp filter.
    for (field, value) in [
        ("CapInh:", "0000000000000000"),
        ("CapPrm:", "0000000000000000"),
        ("CapEff:", "0000000000000000"),
        ("CapBnd:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
        ("Seccomp:", "2"),
    ] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert_eq!(line.split_whitespace().last(), Some(value), "{line}");
    }

    let net_dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let interfaces: Vec<&str> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"]);
    let link = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-o", "link", "show", "lo"])
        .output()
        .unwrap();
    let link = stdout(&link);
    assert_contains(&link, "state DOWN");
    assert_lacks(&link, ",UP");

    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let sandbox = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(host, sandbox, "{ns} namespace is shared with the host");
    }

    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mounts: Vec<&str> = mountinfo.lines().collect();
    assert_eq!(
        mounts.len(),
        2,
        "root tmpfs and one preopen only: {mountinfo}"
    );
    // In the order the mounts were made: with the template the preopen's came first.
    assert!(
        mounts
            .iter()
            .any(|m| m.contains(" / / ro,") && m.contains("tmpfs")),
        "{mountinfo}"
    );
    assert!(mounts.iter().any(|m| m.contains(" /0 ro,")), "{mountinfo}");

    assert_root_holds_only_mount_points(pid, 1);

    terminate_and_check_nothing_left(child, &world);
}

/// The sandbox's root, seen through `/proc/PID/root`: the mount points `0`, `1`, … (those of
/// the mount namespace template, or one per preopen where the root was built), the first
/// `preopens` of them mounted, the others empty; nothing can be made there.
fn assert_root_holds_only_mount_points(pid: i32, preopens: usize) {
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let mut entries: Vec<usize> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    entries.sort_unstable();
    let expected: Vec<usize> = (0..entries.len().max(preopens)).collect();
    assert_eq!(
        entries, expected,
        "the root holds only numbered mount points"
    );
    for empty in &entries[preopens..] {
        let inside = std::fs::read_dir(root.join(empty.to_string()))
            .unwrap()
            .count();
        assert_eq!(inside, 0, "mount point {empty} is empty");
    }
    let made = std::fs::write(root.join("x"), b"x").unwrap_err();
    assert_eq!(made.raw_os_error(), Some(libc::EROFS), "{made}");
}

/// The mount namespace template: pinned at its path as a namespace once a sandbox has run,
/// and made again where the pin is no longer one (after a reboot /run is empty).
#[test]
fn the_mount_namespace_template_is_pinned_and_made_again_when_gone() {
    const PIN: &str = "/run/wrun-namespaces/mnt-v1";
    let world = privileged_test!(World::new());
    let hello = sample("hello");
    let root_step = |args: &[&str]| {
        let out = world
            .run_cmd(args)
            .env("WRUN_TIMINGS", "1")
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let steps = stderr(&out);
        match (
            steps.contains("child root entered"),
            steps.contains("child root pivoted"),
        ) {
            (true, false) => "entered",
            (false, true) => "pivoted",
            _ => panic!("no single root step: {steps}"),
        }
    };
    assert_eq!(root_step(&[s(&hello)]), "entered", "the template entered");
    let pinned = |what: &str| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            mountinfo
                .lines()
                .any(|l| l.contains(&format!(" {PIN} ")) && l.contains(" - nsfs ")),
            "{what}: {PIN} is not a pinned namespace: {mountinfo}"
        );
    };
    pinned("after a run");
    // What a reboot leaves: no namespace at the path (here, the file it was pinned on).
    let unmounted = std::process::Command::new("umount")
        .args(["-l", PIN])
        .status()
        .unwrap();
    assert!(unmounted.success());
    let child = start_spin(&world, &["--timeout", "60s"]);
    let pid = workload_pid(&world);
    pinned("after the pin was removed and a sandbox started");
    assert_eq!(
        root_step(&[s(&hello)]),
        "entered",
        "the template made again"
    );
    let template = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(
        template,
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        "the sandbox is in the host's mount namespace"
    );
    let pin = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(PIN).unwrap());
    assert_eq!(
        template.to_string_lossy(),
        format!("mnt:[{pin}]"),
        "a sandbox without directories is in the template made again"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert_eq!(mountinfo.lines().count(), 1, "the root only: {mountinfo}");
    assert_root_holds_only_mount_points(pid, 0);
    terminate_and_check_nothing_left(child, &world);
}

/// The PIDs of `count` sandboxes of `world` once each is in its own cgroup namespace.
fn workload_pids(world: &World, count: usize) -> Vec<i32> {
    let host_cgroup_ns = std::fs::read_link("/proc/self/ns/cgroup").unwrap();
    wait_for(20, "the workloads never entered their sandboxes", || {
        let dirs = world.live_cgroups();
        // One hierarchy's: pids on cgroup v1, the only one on v2.
        let v1 = dirs
            .iter()
            .any(|dir| dir.starts_with("/sys/fs/cgroup/pids/"));
        let pids: Vec<i32> = dirs
            .iter()
            .filter(|dir| !v1 || dir.starts_with("/sys/fs/cgroup/pids/"))
            .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .filter_map(|procs| procs.lines().next()?.trim().parse().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/cgroup"))
                    .is_ok_and(|ns| ns != host_cgroup_ns)
            })
            .collect();
        (pids.len() == count).then_some(pids)
    })
}

/// Wasm sandboxes outside a pod share the pinned network and IPC namespaces, apart from the
/// host's, and without directories the mount namespace template, and no other; one given a
/// directory has a copy of the template; a pin of the host's own namespace is replaced,
/// never joined.
#[test]
fn wasm_sandboxes_share_the_pinned_network_ipc_and_empty_mount_namespaces_and_nothing_else() {
    use std::os::unix::fs::MetadataExt;
    let world = privileged_test!(World::new());
    let namespace = |pid: &str, kind: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let pinned = |kind: &str| {
        let pin = format!("/run/wrun-namespaces/{kind}-v1");
        format!("{kind}:[{}]", std::fs::metadata(pin).unwrap().ino())
    };
    let first = start_spin(&world, &["--timeout", "60s"]);
    let second = start_spin(&world, &["--timeout", "60s"]);
    let pids: Vec<String> = workload_pids(&world, 2)
        .iter()
        .map(i32::to_string)
        .collect();
    // Without directories a sandbox mounts nothing: it stays in the template's namespace.
    for kind in ["net", "ipc", "mnt"] {
        for pid in &pids {
            assert_eq!(namespace(pid, kind), pinned(kind), "{kind} of {pid}");
        }
        assert_ne!(pinned(kind), namespace("self", kind), "{kind}: the host's");
    }
    for kind in ["pid", "uts", "cgroup"] {
        assert_ne!(
            namespace(&pids[0], kind),
            namespace(&pids[1], kind),
            "{kind} is shared between sandboxes"
        );
    }
    // A sandbox given a directory mounts it in a copy of the template of its own.
    let data = tempfile::tempdir().unwrap();
    let preopen = format!("{}::/data", data.path().display());
    let third = start_spin(&world, &["--timeout", "60s", "--dir", &preopen]);
    let third_pid = workload_pids(&world, 3)
        .into_iter()
        .map(|pid| pid.to_string())
        .find(|pid| !pids.contains(pid))
        .unwrap();
    let copy = namespace(&third_pid, "mnt");
    assert_ne!(
        copy,
        pinned("mnt"),
        "a sandbox with a directory mounts in the template"
    );
    assert_ne!(copy, namespace("self", "mnt"), "mnt: the host's");
    for child in [first, second, third] {
        signal(&child, libc::SIGTERM);
        assert_exit(&child.wait_with_output().unwrap(), 128 + libc::SIGTERM);
    }
    world.assert_nothing_left();

    // A pin of the host's network namespace (a mistake by hand): the next sandbox pins a new
    // one over it and joins that.
    let host_network = namespace("self", "net");
    let mounted = std::process::Command::new("mount")
        .args(["--bind", "/proc/self/ns/net", "/run/wrun-namespaces/net-v1"])
        .status()
        .unwrap();
    assert!(mounted.success());
    assert_eq!(pinned("net"), host_network);
    let third = start_spin(&world, &["--timeout", "60s"]);
    let pid = workload_pid(&world).to_string();
    assert_ne!(namespace(&pid, "net"), host_network);
    assert_eq!(namespace(&pid, "net"), pinned("net"));
    terminate_and_check_nothing_left(third, &world);
    // The two mounts this test stacked on the pin.
    for _ in 0..2 {
        let unmounted = std::process::Command::new("umount")
            .arg("/run/wrun-namespaces/net-v1")
            .status()
            .unwrap();
        assert!(unmounted.success());
    }
    assert_ne!(pinned("net"), host_network);
}

/// An OCI bundle's Wasm sandbox (what Docker, Podman and containerd's shim run) gets network
/// and IPC namespaces of its own, as its spec asks, which they may configure: never the
/// shared ones.
#[test]
fn a_bundles_wasm_sandbox_has_network_and_ipc_namespaces_of_its_own() {
    use std::os::unix::fs::MetadataExt;
    let world = privileged_test!(World::new());
    let dir = tempfile::tempdir().unwrap();
    let bundle = wasm_bundle(dir.path(), &sample("spin"), None);
    // A CLI run first, so that the shared namespaces are pinned.
    assert_exit(&world.run(&[s(&sample("hello"))]), 0);
    let child = world.spawn_run(&["--timeout", "60s", "--bundle", s(&bundle)]);
    let pid = workload_pid(&world);
    for kind in ["net", "ipc"] {
        let own = std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).unwrap();
        let shared = std::fs::metadata(format!("/run/wrun-namespaces/{kind}-v1")).unwrap();
        let host = std::fs::metadata(format!("/proc/self/ns/{kind}")).unwrap();
        assert_ne!(own.ino(), shared.ino(), "{kind}: the shared one");
        assert_ne!(own.ino(), host.ino(), "{kind}: the host's");
    }
    terminate_and_check_nothing_left(child, &world);
}

/// More preopens than the template has mount points: the sandbox builds its root as before
/// (a copy of the host's mounts, pivoted away from), each preopen mounted.
#[test]
fn more_preopens_than_the_template_has_mount_points_still_run() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    let dirs: Vec<String> = (0..9)
        .map(|i| {
            let dir = data.path().join(i.to_string());
            std::fs::create_dir(&dir).unwrap();
            format!("{}::/d{i}:ro", s(&dir))
        })
        .collect();
    let mut args = vec!["--timeout", "60s"];
    for dir in &dirs {
        args.extend(["--dir", dir.as_str()]);
    }
    let hello = sample("hello");
    let mut hello_args = args.clone();
    hello_args.push(s(&hello));
    let out = world
        .run_cmd(&hello_args)
        .env("WRUN_TIMINGS", "1")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "child root pivoted");
    let child = start_spin(&world, &args);
    let pid = workload_pid(&world);
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert_eq!(
        mountinfo.lines().count(),
        10,
        "root and 9 preopens: {mountinfo}"
    );
    assert_root_holds_only_mount_points(pid, 9);
    terminate_and_check_nothing_left(child, &world);
}

#[test]
fn sigint_is_forwarded_and_nothing_is_left() {
    let world = privileged_test!(World::new());
    let child = start_spin(&world, &[]);
    workload_pid(&world);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 128 + libc::SIGINT);
    world.assert_nothing_left();
}

#[test]
fn limits_reach_the_cgroup() {
    let world = privileged_test!(World::new());
    let child = start_spin(
        &world,
        &[
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids",
            "16",
            "--timeout",
            "60s",
        ],
    );
    workload_pid(&world);
    let read = |controller: &str, file: &str| -> String {
        world
            .cgroup_file(controller, file)
            .unwrap_or_else(|| panic!("no {file} in a {controller} cgroup"))
    };
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("cgroup v2 host: limits checked by the v2 unit tests");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            ((96u64) << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids", "pids.max"), "16");
    }
    terminate_and_check_nothing_left(child, &world);
}

#[test]
fn second_run_hits_the_aot_cache() {
    let world = privileged_test!(World::new());
    let first = world.run(&["--verbose", s(&sample("hello"))]);
    assert_contains(&stderr(&first), "compiled (aot cache miss)");
    let second = world.run(&["--verbose", s(&sample("hello"))]);
    assert_contains(&stderr(&second), "aot cache hit");
    assert_eq!(
        stdout(&second),
        "Hello from WebAssembly in a wrun sandbox!\n"
    );
    assert_eq!(cache_entries(&world).len(), 1);
}

/// The compiled artifacts in `world`'s cache, after checking no temporary file was left.
fn cache_entries(world: &World) -> Vec<String> {
    let names: Vec<String> = std::fs::read_dir(world.root.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "files" && name != "warm")
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".cwasm")), "{names:?}");
    names
}

#[test]
fn compile_fills_the_cache_ahead_of_time() {
    let world = privileged_test!(World::new());
    let compiled = world.wrun(&["compile", s(&sample("hello.component"))]);
    assert_exit(&compiled, 0);
    let artifact = stdout(&compiled).trim().to_string();
    assert!(std::path::Path::new(&artifact).exists(), "{artifact}");
    let run = world.run(&["--verbose", s(&sample("hello.component"))]);
    assert_contains(&stderr(&run), "aot cache hit");
    assert_contains(&stderr(&run), &artifact);
}

#[test]
fn corrupt_cache_entry_is_rebuilt_not_trusted() {
    let world = privileged_test!(World::new());
    let compiled = world.wrun(&["compile", s(&sample("hello"))]);
    let artifact = stdout(&compiled).trim().to_string();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&artifact, &bytes).unwrap();
    // Without `--verbose`: wrun's own warnings are shown by default.
    let out = world.run(&[s(&sample("hello"))]);
    assert_output(&out, 0, "Hello from WebAssembly in a wrun sandbox!\n");
    assert_contains(&stderr(&out), "WARN corrupt cache entry removed");
    let again = world.run(&["--verbose", s(&sample("hello"))]);
    assert_contains(&stderr(&again), "aot cache hit");
}

#[test]
fn concurrent_first_runs_share_the_cache_safely() {
    let world = privileged_test!(World::new());
    let children: Vec<Child> = (0..16)
        .map(|_| world.spawn_run(&[s(&sample("echo")), "race"]))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_output(&out, 0, "args: race\n");
    }
    assert_eq!(
        cache_entries(&world).len(),
        1,
        "one entry and no temp files"
    );
    world.assert_nothing_left();
}

#[test]
fn missing_module_is_127() {
    let world = privileged_test!(World::new());
    let out = world.run(&["/nonexistent/app.wasm"]);
    assert_one_line_error(&out, 127, "module `/nonexistent/app.wasm` not found");
    world.assert_nothing_left();
}

#[test]
fn files_that_are_not_runnable_wasm_are_126() {
    let world = privileged_test!(World::new());
    let dir = world.root.path();
    let hello = std::fs::read(sample("hello")).unwrap();
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, &hello[..hello.len() / 3]).unwrap();
    let corrupt = dir.join("corrupt.wasm");
    let mut bytes = hello.clone();
    for b in &mut bytes[9..40] {
        *b = 0xff;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    let short = dir.join("short.wasm");
    std::fs::write(&short, b"\0asm\x01").unwrap();

    let cases = [
        (fixture("not-wasm.sh"), "is not a WebAssembly module"),
        (short, "is truncated"),
        (truncated, "failed to compile"),
        (corrupt, "failed to compile"),
        (fixture("unsatisfied-import.wat"), "env::missing"),
        (fixture("no-start.wat"), "exports no `_start`"),
        (
            fixture("not-a-command.wat"),
            "is not a `wasi:cli/command` component",
        ),
    ];
    for (path, needle) in cases {
        let out = world.run(&[s(&path)]);
        assert_one_line_error(&out, 126, needle);
    }
    let dir_as_module = world.run(&[s(dir)]);
    assert_one_line_error(&dir_as_module, 126, "is not a regular file");
    world.assert_nothing_left();
}

#[test]
fn bad_dirs_are_refused_before_any_sandbox() {
    let world = privileged_test!(World::new());
    let hello = sample("hello");
    let missing = world.run(&["--dir", "/nonexistent/dir", s(&hello)]);
    assert_one_line_error(
        &missing,
        125,
        "invalid --dir `/nonexistent/dir`: no such file or directory",
    );
    let file = world.run(&["--dir", s(&hello), s(&hello)]);
    assert_one_line_error(&file, 125, "not a directory");
    let malformed = world.run(&["--dir", "::/guest", s(&hello)]);
    assert_one_line_error(&malformed, 125, "invalid --dir `::/guest`");
    world.assert_nothing_left();
}

#[test]
fn malformed_limits_are_refused() {
    let world = privileged_test!(World::new());
    let hello = sample("hello");
    let cases = [
        (["--memory", "12x"], "invalid size `12x`"),
        (["--memory", "10k"], "must be at least 1m"),
        (["--cpus", "abc"], "invalid --cpus `abc`"),
        (["--cpus", "0"], "invalid --cpus `0`"),
        (["--pids", "0"], "invalid --pids `0`"),
        // Beyond the host, refused as Docker refuses them.
        (["--cpus", "4097"], "invalid --cpus `4097`"),
        (["--cpus", "99"], "as there are only"),
        (["--memory", "99999999g"], "more than this host has"),
        (
            ["--pids-limit", "99999999999"],
            "above what the kernel allows",
        ),
        (["--timeout", "soon"], "invalid duration `soon`"),
        (["--env", "=x"], "invalid --env `=x`"),
    ];
    for (flags, needle) in cases {
        let out = world.run(&[flags[0], flags[1], s(&hello)]);
        assert_one_line_error(&out, 125, needle);
    }
    let parent = world.wrun(&["run", "--cgroup-parent", "../escape", s(&hello)]);
    assert_one_line_error(&parent, 125, "invalid --cgroup-parent `../escape`");
    let env_file = world.run(&["--env-file", "/nonexistent.env", s(&hello)]);
    assert_one_line_error(&env_file, 125, "failed to read env file `/nonexistent.env`");
    // A mistyped command is named as one, with the command meant, not run as a module.
    let typo = world.wrun(&["sttart", "web-1"]);
    assert_one_line_error(
        &typo,
        125,
        "unknown command `sttart` (did you mean `start`?)",
    );
    world.assert_nothing_left();
}

#[test]
fn guest_can_sleep() {
    let world = privileged_test!(World::new());
    let out = world.run(&["--timeout", "20s", s(&fixture("sleep.wat"))]);
    assert_exit(&out, 0);
}

#[test]
fn stdin_passes_through() {
    let world = privileged_test!(World::new());
    let mut child = world
        .run_cmd(&[s(&sample("cat"))])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "from stdin\n");
}

#[test]
fn flag_errors_are_one_line() {
    let world = privileged_test!(World::new());
    let missing = world.wrun(&["run"]);
    assert_one_line_error(
        &missing,
        125,
        "required arguments were not provided: <IMAGE|MODULE>",
    );
    let unknown = world.wrun(&["run", "--frobnicate", s(&sample("hello"))]);
    assert_one_line_error(&unknown, 125, "unexpected argument '--frobnicate'");
    let no_value = world.wrun(&["run", "--memory"]);
    assert_one_line_error(&no_value, 125, "a value is required for '--memory <SIZE>'");
}

#[test]
fn file_system_tour_and_sleep_work_for_modules_and_components() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    let dir = format!("{}::/data", s(data.path()));
    for guest in ["escape", "escape.component"] {
        let out = world.run(&[
            "--timeout",
            "20s",
            "--dir",
            &dir,
            s(&sample(guest)),
            "tour",
            "/data",
        ]);
        assert_eq!(stdout(&out), "tour: ok\n", "{guest}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(0));
    }
    assert_eq!(
        std::fs::read_dir(data.path()).unwrap().count(),
        0,
        "the tour cleans up"
    );
    world.assert_nothing_left();
}

#[test]
fn a_supervisor_gets_the_pid_then_starts_the_run_through_the_gate() {
    let world = privileged_test!(World::new());
    let handoff = Handoff::in_dir(world.root.path());
    let Handoff {
        gate: _,
        pid_file,
        out,
    } = &handoff;
    let hello = sample("hello");
    let child = world
        .run_cmd(&[handoff.args("task-1"), vec![s(&hello)]].concat())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wrun");
    let pid = wait_for_file(pid_file);
    let pid: i32 = pid.trim().parse().expect("a pid in the pid file");
    // Held at the gate: the sandbox exists, in its cgroup, and the guest has not run.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!world.live_cgroups().is_empty());
    assert_eq!(std::fs::read_to_string(out).unwrap_or_default(), "");
    handoff.start_and_expect(child, "Hello from WebAssembly in a wrun sandbox!\n");
    world.assert_nothing_left();
}

#[test]
fn closing_the_start_gate_abandons_the_run_and_leaves_nothing() {
    let world = privileged_test!(World::new());
    let handoff = Handoff::in_dir(world.root.path());
    let Handoff { gate, pid_file, .. } = &handoff;
    let hello = sample("hello");
    let child = world.spawn_run(&[handoff.held_args(), vec![s(&hello)]].concat());
    wait_for_file(pid_file);
    drop(std::fs::OpenOptions::new().write(true).open(gate));
    let output = child.wait_with_output().expect("wait");
    assert_one_line_error(&output, 125, "abandoned before it started");
    assert_eq!(stdout(&output), "");
    world.assert_nothing_left();
}

/// `(executable, file offset, address, alignment)` of each loadable segment of an ELF64 file.
fn load_segments(elf: &[u8]) -> Vec<(bool, u64, u64, u64)> {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let (table, entry_size, entries) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..entries)
        .map(|i| table + i * entry_size)
        .filter(|&header| u32_at(header) == 1)
        .map(|h| {
            (
                u32_at(h + 4) & 1 == 1,
                u64_at(h + 8),
                u64_at(h + 16),
                u64_at(h + 48),
            )
        })
        .collect()
}

#[test]
fn the_binarys_segments_sit_on_2_mib_boundaries() {
    const TWO_MIB: u64 = 2 << 20;
    let segments = load_segments(&std::fs::read(wrun_bin()).expect("read the wrun binary"));
    let (_, _, code_address, _) = *segments
        .iter()
        .find(|(executable, ..)| *executable)
        .expect("an executable segment");
    assert_eq!(code_address % TWO_MIB, 0, "{segments:x?}");
    for (_, offset, address, align) in &segments {
        assert!(*align >= TWO_MIB, "{segments:x?}");
        assert_eq!(offset % TWO_MIB, address % TWO_MIB, "{segments:x?}");
    }
}

#[test]
fn a_running_wrun_marks_its_code_for_huge_pages() {
    let world = privileged_test!(World::new());
    let child = start_spin(&world, &["--timeout", "60s"]);
    let sandbox = workload_pid(&world);
    let binary = std::fs::canonicalize(wrun_bin()).unwrap();
    // The parent's and the forked sandbox's code mapping: the wrun binary's executable one.
    for pid in [child.id() as i32, sandbox] {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let flags = smaps
            .split_once("r-xp")
            .filter(|(_, rest)| rest.lines().next().is_some_and(|l| l.ends_with(s(&binary))))
            .and_then(|(_, rest)| rest.lines().find_map(|l| l.strip_prefix("VmFlags:")))
            .unwrap_or_else(|| panic!("no code mapping of {binary:?} in {pid}: {smaps}"));
        let flags: Vec<_> = flags.split_whitespace().collect();
        assert!(
            flags.contains(&"hg") && flags.contains(&"ex"),
            "{pid}: {flags:?}"
        );
    }
    terminate_and_check_nothing_left(child, &world);
}

#[test]
fn settle_rewrites_a_binary_unchanged_in_place_and_into_a_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(wrun_bin()).unwrap();
    let copy = dir.path().join("wrun");
    std::fs::write(&copy, &original).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::fs::hard_link(&copy, &link).unwrap();
    let inode = std::fs::metadata(&copy).unwrap().ino();
    let settle = repo().join("scripts/settle.sh");
    let installed = dir.path().join("bin");
    std::fs::create_dir(&installed).unwrap();
    for args in [vec![s(&copy)], vec!["--into", s(&installed), s(&copy)]] {
        let out = std::process::Command::new(&settle)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // In place: the same file, its mode and its other link kept.
    let in_place = std::fs::metadata(&copy).unwrap();
    assert_eq!(in_place.ino(), inode);
    assert_eq!(in_place.permissions().mode() & 0o777, 0o700);
    assert_eq!(in_place.nlink(), 2);
    let into = installed.join("wrun");
    assert_eq!(
        std::fs::metadata(&into).unwrap().permissions().mode() & 0o777,
        0o755
    );
    for settled in [&copy, &link, &into] {
        assert!(
            std::fs::read(settled).unwrap() == original,
            "{settled:?} changed"
        );
    }
    let installed_names: Vec<_> = std::fs::read_dir(&installed)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(installed_names, ["wrun"], "no temporary file left");
    let usage = std::process::Command::new(&settle)
        .arg("--into")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(
        stderr(&usage).trim(),
        "usage: settle.sh [--into DIR] FILE..."
    );
}

/// Writes `wat` to a module file in `dir` and returns its path.
fn wat_module(dir: &std::path::Path, name: &str, wat: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat).unwrap();
    path
}

#[test]
fn the_timeout_wins_over_a_host_call_it_cannot_interrupt() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    let fifo = data.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Opens `fifo` in the first preopen for reading (no writer ever comes), then exits 0
    // whatever the open returned.
    let module = wat_module(
        data.path(),
        "open-fifo.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "path_open"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "fifo")
          (func (export "_start")
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 4)
              (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 64)))
            (call $exit (i32.const 0))))"#,
    );
    let dir = format!("{}::/d", s(data.path()));
    let out = world.run(&["--dir", &dir, "--timeout", "1s", s(&module)]);
    assert_exit(&out, 124);
    assert_contains(
        &stderr(&out),
        "timeout: the workload was interrupted after 1s",
    );
    world.assert_nothing_left();
}

/// Grows a table by 64 Ki elements at a time until `table.grow` says -1, then exits 0 (or
/// 1 past 2^26 elements, which no budget here allows).
const TABLE_HOG: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table $t 0 funcref)
  (func (export "_start")
    (loop $grow
      (if (i32.eq (table.grow $t (ref.null func) (i32.const 65536)) (i32.const -1))
        (then (call $exit (i32.const 0))))
      (br_if $grow (i32.lt_u (table.size $t) (i32.const 67108864))))
    (call $exit (i32.const 1))))"#;

#[test]
fn table_growth_past_the_budget_returns_minus_one_not_an_oom_kill() {
    let world = privileged_test!(World::new());
    let dir = tempfile::tempdir().unwrap();
    let module = wat_module(dir.path(), "table-hog.wat", TABLE_HOG);
    for round in 0..5 {
        let out = world.run(&["--memory", "64m", s(&module)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}",
            stderr(&out)
        );
    }
    // Without --memory the default caps end it too (10M elements), long before the host's
    // memory.
    assert_exit(&world.run(&[s(&module)]), 0);
    world.assert_nothing_left();
}

#[test]
fn a_guests_new_files_get_the_callers_umask() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "x\n").unwrap();
    let dir = format!("{}::/data", s(data.path()));
    let mut cmd = world.run_cmd(&[
        "--dir",
        &dir,
        s(&sample("cat")),
        "-o",
        "/data/out.txt",
        "/data/in.txt",
    ]);
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        })
    };
    let out = cmd.output().unwrap();
    assert_exit(&out, 0);
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(data.path().join("out.txt"))
        .unwrap()
        .mode()
        & 0o777;
    // As under wasmtime: 0666 less the caller's umask, not wrun's own 077.
    assert_eq!(mode, 0o640, "guest file mode {mode:o}");
    world.assert_nothing_left();
}

#[test]
fn append_mode_writes_reach_the_file() {
    let world = privileged_test!(World::new());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("log"), "a\n").unwrap();
    // Opens `log` with FDFLAGS_APPEND (C's O_APPEND, the shell's `>>`), writes "b\n" and
    // exits with fd_write's errno (or 100 + path_open's).
    let module = wat_module(
        data.path(),
        "append.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "path_open"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write"
            (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "log")
          (data (i32.const 32) "b\n")
          (func (export "_start") (local $e i32)
            (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 3)
              (i32.const 0) (i64.const 64) (i64.const 64) (i32.const 1) (i32.const 64)))
            (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e)))))
            (i32.store (i32.const 80) (i32.const 32))
            (i32.store (i32.const 84) (i32.const 2))
            (call $exit (call $write (i32.load (i32.const 64)) (i32.const 80) (i32.const 1)
              (i32.const 96)))))"#,
    );
    let dir = format!("{}::/d", s(data.path()));
    let out = world.run(&["--dir", &dir, s(&module)]);
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(data.path().join("log")).unwrap(),
        "a\nb\n"
    );
    world.assert_nothing_left();
}

#[test]
fn atomics_on_an_ordinary_memory_run_and_a_shared_memory_needs_its_flag() {
    let world = privileged_test!(World::new());
    let dir = tempfile::tempdir().unwrap();
    let atomics = wat_module(
        dir.path(),
        "atomics.wat",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (drop (i32.atomic.rmw.add (i32.const 0) (i32.const 5)))
            (call $e (i32.atomic.load (i32.const 0)))))"#,
    );
    let out = world.run(&[s(&atomics)]);
    assert_exit(&out, 5);
    let shared = wat_module(
        dir.path(),
        "shared.wat",
        r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#,
    );
    let out = world.run(&[s(&shared)]);
    assert_exit(&out, 126);
    assert_eq!(
        stderr(&out).lines().next().map(|l| l.starts_with("wrun: ")),
        Some(true)
    );
    let out = world.run(&["--shared-memory", s(&shared)]);
    assert_exit(&out, 0);
    world.assert_nothing_left();
}

#[test]
fn everything_after_the_module_is_the_guests() {
    let world = privileged_test!(World::new());
    let echo = sample("echo");
    let out = world.run(&[
        "-e",
        "MINE=1",
        s(&echo),
        "-e",
        "X=1",
        "--version",
        "-v",
        "x",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "args: -e X=1 --version -v x\nenv: MINE=1\n",
        "{}",
        stderr(&out)
    );
    // `--` is still accepted, and only the first one is wrun's.
    let out = world.run(&[s(&echo), "--", "--", "-x"]);
    assert_eq!(stdout(&out), "args: -- -x\n", "{}", stderr(&out));
    // The shorthand too.
    let out = world.wrun(&[s(&echo), "--help"]);
    assert_eq!(stdout(&out), "args: --help\n", "{}", stderr(&out));
    world.assert_nothing_left();
}

#[test]
fn a_closed_stderr_loses_wrun_s_lines_not_the_exit_code() {
    let world = privileged_test!(World::new());
    let missing = world.root.path().join("missing.wasm");
    for (module, code) in [(fixture("trap.wat"), 134), (missing, 127)] {
        let mut child = world
            .run_cmd(&[s(&module)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before wrun writes its line.
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{}", module.display());
    }
    world.assert_nothing_left();
}

/// A module of `functions` functions of 150 additions each, whose `_start` exits 0: large
/// enough that compiling it needs more memory than a small `--memory` leaves.
fn big_module(dir: &std::path::Path, functions: usize) -> std::path::PathBuf {
    let body: String = (0..150)
        .map(|i| format!("local.get 0 i32.const {i} i32.add local.set 0 "))
        .collect();
    let mut wat = String::from(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
           (memory (export "memory") 1)"#,
    );
    for n in 0..functions {
        wat.push_str(&format!(
            "(func $f{n} (param i32) (result i32) {body} local.get 0)\n"
        ));
    }
    wat.push_str(
        r#"(func (export "_start") (drop (call $f0 (i32.const 1))) (call $exit (i32.const 0))))"#,
    );
    wat_module(dir, "big.wat", &wat)
}

#[test]
fn a_cold_run_compiles_outside_the_guests_memory_limit_and_timeout() {
    let world = privileged_test!(World::new());
    let dir = tempfile::tempdir().unwrap();
    let module = big_module(dir.path(), 1000);
    // Compiled inside the sandbox, this was OOM-killed (137) under the cgroup's 33 MiB on
    // every try, caching nothing.
    for _ in 0..2 {
        let out = world.run(&["--memory", "1m", "--timeout", "1s", s(&module)]);
        assert_exit(&out, 0);
    }
    world.assert_nothing_left();
}
