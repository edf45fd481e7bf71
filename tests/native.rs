//! The native adapter: the locally built busybox image, `--rootfs`, OCI bundles, in the same
//! kernel sandbox as Wasm — and the native side of the escape suite.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use wrun_tests::*;

fn sh(world: &World, flags: &[&str], script: &str) -> std::process::Output {
    let mut args = flags.to_vec();
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    world.run(&args)
}

#[test]
fn busybox_runs_with_output_and_exit_codes() {
    let world = privileged_test!(busybox_world());
    let images = stdout(&world.wrun(&["images"]));
    assert_contains(&images, "busybox");
    assert_contains(&images, "native");
    let hello = world.run(&["busybox", "echo", "hello", "native"]);
    assert_eq!(stdout(&hello), "hello native\n");
    assert_eq!(hello.status.code(), Some(0));
    assert_eq!(sh(&world, &[], "exit 42").status.code(), Some(42));
    let missing = world.run(&["busybox", "no-such-command"]);
    assert_one_line_error(
        &missing,
        127,
        "`no-such-command`: executable file not found",
    );
    let wasm_only = world.run(&["--shared-memory", "busybox", "true"]);
    assert_one_line_error(&wasm_only, 125, "--shared-memory is for Wasm modules");
    let id = stdout(&sh(&world, &[], "id -u; hostname"));
    let lines: Vec<&str> = id.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].len(), 12, "hostname is the short ID: {id}");
    world.assert_nothing_left();
}

#[test]
fn a_native_containers_own_network_has_only_loopback_and_it_is_up() {
    let world = privileged_test!(busybox_world());
    // As runc sets it up: `lo` up (127.0.0.1 answers), no other interface.
    let script =
        "ip -o link show | cut -d: -f2; nc -l -p 7000 -e echo hi & sleep 0.2; nc 127.0.0.1 7000";
    let out = sh(&world, &[], script);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), " lo\nhi\n", "{}", stderr(&out));
    world.assert_nothing_left();
}

#[test]
fn the_image_is_never_modified() {
    let world = privileged_test!(busybox_world());
    let first = sh(
        &world,
        &[],
        "echo data > /written && rm /bin/ls && test ! -e /bin/ls && echo changed",
    );
    assert_eq!(stdout(&first), "changed\n", "{}", stderr(&first));
    let second = sh(
        &world,
        &[],
        "test -e /written || echo clean; test -e /bin/ls && echo intact",
    );
    assert_eq!(stdout(&second), "clean\nintact\n");
    let layers = std::fs::read_dir(world.root.path().join("images/rootfs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(!layers.join("written").exists());
    assert!(layers.join("bin/ls").exists());
    let overlays = world.root.path().join("overlays");
    let left = std::fs::read_dir(&overlays).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "writable layers are removed with their run");
    world.assert_nothing_left();
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    let world = privileged_test!(busybox_world());
    let out = sh(
        &world,
        &["--pids", "16", "--timeout", "20s"],
        // The forks in a subshell: a failed fork ends the shell that tried it. The count
        // forks nothing.
        "(n=0; while [ $n -lt 64 ]; do sleep 5 & n=$((n+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo \"started $#\"",
    );
    let text = stdout(&out);
    let live: u32 = text
        .trim()
        .strip_prefix("started ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(999);
    let limited = (8..=16).contains(&live);
    assert!(limited, "{live} processes under a limit of 16: {text}");
    world.assert_nothing_left();
}

#[test]
fn memory_limit_kills_a_hog_and_inspect_says_oom() {
    let world = privileged_test!(busybox_world());
    let out = world.run(&[
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=200M",
        "count=1",
    ]);
    assert_exit(&out, 137);
    assert_contains(&stderr(&out), "out of memory");
    let json = stdout(&world.wrun(&["inspect", "hog"]));
    assert_contains(&json, "\"OOMKilled\": true");
    assert_contains(&json, "\"ExitCode\": 137");
    world.wrun(&["rm", "hog"]);
    world.assert_nothing_left();
}

#[test]
fn the_container_sees_only_itself() {
    let world = privileged_test!(busybox_world());
    let out = sh(
        &world,
        &[],
        "ls /proc | grep -c '^[0-9]'; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
         ip link show lo | grep -c UP; cat /proc/mounts | cut -d' ' -f2 | sort | tr '\\n' ' '",
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].parse::<u32>().unwrap() <= 3,
        "host processes visible: {text}"
    );
    assert_eq!(lines[1], "lo", "{text}");
    assert_eq!(lines[2], "1", "lo is up, as runc sets it: {text}");
    let mounts = lines[3];
    assert_lacks(mounts, "/work");
    assert_lacks(mounts, "/sys/fs/cgroup/memory");
    for expected in ["/ ", "/proc ", "/dev ", "/dev/pts ", "/sys ", "/tmp "] {
        assert!(
            mounts.contains(expected),
            "{expected} missing from {mounts}"
        );
    }
    world.assert_nothing_left();
}

#[test]
fn read_only_root_refuses_writes() {
    let world = privileged_test!(busybox_world());
    let out = sh(
        &world,
        &["--read-only"],
        "touch /x 2>&1; touch /tmp/ok && echo tmp-writable",
    );
    let text = stdout(&out);
    assert_contains(&text, "Read-only file system");
    assert_contains(&text, "tmp-writable");
    world.assert_nothing_left();
}

#[test]
fn proc_is_masked_and_read_only_as_runc_does() {
    let world = privileged_test!(busybox_world());
    let out = sh(
        &world,
        &[],
        "exec 2>&1; cat /proc/keys /proc/timer_list | wc -c; ls /sys/firmware | wc -l; \
         echo 1 > /proc/sys/kernel/domainname; echo 1 > /proc/irq/default_smp_affinity; echo done",
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].trim(), "0", "masked files read empty: {text}");
    assert_eq!(lines[1].trim(), "0", "masked directories are empty: {text}");
    assert!(text.matches("Read-only file system").count() >= 2, "{text}");
    world.assert_nothing_left();
}

#[test]
fn native_escapes_are_denied() {
    let world = privileged_test!(busybox_world());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_pid = std::process::id();
    let script = format!(
        "mount -t tmpfs x /mnt 2>/dev/null && echo ESCAPED-mount; \
         mknod /tmp/sda b 8 0 2>/dev/null && echo ESCAPED-mknod; \
         kill -0 {host_pid} 2>/dev/null && echo ESCAPED-signal; \
         nc -w 1 127.0.0.1 {port} </dev/null 2>/dev/null && echo ESCAPED-tcp; \
         ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && echo ESCAPED-raw; \
         unshare -U true 2>/dev/null && echo ESCAPED-userns; \
         chroot / true 2>/dev/null; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null && echo ESCAPED-cgroupfs; \
         ls /work 2>/dev/null && echo ESCAPED-host-files; \
         echo checked"
    );
    let out = sh(&world, &[], &script);
    let text = stdout(&out);
    assert!(text.ends_with("checked\n"), "{text} {}", stderr(&out));
    assert_lacks(&text, "ESCAPED");
    let reached = listener.accept().is_ok();
    assert!(!reached, "the container reached the host's listener");
    world.assert_nothing_left();
}

#[test]
fn init_reaps_adopted_zombies() {
    let world = privileged_test!(busybox_world());
    // The subshell exits at once; its sleeping child is orphaned to PID 1 and exits later.
    let script = "(sleep 0.2 &); sleep 1; ps -o stat,comm | grep -c '^Z'";
    let with_init = sh(&world, &["--init"], script);
    assert_eq!(stdout(&with_init).trim(), "0", "{}", stderr(&with_init));
    let pid1 = sh(&world, &["--init"], "cat /proc/1/cmdline | tr '\\0' ' '");
    let pid1 = stdout(&pid1);
    assert!(pid1.contains("wrun"), "PID 1 is wrun's init: {pid1}");
    let without = sh(&world, &[], "cat /proc/1/cmdline | tr '\\0' ' '");
    let without = stdout(&without);
    assert!(
        without.starts_with("sh -c"),
        "PID 1 is the workload: {without}"
    );
    world.assert_nothing_left();
}

#[test]
fn rootfs_directory_runs() {
    let world = privileged_test!(busybox_world());
    let rootfs = std::fs::read_dir(world.root.path().join("images/rootfs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = world.run(&[
        "--rootfs",
        s(&rootfs),
        "--read-only",
        "--",
        "sh",
        "-c",
        "echo from-dir; touch /x 2>&1",
    ]);
    let text = stdout(&out);
    assert!(
        text.starts_with("from-dir\n") && text.contains("Read-only"),
        "{text}"
    );
    world.assert_nothing_left();
}

/// A bundle from `runc spec`, with the busybox root and the given process arguments.
fn bundle(world: &World, args: &[&str], edit: impl FnOnce(&mut String)) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = world.root.path().join(format!("bundle-{n}"));
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let layers = std::fs::read_dir(world.root.path().join("images/rootfs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", layers.display()))
        .arg(dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(copied.success());
    let spec = Command::new("runc")
        .args(["spec", "-b"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(spec.success(), "runc spec failed (is runc installed?)");
    let mut config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    config = config.replace("\"terminal\": true", "\"terminal\": false");
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    config = config.replacen("\"sh\"", &quoted.join(", "), 1);
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

#[test]
fn bundle_resources_reach_the_cgroup() {
    let world = privileged_test!(busybox_world());
    let dir = bundle(&world, &["sleep", "30"], |config| {
        *config = config.replacen(
            "\"resources\": {",
            "\"resources\": {\"memory\": {\"limit\": 50331648}, \"cpu\": {\"quota\": 20000, \"period\": 100000}, \"pids\": {\"limit\": 12},",
            1,
        );
    });
    let mut child = world
        .run_cmd(&["--bundle", s(&dir)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (memory, quota, pids) = wait_for(20, "the bundle's cgroup never appeared", || {
        Some((
            world.cgroup_file("memory", "memory.limit_in_bytes")?,
            world.cgroup_file("cpu", "cpu.cfs_quota_us")?,
            world.cgroup_file("pids", "pids.max")?,
        ))
    });
    assert_eq!(
        (memory.as_str(), quota.as_str(), pids.as_str()),
        ("50331648", "20000", "12")
    );
    kill(child.id() as i32, libc::SIGKILL);
    child.wait().unwrap();
    let next = world.run(&[s(&sample("hello"))]);
    assert_eq!(next.status.code(), Some(0));
    world.assert_nothing_left();
}

#[test]
fn bundle_runs_with_its_hostname_and_refuses_what_it_cannot_honour() {
    let world = privileged_test!(busybox_world());
    let dir = bundle(&world, &["sh", "-c", "hostname; echo $HOME-$TERM"], |_| {});
    let out = world.run(&["--bundle", s(&dir)]);
    assert_eq!(stdout(&out), "runc\n/root-xterm\n", "{}", stderr(&out));
    for (what, edit) in [
        (
            "apparmorProfile",
            "\"apparmorProfile\": \"docker-default\",",
        ),
        (
            "selinuxLabel",
            "\"selinuxLabel\": \"system_u:system_r:svirt_lxc_net_t:s0\",",
        ),
    ] {
        let bad = bundle(&world, &["true", what], |config| {
            *config = config.replacen("\"cwd\": \"/\",", &format!("\"cwd\": \"/\", {edit}"), 1);
        });
        let out = world.run(&["--bundle", s(&bad)]);
        assert_one_line_error(&out, 125, what);
    }
    world.assert_nothing_left();
}

#[test]
fn wasm_bundles_run_in_wasmtime_with_the_root_read_only() {
    let world = privileged_test!(busybox_world());
    let dir = bundle(&world, &["/app.wasm", "/etc/passwd"], |_| {});
    std::fs::copy(sample("cat"), dir.join("rootfs/app.wasm")).unwrap();
    let out = world.run(&["--bundle", s(&dir)]);
    assert!(
        stdout(&out).starts_with("root:x:0:0"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let write = bundle(&world, &["/app.wasm", "-o", "/new", "/etc/passwd"], |_| {});
    std::fs::copy(sample("cat"), write.join("rootfs/app.wasm")).unwrap();
    let refused = world.run(&["--bundle", s(&write)]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "the root is read-only: {}",
        stderr(&refused)
    );
    assert!(!write.join("rootfs/new").exists());
    // An entrypoint without the `.wasm` name, told by its magic (crun's `compat-smart`), and
    // one crun's `compat` annotation names.
    for annotation in [
        "",
        "\"annotations\": {\"module.wasm.image/variant\": \"compat\"},",
    ] {
        let plain = bundle(&world, &["/app", "/etc/passwd"], |config| {
            *config = config.replacen(
                "\"process\": {",
                &format!("{annotation} \"process\": {{"),
                1,
            );
        });
        std::fs::copy(sample("cat"), plain.join("rootfs/app")).unwrap();
        let out = world.run(&["--bundle", s(&plain)]);
        assert!(
            stdout(&out).starts_with("root:x:0:0"),
            "{annotation}: {}",
            stderr(&out)
        );
    }
    world.assert_nothing_left();
}

#[test]
fn killing_the_supervisor_of_a_native_run_leaves_nothing_after_the_next_run() {
    let world = privileged_test!(busybox_world());
    let mut parent = world
        .hooked_cmd(&["busybox", "sleep", "1000"])
        .env("WRUN_TEST_PAUSE", "running")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(parent.stderr.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "paused at running");
    // The child makes the layer on its own CPU, maybe after the parent reached its pause.
    wait_until(5, "no writable layer", || {
        !world.writable_layers().is_empty()
    });
    kill(parent.id() as i32, libc::SIGKILL);
    parent.wait().unwrap();
    assert_eq!(world.writable_layers().len(), 1, "the writable layer stays");
    let next = world.run(&["busybox", "true"]);
    assert_exit(&next, 0);
    assert_eq!(world.run_records(), Vec::<String>::new());
    world.assert_nothing_left();
}

/// A cgroup of someone else's under `parent`: made in every hierarchy a run uses, with
/// `pids.max` set to 77 and a `sleep` in it.
struct Victim {
    dirs: Vec<PathBuf>,
    sleeper: std::process::Child,
}

impl Victim {
    fn new(path: &str) -> Victim {
        let dirs = cgroup_dirs(path);
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
        }
        let sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
        for dir in &dirs {
            if dir.join("pids.max").exists() {
                std::fs::write(dir.join("pids.max"), "77").unwrap();
            }
            std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        }
        Victim { dirs, sleeper }
    }

    fn pids_max(&self) -> String {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("pids.max")).ok())
            .expect("a pids.max")
            .trim()
            .to_string()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        for dir in &self.dirs {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn a_bundle_naming_a_cgroup_with_processes_is_refused_and_the_cgroup_left_alone() {
    let world = privileged_test!(busybox_world());
    let path = format!("{}/victim", world.cgroup_parent);
    let mut victim = Victim::new(&path);
    let dir = bundle(&world, &["true"], |config| {
        *config = config.replacen(
            "\"linux\": {",
            &format!("\"linux\": {{\"cgroupsPath\": \"/{path}\","),
            1,
        );
    });
    let out = world.run(&["--bundle", s(&dir)]);
    assert_one_line_error(&out, 125, "already has processes in it");
    assert_eq!(victim.pids_max(), "77", "the victim's limit was rewritten");
    assert!(
        victim.sleeper.try_wait().unwrap().is_none(),
        "the victim's process died"
    );
    assert!(victim.dirs.iter().all(|d| d.exists()));
    assert_eq!(world.run_records(), Vec::<String>::new());
    // A run killed mid-way and the sweep after it must not touch it either.
    let next = world.run(&["busybox", "true"]);
    assert_exit(&next, 0);
    assert!(victim.sleeper.try_wait().unwrap().is_none());
    drop(victim);
    world.assert_nothing_left();
}

#[test]
fn an_empty_cgroup_named_by_a_bundle_is_joined_and_left_in_place() {
    let world = privileged_test!(busybox_world());
    let path = format!("{}/given", world.cgroup_parent);
    let dirs = cgroup_dirs(&path);
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
    }
    let dir = bundle(&world, &["cat", "/proc/self/cgroup"], |config| {
        *config = config.replacen(
            "\"linux\": {",
            &format!("\"linux\": {{\"cgroupsPath\": \"/{path}\","),
            1,
        );
    });
    let out = world.run(&["--bundle", s(&dir)]);
    assert_exit(&out, 0);
    assert!(
        dirs.iter().all(|d| d.exists()),
        "someone else's cgroup was removed"
    );
    assert_eq!(world.run_records(), Vec::<String>::new());
    for dir in &dirs {
        std::fs::remove_dir(dir).unwrap();
    }
    world.assert_nothing_left();
}

#[test]
fn io_uring_is_denied_to_native_workloads() {
    let world = privileged_test!(busybox_world());
    let dir = bundle(&world, &["/probe"], |_| {});
    let source = world.root.path().join("probe.c");
    std::fs::write(
        &source,
        "#include <errno.h>\n#include <stdio.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n\
         int main(void) { char params[120] = {0};\n\
         long fd = syscall(SYS_io_uring_setup, 4, params);\n\
         printf(\"%ld %d\\n\", fd, fd < 0 ? errno : 0); return 0; }\n",
    )
    .unwrap();
    let built = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("rootfs/probe"))
        .arg(&source)
        .status()
        .expect("cc");
    assert!(built.success(), "cc -static failed");
    let out = world.run(&["--bundle", s(&dir)]);
    assert_eq!(
        stdout(&out),
        format!("-1 {}\n", libc::EPERM),
        "{}",
        stderr(&out)
    );
    world.assert_nothing_left();
}

#[test]
fn sysfs_shows_the_containers_network_devices_not_the_hosts() {
    let world = privileged_test!(busybox_world());
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(host.len() > 1, "the host has only {host:?}");
    let out = sh(&world, &[], "ls /sys/class/net");
    assert_eq!(stdout(&out), "lo\n", "{}", stderr(&out));
    // A bundle, with runc's masked paths under /sys and a read-only root.
    let dir = bundle(
        &world,
        &[
            "sh",
            "-c",
            "ls /sys/class/net; ls /sys/firmware | wc -l; touch /x",
        ],
        |config| *config = config.replacen("\"readonly\": false", "\"readonly\": true", 1),
    );
    let out = world.run(&["--bundle", s(&dir)]);
    assert_eq!(stdout(&out), "lo\n0\n", "{}", stderr(&out));
    assert_contains(&stderr(&out), "Read-only file system");
    world.assert_nothing_left();
}

#[test]
fn fifty_supervisors_killed_at_random_leave_no_writable_layer_after_the_next_command() {
    let world = privileged_test!(busybox_world());
    let mut seed = std::process::id() as u64 | 1;
    for _ in 0..50 {
        // xorshift: a spread of kill times over the start, run and clean-up.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 40_000);
        let mut run = world
            .run_cmd(&["busybox", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        kill(run.id() as i32, libc::SIGKILL);
        run.wait().unwrap();
    }
    // Sandboxes die with their supervisor; give the last ones time to go.
    std::thread::sleep(Duration::from_millis(200));
    let next = world.wrun(&["ps", "-a"]);
    assert_exit(&next, 0);
    assert_eq!(world.run_records(), Vec::<String>::new());
    world.assert_nothing_left();
}

#[test]
fn a_native_workload_starts_with_default_signals_and_an_empty_mask() {
    let world = privileged_test!(busybox_world());
    let status = world.run(&[
        "busybox",
        "grep",
        "-E",
        "^Sig(Blk|Ign)",
        "/proc/self/status",
    ]);
    assert_eq!(
        stdout(&status),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{}",
        stderr(&status)
    );
    // With SIGPIPE ignored, `yes` would spin on a closed pipe until the timeout.
    let out = sh(&world, &["--timeout", "20s"], "yes | head -n 1");
    assert_output(&out, 0, "y\n");
    world.assert_nothing_left();
}

#[test]
fn bundles_as_docker_and_podman_write_them_get_sysctls_rlimits_and_their_seccomp_names() {
    let world = privileged_test!(busybox_world());
    let host = |key: &str| std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap();
    let (port_start, shmmni) = (
        host("net/ipv4/ip_unprivileged_port_start"),
        host("kernel/shmmni"),
    );
    // Namespaced sysctls reach the container's own namespaces; /proc/sys stays read-only.
    let script = "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni; \
                  echo 9 2>/dev/null > /proc/sys/kernel/shmmni || echo read-only; ulimit -n";
    let dir = bundle(&world, &["sh", "-c", script], |config| {
        *config = config.replacen(
            "\"linux\": {",
            "\"linux\": {\"sysctl\": {\"net.ipv4.ip_unprivileged_port_start\": \"80\", \"kernel.shmmni\": \"1234\"},",
            1,
        );
        *config = config.replace("\"soft\": 1024", "\"soft\": 512");
    });
    let out = world.run(&["--bundle", s(&dir)]);
    assert_output(&out, 0, "80\n1234\nread-only\n512\n");
    assert_eq!(host("net/ipv4/ip_unprivileged_port_start"), port_start);
    assert_eq!(host("kernel/shmmni"), shmmni);
    // Docker's and Podman's profiles name calls x86_64 has not (`bdflush`): skipped, as
    // runc and crun do; the rest of the rule holds.
    let dir = bundle(
        &world,
        &["sh", "-c", "mount -t tmpfs none /mnt || echo refused"],
        |config| {
            *config = config.replacen(
            "\"linux\": {",
            "\"linux\": {\"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"bdflush\", \"mount\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 1}]},",
            1,
        );
        },
    );
    let out = world.run(&["--bundle", s(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_contains(&stdout(&out), "refused");
    // What would change the host, or what the workload could never get: one line, nothing made.
    let swappiness = bundle(&world, &["true"], |config| {
        *config = config.replacen(
            "\"linux\": {",
            "\"linux\": {\"sysctl\": {\"vm.swappiness\": \"1\"},",
            1,
        );
    });
    assert_one_line_error(
        &world.run(&["--bundle", s(&swappiness)]),
        125,
        "vm.swappiness",
    );
    let hard_here = rlimit_nofile_hard();
    if hard_here < u64::MAX {
        let above = bundle(&world, &["true"], |config| {
            *config = config.replace("\"hard\": 1024", &format!("\"hard\": {}", hard_here + 1));
        });
        assert_one_line_error(&world.run(&["--bundle", s(&above)]), 125, "RLIMIT_NOFILE");
    }
    world.assert_nothing_left();
}

/// This process's hard limit on open files, which a workload inherits.
fn rlimit_nofile_hard() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_max
}

/// Puts a bundle's container in this world's cgroup parent.
fn in_cgroup(world: &World, id: &str) -> impl FnOnce(&mut String) {
    let cgroups_path = format!("{}/{id}", world.cgroup_parent);
    move |config: &mut String| {
        let field = format!("\"linux\": {{\"cgroupsPath\": \"{cgroups_path}\",");
        *config = config.replacen("\"linux\": {", &field, 1);
    }
}

/// `wrun create` of the bundle in `dir`. The init keeps create's stdout: the file `output`
/// in the bundle, not a pipe a test would wait on.
fn oci_create(world: &World, dir: &Path, id: &str, extra: &[&str]) -> std::process::ExitStatus {
    Command::new(wrun_bin())
        .args(["--root", s(world.root.path()), "create", "--bundle", s(dir)])
        .args(extra)
        .arg(id)
        .stdout(std::fs::File::create(dir.join("output")).unwrap())
        .status()
        .unwrap()
}

#[test]
fn the_oci_runtime_verbs_create_start_state_kill_and_delete_a_bundle() {
    let world = privileged_test!(busybox_world());
    let id = "oci-1";
    let dir = bundle(
        &world,
        &["sh", "-c", "echo started; sleep 30"],
        in_cgroup(&world, id),
    );
    let (pid_file, output) = (dir.join("init.pid"), dir.join("output"));
    let create =
        |dir: &std::path::Path, id: &str, extra: &[&str]| oci_create(&world, dir, id, extra);
    let created = create(&dir, id, &["--pid-file", s(&pid_file)]);
    assert!(created.success());
    let state = || -> serde_json::Value {
        let out = world.wrun(&["state", id]);
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|_| panic!("{}", stderr(&out)))
    };
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let created = state();
    assert_eq!(
        (created["status"].as_str(), created["pid"].as_i64()),
        (Some("created"), Some(pid))
    );
    assert_eq!(created["bundle"].as_str(), Some(s(&dir)));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "",
        "nothing runs before start"
    );
    assert_exit(&world.wrun(&["start", id]), 0);
    wait_until(10, "the workload never started", || {
        std::fs::read_to_string(&output).is_ok_and(|text| text == "started\n")
    });
    assert_eq!(state()["status"].as_str(), Some("running"));
    // runtime.md: the ID is unique; a second create with it fails and changes nothing.
    assert_one_line_error(
        &world.wrun(&["create", "--bundle", s(&dir), id]),
        125,
        "already exists",
    );
    assert_eq!(state()["status"].as_str(), Some("running"));
    assert_one_line_error(&world.wrun(&["start", id]), 125, "running");
    assert_one_line_error(&world.wrun(&["delete", id]), 125, "running");
    assert_exit(&world.wrun(&["kill", id, "KILL"]), 0);
    wait_until(10, "the container never stopped", || {
        state()["status"].as_str() == Some("stopped")
    });
    // runtime.md: kill of a container that is neither created nor running is an error.
    assert_one_line_error(&world.wrun(&["kill", id, "TERM"]), 125, "stopped");
    assert_exit(&world.wrun(&["delete", id]), 0);
    assert_one_line_error(&world.wrun(&["state", id]), 125, "does not exist");
    assert_exit(&world.wrun(&["delete", "--force", id]), 0);
    // A created container never started is deleted as runc deletes it: its init ended.
    let never = bundle(&world, &["echo", "never"], |_| {});
    let created = create(&never, "oci-3", &[]);
    assert!(created.success());
    assert_exit(&world.wrun(&["delete", "oci-3"]), 0);
    assert_eq!(std::fs::read_to_string(never.join("output")).unwrap(), "");
    // A bundle wrun cannot honour: runc's JSON error on --log, nothing made.
    let log = dir.join("log.json");
    let bad = bundle(&world, &["true"], |config| {
        *config = config.replacen(
            "\"linux\": {",
            "\"linux\": {\"sysctl\": {\"vm.swappiness\": \"1\"},",
            1,
        );
    });
    let refused = world.wrun(&[
        "--log",
        s(&log),
        "--log-format",
        "json",
        "create",
        "--bundle",
        s(&bad),
        "oci-2",
    ]);
    assert_one_line_error(&refused, 125, "vm.swappiness");
    let logged: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(logged["level"].as_str(), Some("error"));
    assert_contains(logged["msg"].as_str().unwrap(), "vm.swappiness");
    assert_one_line_error(&world.wrun(&["state", "oci-2"]), 125, "does not exist");
    world.assert_nothing_left();
}

/// `run -d` of busybox with this world's cgroup parent; the container's ID.
fn detached_busybox(world: &World, name: &str, script: &str) -> String {
    let out = world.run(&["-d", "--name", name, "busybox", "sh", "-c", script]);
    assert_exit(&out, 0);
    stdout(&out).trim().to_string()
}

/// A field of `/proc/<pid>/status` (`CapEff`, `Seccomp`, ...).
fn status_field(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")));
    line.unwrap_or_else(|| panic!("no {field} in {status}"))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn exec_runs_a_command_inside_a_running_container_and_dies_with_it() {
    let world = privileged_test!(busybox_world());
    detached_busybox(&world, "web-1", "echo $$ > /tmp/init; sleep 300");
    let exec = |args: &[&str]| world.wrun(&[&["exec"], args].concat());
    wait_until(10, "the container never wrote its PID", || {
        exec(&["web-1", "cat", "/tmp/init"]).status.success()
    });
    // Its PID namespace (the container's init is 1), its writable root, its hostname.
    let seen = exec(&["web-1", "sh", "-c", "echo $$ $(cat /tmp/init) $(hostname)"]);
    let seen = stdout(&seen);
    let fields: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{seen}");
    assert_ne!(fields[0], "1");
    assert_eq!(fields[1], "1", "{seen}");
    let inspect = stdout(&world.wrun(&["inspect", "web-1"]));
    assert_contains(&inspect, fields[2]);
    // Exit codes, user, directory and environment as Docker's exec gives them.
    assert_exit(&exec(&["web-1", "sh", "-c", "exit 7"]), 7);
    assert_output(
        &exec(&[
            "-u",
            "nobody",
            "-w",
            "/etc",
            "-e",
            "GREETING=hi",
            "web-1",
            "sh",
            "-c",
            "echo $(id -u) $(pwd) $GREETING",
        ]),
        0,
        "65534 /etc hi\n",
    );
    // Stdin only with -i.
    let fed = |flags: &[&str]| {
        let mut child = world
            .command(wrun_bin())
            .args(["exec"])
            .args(flags)
            .args(["web-1", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"fed\n").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    assert_eq!(fed(&["-i"]), "fed\n");
    assert_eq!(fed(&[]), "");
    // The same cgroup, capabilities, seccomp filter and no_new_privs as the workload.
    let pid_file = world.root.path().join("exec.pid");
    assert_exit(
        &exec(&["-d", "--pid-file", s(&pid_file), "web-1", "sleep", "300"]),
        0,
    );
    let exec_pid = std::fs::read_to_string(&pid_file).unwrap();
    let inspected: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let init_pid = inspected[0]["State"]["Pid"].to_string();
    for field in ["CapEff", "CapBnd", "NoNewPrivs", "Seccomp"] {
        assert_eq!(
            status_field(&exec_pid, field),
            status_field(&init_pid, field),
            "{field}"
        );
    }
    assert_eq!(status_field(&exec_pid, "Seccomp"), "2");
    let cgroup = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(cgroup(&exec_pid), cgroup(&init_pid));
    // One line for each thing that cannot be done.
    assert_one_line_error(&exec(&["web-1", "no-such-tool"]), 127, "not found");
    assert_one_line_error(
        &exec(&["no-such-container", "true"]),
        125,
        "no-such-container",
    );
    assert_one_line_error(&exec(&["web-1"]), 125, "no command");
    // -t: a terminal of its own, relayed to this one (`script` gives the test a terminal).
    let through_script = |inner: &str| {
        let wrun = format!(
            "{} --root {} exec {inner}",
            s(&wrun_bin()),
            s(world.root.path())
        );
        Command::new("script")
            .args(["-qec", &wrun, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let tty = through_script("-t web-1 sh -c 'test -t 0 && test -t 1 && echo tty; exit 6'");
    assert_eq!(tty.status.code(), Some(6), "{}", stderr(&tty));
    assert_contains(&stdout(&tty), "tty\r\n");
    assert_one_line_error(
        &exec(&["-d", "-t", "web-1", "true"]),
        125,
        "--console-socket",
    );
    assert_one_line_error(
        &exec(&["--console-socket", "/nowhere", "web-1", "true"]),
        125,
        "terminal",
    );
    let wasm = world.run(&["-d", "--name", "wasm-1", s(&sample("idle"))]);
    assert_exit(&wasm, 0);
    assert_one_line_error(&exec(&["wasm-1", "true"]), 125, "Wasm");
    assert_exit(&world.wrun(&["rm", "-f", "wasm-1"]), 0);
    // The exec'd process ends with the container.
    assert_exit(&world.wrun(&["stop", "-t", "1", "web-1"]), 0);
    wait_until(10, "the exec'd process outlived its container", || {
        !std::path::Path::new(&format!("/proc/{}", exec_pid.trim())).exists()
            || status_field(exec_pid.trim(), "State") == "Z"
    });
    assert_one_line_error(&exec(&["web-1", "true"]), 125, "not running");
    assert_exit(&world.wrun(&["rm", "web-1"]), 0);
    world.assert_nothing_left();
}

#[test]
fn runc_style_exec_takes_a_process_file_detaches_and_writes_its_pid() {
    let world = privileged_test!(busybox_world());
    let dir = bundle(&world, &["sleep", "300"], in_cgroup(&world, "oci-exec"));
    assert!(oci_create(&world, &dir, "oci-exec", &[]).success());
    // A terminal exactly when the process asks for one, as runc's create.
    let mismatch = world.wrun(&[
        "create",
        "--bundle",
        s(&dir),
        "--console-socket",
        "/nowhere",
        "oci-tty",
    ]);
    assert_one_line_error(&mismatch, 125, "process.terminal is false");
    let wants_tty = bundle(&world, &["true"], |config| {
        *config = config.replace("\"terminal\": false", "\"terminal\": true");
    });
    let refused = world.wrun(&["create", "--bundle", s(&wants_tty), "oci-tty"]);
    assert_one_line_error(&refused, 125, "--console-socket");
    assert_exit(&world.wrun(&["start", "oci-exec"]), 0);
    // As containerd's runc shim and conmon write it.
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo $(id -u):$(pwd):$MARK; exec sleep 300"],
        "env": ["PATH=/bin", "MARK=from-process"],
        "cwd": "/tmp",
        "user": {"uid": 65534, "gid": 65534},
        "capabilities": {"bounding": [], "effective": [], "permitted": []},
        "noNewPrivileges": true
    });
    let process_file = dir.join("process.json");
    std::fs::write(&process_file, process.to_string()).unwrap();
    let pid_file = dir.join("exec.pid");
    // Its streams are the caller's, as runc's: files here, not pipes this test would wait on.
    let exec = world
        .command(wrun_bin())
        .args(["exec", "--process", s(&process_file), "--detach"])
        .args(["--pid-file", s(&pid_file), "oci-exec"])
        .stdout(std::fs::File::create(dir.join("exec-output")).unwrap())
        .status()
        .unwrap();
    assert!(exec.success());
    let exec_pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(status_field(&exec_pid, "CapEff"), "0000000000000000");
    wait_until(10, "the exec'd process wrote nothing", || {
        std::fs::read_to_string(dir.join("exec-output")).unwrap() == "65534:/tmp:from-process\n"
    });
    assert_exit(&world.wrun(&["kill", "oci-exec", "KILL"]), 0);
    wait_until(10, "the container never stopped", || {
        stdout(&world.wrun(&["state", "oci-exec"])).contains("stopped")
    });
    assert_one_line_error(
        &world.wrun(&["exec", "--process", s(&process_file), "oci-exec"]),
        125,
        "stopped",
    );
    assert_exit(&world.wrun(&["delete", "oci-exec"]), 0);
    world.assert_nothing_left();
}

#[test]
fn bundle_hooks_run_with_the_state_and_ps_and_features_answer_as_runc_does() {
    let world = privileged_test!(busybox_world());
    let out = world.root.path().join("hooks");
    std::fs::create_dir_all(&out).unwrap();
    let hook = |name: &str| {
        let script = format!("cat > {}/{name}.json", out.display());
        serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", script]})
    };
    let hooks = serde_json::json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    // In this world's cgroup parent, with these hooks.
    let with_hooks = |id: &str, hooks: serde_json::Value| {
        let in_world = in_cgroup(&world, id);
        move |config: &mut String| {
            in_world(config);
            let mut spec: serde_json::Value = serde_json::from_str(config).unwrap();
            spec["hooks"] = hooks;
            *config = spec.to_string();
        }
    };
    let dir = bundle(&world, &["sleep", "300"], with_hooks("hooked", hooks));
    assert!(oci_create(&world, &dir, "hooked", &[]).success());
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(out.join(format!("{name}.json")));
        serde_json::from_str(&text.unwrap_or_else(|e| panic!("{name}: {e}"))).unwrap()
    };
    let prestart = read("prestart");
    assert_eq!(prestart["id"].as_str(), Some("hooked"));
    assert_eq!(prestart["status"].as_str(), Some("created"));
    let init = prestart["pid"]
        .as_i64()
        .expect("the state has the init's PID");
    assert_eq!(read("createRuntime")["pid"].as_i64(), Some(init));
    assert!(
        !out.join("poststart.json").exists(),
        "poststart before start"
    );
    assert_exit(&world.wrun(&["start", "hooked"]), 0);
    assert_eq!(read("poststart")["status"].as_str(), Some("running"));
    // `ps` lists the container's processes as runc's does.
    assert_exit(&world.wrun(&["exec", "-d", "hooked", "sleep", "299"]), 0);
    let pids: Vec<i64> =
        serde_json::from_str(&stdout(&world.wrun(&["ps", "--format", "json", "hooked"]))).unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&init));
    let table = stdout(&world.wrun(&["ps", "hooked"]));
    assert_contains(&table, "PID");
    assert_contains(&table, "sleep 299");
    assert_exit(&world.wrun(&["delete", "--force", "hooked"]), 0);
    assert_eq!(read("poststop")["id"].as_str(), Some("hooked"));
    // A failing prestart hook fails create with its reason, and leaves nothing.
    let failing = serde_json::json!({"prestart": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo no network for you >&2; exit 3"]}
    ]});
    let dir = bundle(&world, &["sleep", "300"], with_hooks("refused", failing));
    let refused = world.wrun(&["create", "--bundle", s(&dir), "refused"]);
    assert_one_line_error(
        &refused,
        125,
        "prestart hook `/bin/sh` failed (exit status: 3): no network for you",
    );
    assert_one_line_error(&world.wrun(&["state", "refused"]), 125, "does not exist");
    // Hooks inside the container's namespaces are refused, not ignored.
    let inside = serde_json::json!({"createContainer": [{"path": "/bin/true"}]});
    let dir = bundle(&world, &["true"], with_hooks("inside", inside));
    let refused = world.wrun(&["create", "--bundle", s(&dir), "inside"]);
    assert_one_line_error(&refused, 125, "createContainer");
    // `features` says what wrun honours.
    let features: serde_json::Value =
        serde_json::from_str(&stdout(&world.wrun(&["features"]))).unwrap();
    assert_eq!(
        features["hooks"],
        serde_json::json!(["prestart", "createRuntime", "poststart", "poststop"])
    );
    assert!(features["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("pid")));
    assert_eq!(
        features["linux"]["seccomp"]["enabled"],
        serde_json::json!(true)
    );
    assert_eq!(
        features["linux"]["apparmor"]["enabled"],
        serde_json::json!(false)
    );
    world.assert_nothing_left();
}
