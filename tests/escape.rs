//! The escape suite: workloads that attack the sandbox (samples/escape), and forbidden system
//! calls made from the host side of the sandboxed process (`wrun-hooked`). Every attempt must
//! fail in the documented way, and the host is checked from outside afterwards.

use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::Path;
use wrun_tests::*;

/// Runs one attack of the escape sample (module, or component with `component`) and asserts
/// the sample reported it denied.
fn attack(world: &World, component: bool, flags: &[&str], args: &[&str]) -> String {
    let guest = sample(if component {
        "escape.component"
    } else {
        "escape"
    });
    let mut all: Vec<&str> = flags.to_vec();
    all.push(s(&guest));
    all.extend_from_slice(args);
    let out = world.run(&all);
    let text = stdout(&out);
    assert!(
        text.starts_with("denied: ") && out.status.code() == Some(0),
        "{args:?} was not denied: {text} {}",
        stderr(&out)
    );
    text
}

/// A host directory to preopen, next to a secret that must stay out of reach.
struct Layout {
    _top: tempfile::TempDir,
    data: std::path::PathBuf,
    secret: std::path::PathBuf,
}

fn layout() -> Layout {
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let secret = top.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    std::fs::write(data.join("inside.txt"), "inside").unwrap();
    symlink(&secret, data.join("abs-link")).unwrap();
    symlink("../secret.txt", data.join("rel-link")).unwrap();
    symlink("/etc/shadow", data.join("etc-link")).unwrap();
    std::fs::create_dir(data.join("sub")).unwrap();
    symlink("../../secret.txt", data.join("sub/deep-link")).unwrap();
    Layout {
        _top: top,
        data,
        secret,
    }
}

#[test]
fn host_files_outside_preopens_stay_out_of_reach() {
    let world = privileged_test!(World::new());
    let l = layout();
    let dir = format!("{}::/data", s(&l.data));
    let flags = ["--dir", dir.as_str()];
    let reads = [
        "/data/../secret.txt",
        "/data/sub/../../secret.txt",
        "/data/./../../../../etc/passwd",
        "/etc/passwd",
        "/proc/self/environ",
        "/proc/1/root/etc/passwd",
        s(&l.secret),
        "/data/abs-link",
        "/data/rel-link",
        "/data/etc-link",
        "/data/sub/deep-link",
        "secret.txt",
    ];
    for component in [false, true] {
        for path in reads {
            attack(&world, component, &flags, &["read", path]);
        }
        attack(&world, component, &flags, &["list", "/data/.."]);
        attack(&world, component, &flags, &["list", "/"]);
        attack(
            &world,
            component,
            &flags,
            &["hardlink", "/data/../secret.txt", "/data/stolen"],
        );
        attack(
            &world,
            component,
            &flags,
            &["rename", "/data/inside.txt", "/data/../escaped.txt"],
        );
        attack(
            &world,
            component,
            &flags,
            &["write", "/data/../planted.txt"],
        );
    }
    // From outside: the secret is intact and nothing appeared next to the preopen.
    assert_eq!(std::fs::read_to_string(&l.secret).unwrap(), "host secret");
    let beside: Vec<_> = std::fs::read_dir(l.data.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(beside.len(), 2, "{beside:?}");
    assert!(!l.data.join("stolen").exists());
    assert_eq!(
        std::fs::read_to_string(l.data.join("inside.txt")).unwrap(),
        "inside"
    );
    world.assert_nothing_left();
}

#[test]
fn read_only_preopens_refuse_every_change() {
    let world = privileged_test!(World::new());
    let l = layout();
    let dir = format!("{}::/data:ro", s(&l.data));
    let flags = ["--dir", dir.as_str()];
    for component in [false, true] {
        attack(&world, component, &flags, &["write", "/data/new.txt"]);
        attack(&world, component, &flags, &["write", "/data/inside.txt"]);
        attack(
            &world,
            component,
            &flags,
            &["rename", "/data/inside.txt", "/data/moved.txt"],
        );
        attack(
            &world,
            component,
            &flags,
            &["hardlink", "/data/inside.txt", "/data/again.txt"],
        );
        attack(&world, component, &flags, &["fill", "/data"]);
    }
    let names: Vec<_> = std::fs::read_dir(&l.data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(
        std::fs::read_to_string(l.data.join("inside.txt")).unwrap(),
        "inside"
    );
    world.assert_nothing_left();
}

#[test]
fn the_network_is_out_of_reach() {
    let world = privileged_test!(World::new());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let text = attack(&world, true, &[], &["connect", &addr]);
    assert_contains(&text, &addr);
    attack(&world, false, &[], &["connect", &addr]);
    // From outside: nobody knocked.
    let reached = listener.accept().is_ok();
    assert!(!reached, "the guest reached the host's listener");
    world.assert_nothing_left();
}

#[test]
fn filling_a_tmpfs_preopen_is_refused_and_the_host_is_fine() {
    let world = privileged_test!(World::new());
    let disk = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "wrun-test", s(disk.path())])
        .status()
        .unwrap();
    assert!(mounted.success());
    let dir = format!("{}::/disk", s(disk.path()));
    let text = attack(&world, false, &["--dir", &dir], &["fill", "/disk"]);
    let kib: u64 = text
        .split(" after ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((512..=1024).contains(&kib), "{text}");
    let used = std::fs::metadata(disk.path().join("fill")).unwrap().len();
    assert!(used <= 1 << 20, "{used}");
    let unmounted = std::process::Command::new("umount")
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(unmounted.success());
    world.assert_nothing_left();
}

#[test]
fn opening_files_without_end_is_refused() {
    let world = privileged_test!(World::new());
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("{}::/d", s(dir.path()));
    let text = attack(&world, false, &["--dir", &spec], &["open-many", "/d"]);
    let opened: usize = text
        .split("open file ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let refused_in_range = (900..=1024).contains(&opened);
    assert!(refused_in_range, "refused at file {opened}: {text}");
    world.assert_nothing_left();
}

#[test]
fn memory_hogs_are_refused_inside_wasm() {
    let world = privileged_test!(World::new());
    let out = world.run(&["--memory", "16m", s(&sample("hog"))]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("hog: memory.grow refused after "));
    world.assert_nothing_left();
}

#[test]
fn cpu_hogs_are_throttled() {
    let world = privileged_test!(World::new());
    let mut child = world
        .run_cmd(&["--cpus", "0.2", "--timeout", "1500ms", s(&sample("spin"))])
        .spawn()
        .unwrap();
    // Read the cgroup's own throttling counters while the guest spins.
    let mut throttled = 0u64;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let Some(dir) = world
            .live_cgroups()
            .into_iter()
            .find(|p| p.starts_with("/sys/fs/cgroup/cpu/") || cgroup_v2())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
        throttled = stat
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if throttled > 2 {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(124));
    assert!(throttled > 2, "the guest was never throttled");
    world.assert_nothing_left();
}

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Forbidden calls made by the host side of the sandboxed process itself, after seccomp.
#[test]
fn forbidden_system_calls_fail_with_eperm() {
    let world = privileged_test!(World::new());
    for call in FORBIDDEN_CALLS {
        hooked_call_fails_with(&world, call, libc::EPERM);
    }
    world.assert_nothing_left();
}

/// Has `wrun-hooked` make `call` from inside the sandbox, after its filter is on; checks that
/// it failed with `errno` and that the guest never ran (the hook ends the process).
fn hooked_call_fails_with(world: &World, call: &str, errno: i32) {
    let out = world
        .hooked_cmd(&[s(&sample("hello"))])
        .env("WRUN_TEST_SYSCALL", call)
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out),
        format!("hook {call}: errno {errno}\n"),
        "{call}"
    );
    assert_eq!(stdout(&out), "", "{call}: the guest must not have run");
}

#[test]
fn unlisted_system_calls_are_unimplemented_so_fallbacks_work() {
    let world = privileged_test!(World::new());
    for call in UNIMPLEMENTED_CALLS {
        hooked_call_fails_with(&world, call, libc::ENOSYS);
    }
    world.assert_nothing_left();
}

#[test]
fn descriptors_of_the_caller_do_not_reach_the_sandbox() {
    privileged_test!();
    use std::os::unix::process::CommandExt;
    let world = World::new();
    let secret = tempfile::NamedTempFile::new().unwrap();
    let file = std::fs::File::open(secret.path()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut cmd = world.run_cmd(&["--timeout", "30s", s(&sample("spin"))]);
    // SAFETY: dup2 is async-signal-safe; it leaves fd 9 open across exec (no CLOEXEC).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = loop {
        let host_ns = std::fs::read_link("/proc/self/ns/cgroup").unwrap();
        let pid = world.live_cgroups().into_iter().find_map(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse::<i32>()
                .ok()
        });
        if let Some(pid) = pid {
            if std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).is_ok_and(|ns| ns != host_ns) {
                break pid;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The wrun parent still has fd 9; the sandboxed child must not.
    assert!(std::fs::read_link(format!("/proc/{}/fd/9", child.id())).is_ok());
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect();
    // The compiled code the sandbox opened itself (from the cache, where a cold run's code
    // is compiled before the sandbox starts) is no caller's descriptor.
    let artifact =
        |t: &String| t.starts_with(s(&world.root.path().join("cache"))) && t.ends_with(".cwasm");
    let leaked: Vec<&String> = fds
        .iter()
        .filter(|t| t.contains(s(secret.path())) || (t.contains("wrun-test") && !artifact(t)))
        .collect();
    assert!(leaked.is_empty(), "leaked: {leaked:?} of {fds:?}");
    // Nor a host directory to `openat` from (the cgroup hierarchies it moved itself in with).
    assert_eq!(directory_descriptors(pid as u32), Vec::<String>::new());
    // Only stdio, the runtime's event descriptors and the mapped artifact may remain.
    assert!(fds.len() <= 8, "{fds:?}");
    kill(child.id() as i32, libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(143));
    world.assert_nothing_left();
}
