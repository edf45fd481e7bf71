//! Images and the Docker-style lifecycle, end to end: pack, import, export, `run -d`, `ps`,
//! `logs`, `stop`, `kill`, `rm`, `inspect`, `stats`, and the scale-out scenario.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wrun_tests::*;

/// `wrun --root ROOT ARGS...`, asserting success; returns stdout.
fn ok(world: &World, args: &[&str]) -> String {
    let out = world.wrun(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `run -d` with this world's cgroup parent; returns the container ID.
fn detach(world: &World, args: &[&str]) -> String {
    let mut all = vec!["run", "-d", "--cgroup-parent", &world.cgroup_parent];
    all.extend_from_slice(args);
    let id = ok(world, &all).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    id
}

fn ps(world: &World, all: bool) -> Vec<Vec<String>> {
    let text = ok(world, if all { &["ps", "-a"] } else { &["ps"] });
    text.lines()
        .skip(1)
        .map(|l| {
            l.split("   ")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

fn names(world: &World, all: bool) -> Vec<String> {
    let mut names: Vec<String> = ps(world, all)
        .into_iter()
        .map(|row| row.last().cloned().unwrap())
        .collect();
    names.sort();
    names
}

fn wait_for_log(world: &World, name: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = ok(world, &["logs", name]);
        if logs.contains(text) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never logged {text:?}: {logs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn inspect(world: &World, name: &str) -> String {
    ok(world, &["inspect", name])
}

#[test]
fn scale_out_three_replicas_of_frontend_app() {
    let world = privileged_test!(World::new());
    ok(
        &world,
        &["image", "pack", s(&sample("idle")), "-t", "frontend-app"],
    );
    let started = Instant::now();
    let ids: Vec<String> = (1..=3)
        .map(|n| {
            let name = format!("frontend-app-{n}");
            detach(
                &world,
                &[
                    "--name",
                    &name,
                    "-e",
                    &format!("REPLICA={name}"),
                    "frontend-app",
                ],
            )
        })
        .collect();
    eprintln!("three replicas started in {:?}", started.elapsed());
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "distinct IDs");
    assert_eq!(
        names(&world, false),
        ["frontend-app-1", "frontend-app-2", "frontend-app-3"]
    );
    for row in ps(&world, false) {
        assert!(row[4].starts_with("Up"), "{row:?}");
        assert_eq!(row[1], "frontend-app");
    }
    for n in 1..=3 {
        let name = format!("frontend-app-{n}");
        assert_eq!(
            wait_for_log(&world, &name, "ready"),
            format!("{name} ready\n")
        );
    }
    let stats = ok(&world, &["stats", "--no-stream"]);
    assert_eq!(stats.lines().count(), 4, "{stats}");
    ok(
        &world,
        &[
            "stop",
            "-t",
            "5",
            "frontend-app-1",
            "frontend-app-2",
            "frontend-app-3",
        ],
    );
    assert!(names(&world, false).is_empty());
    for row in ps(&world, true) {
        assert!(row[4].starts_with("Exited (143)"), "{row:?}");
    }
    ok(
        &world,
        &["rm", "frontend-app-1", "frontend-app-2", "frontend-app-3"],
    );
    assert!(ps(&world, true).is_empty());
    world.assert_nothing_left();
}

#[test]
fn run_by_image_name_and_digest_with_args_and_env_from_the_image() {
    let world = privileged_test!(World::new());
    let digest = ok(
        &world,
        &[
            "image",
            "pack",
            s(&sample("echo")),
            "-t",
            "echoer:v1",
            "--arg",
            "default",
            "-e",
            "GREETING=hi",
            "-e",
            "MODE=image",
        ],
    );
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"));
    let images = ok(&world, &["images"]);
    assert_contains(&images, "echoer");
    assert_contains(&images, "v1");
    assert_contains(&images, "wasm");
    let defaults = world.run(&["echoer:v1"]);
    assert_eq!(
        stdout(&defaults),
        "args: default\nenv: GREETING=hi\nenv: MODE=image\n"
    );
    let overridden = world.run(&["-e", "MODE=flag", &digest[7..19], "given", "args"]);
    assert_eq!(
        stdout(&overridden),
        "args: given args\nenv: GREETING=hi\nenv: MODE=flag\n"
    );
    let missing = world.run(&["no-such-image"]);
    assert_one_line_error(&missing, 127, "module or image `no-such-image` not found");
    world.assert_nothing_left();
}

#[test]
fn both_image_forms_export_and_import_and_run() {
    let world = privileged_test!(World::new());
    for (format, component) in [("image", "hello"), ("artifact", "hello.component")] {
        let name = format!("greeter-{format}");
        ok(
            &world,
            &[
                "image",
                "pack",
                s(&sample(component)),
                "-t",
                &name,
                "--format",
                format,
            ],
        );
        let archive = world.root.path().join(format!("{name}.tar"));
        ok(&world, &["image", "export", &name, "-o", s(&archive)]);
        let listing = std::process::Command::new("tar")
            .arg("tf")
            .arg(&archive)
            .output()
            .unwrap();
        let listing = stdout(&listing);
        assert_contains(&listing, "oci-layout");
        assert_contains(&listing, "index.json");
        assert!(
            listing
                .lines()
                .filter(|l| l.starts_with("blobs/sha256/"))
                .count()
                >= 3
        );
        // A fresh state root imports it, and the run starts warm (precompiled on import).
        let other = World::new();
        let imported = ok(&other, &["image", "import", s(&archive)]);
        assert!(
            imported.starts_with(&format!("{name}:latest sha256:")),
            "{imported}"
        );
        let out = other.run(&["--verbose", &name]);
        assert_eq!(stdout(&out), "Hello from WebAssembly in a wrun sandbox!\n");
        assert_contains(&stderr(&out), "aot cache hit");
        other.assert_nothing_left();
    }
}

#[test]
fn a_tampered_module_blob_is_refused() {
    let world = privileged_test!(World::new());
    ok(
        &world,
        &["image", "pack", s(&sample("hello")), "-t", "victim"],
    );
    let blobs = world.root.path().join("images/blobs/sha256");
    let hello = std::fs::read(sample("hello")).unwrap();
    // The module blob is the one with the module's bytes.
    let blob = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == hello)
        .expect("the module blob");
    let mut tampered = hello.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let out = world.run(&["victim"]);
    assert_one_line_error(&out, 126, "does not match its image");
    world.assert_nothing_left();
}

#[test]
fn hostile_archives_leave_the_store_as_it_was() {
    let world = privileged_test!(World::new());
    ok(
        &world,
        &["image", "pack", s(&sample("hello")), "-t", "keep"],
    );
    let snapshot = || {
        let mut files: Vec<String> = walk(&world.root.path().join("images"));
        files.sort();
        files
    };
    let before = snapshot();
    let good = world.root.path().join("good.tar");
    ok(&world, &["image", "export", "keep", "-o", s(&good)]);
    let cases = hostile_archives(&world, &good);
    for (what, archive) in &cases {
        let out = world.wrun(&["image", "import", "-t", "intruder", s(archive)]);
        assert_ne!(out.status.code(), Some(0), "{what} was accepted");
        assert_eq!(stderr(&out).lines().count(), 1, "{what}: {}", stderr(&out));
        assert_eq!(snapshot(), before, "{what} changed the store");
    }
    assert!(!world.root.path().join("escaped").exists());
    world.assert_nothing_left();
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if !path.ends_with("store.lock") {
            out.push(format!(
                "{} {}",
                path.display(),
                std::fs::metadata(&path).unwrap().len()
            ));
        }
    }
    out
}

/// Archives that must be refused: traversal, a wrong digest, a missing blob, not a layout.
fn hostile_archives(world: &World, good: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let dir = world.root.path().join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .arg("xf")
        .arg(good)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let pack = |name: &str, extra: &dyn Fn(&Path)| {
        let work = dir.join(format!("{name}.d"));
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&unpacked, &work);
        extra(&work);
        let archive = dir.join(format!("{name}.tar"));
        let status = std::process::Command::new("tar")
            .args(["cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&work)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        archive
    };
    let traversal = {
        let archive = dir.join("traversal.tar");
        let status = std::process::Command::new("tar")
            .args(["cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked)
            .args(["--transform", "s|^index.json|../escaped|", "index.json"])
            .status()
            .unwrap();
        assert!(status.success());
        archive
    };
    let corrupt = pack("corrupt", &|work| {
        let blobs = work.join("blobs/sha256");
        let first = std::fs::read_dir(&blobs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&first).unwrap();
        bytes.push(b' ');
        std::fs::write(&first, bytes).unwrap();
    });
    let missing = pack("missing", &|work| {
        let blobs = work.join("blobs/sha256");
        let first = std::fs::read_dir(&blobs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_file(first).unwrap();
    });
    let symlink = pack("symlink", &|work| {
        std::os::unix::fs::symlink("/etc/passwd", work.join("blobs/sha256/evil")).unwrap();
    });
    let not_layout = dir.join("not-layout.tar");
    std::fs::write(&not_layout, b"not a tar at all").unwrap();
    vec![
        ("a `..` entry", traversal),
        ("a blob with the wrong content", corrupt),
        ("a missing blob", missing),
        ("a symlink entry", symlink),
        ("a file that is not a tar", not_layout),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn names_ids_inspect_kill_and_rm() {
    let world = privileged_test!(World::new());
    let id = detach(
        &world,
        &["--name", "web-1", "--memory", "64m", s(&sample("idle"))],
    );
    let clash = world.wrun(&[
        "run",
        "-d",
        "--cgroup-parent",
        &world.cgroup_parent,
        "--name",
        "web-1",
        s(&sample("idle")),
    ]);
    assert_one_line_error(&clash, 125, "the name `web-1` is already in use");
    // Any unique prefix of the ID works.
    let json = inspect(&world, &id[..6]);
    for needle in [
        format!("\"Id\": \"{id}\""),
        "\"Name\": \"web-1\"".to_string(),
        "\"Status\": \"running\"".to_string(),
        format!("\"CgroupMemoryBytes\": {}", (64u64 << 20) + (32 << 20)),
        "\"CgroupPath\": \"".to_string(),
    ] {
        assert!(json.contains(&needle), "{needle} not in {json}");
    }
    let busy = world.wrun(&["rm", "web-1"]);
    assert_eq!(busy.status.code(), Some(125));
    assert_contains(&stderr(&busy), "is running");
    ok(&world, &["kill", "-s", "KILL", "web-1"]);
    wait_until(10, "kill did not end web-1", || {
        inspect(&world, "web-1").contains("\"Status\": \"exited\"")
    });
    let json = inspect(&world, "web-1");
    assert_contains(&json, "\"ExitCode\": 137");
    let record: serde_json::Value = serde_json::from_str(&json).unwrap();
    let peak = record[0]["MemoryPeakBytes"].as_u64();
    assert!(
        peak.is_some_and(|bytes| bytes > 0),
        "no memory peak recorded: {json}"
    );
    ok(&world, &["rm", "web-1"]);
    let gone = world.wrun(&["inspect", "web-1"]);
    assert_one_line_error(&gone, 125, "no such container: `web-1`");
    // Docker's: `rm -f` of a container that is not there succeeds and says nothing; without
    // -f it is an error.
    assert_output(&world.wrun(&["rm", "-f", "web-1"]), 0, "");
    assert_one_line_error(
        &world.wrun(&["rm", "web-1"]),
        125,
        "no such container: `web-1`",
    );
    world.assert_nothing_left();
}

#[test]
fn detached_rm_and_attached_named_runs() {
    let world = privileged_test!(World::new());
    detach(&world, &["--rm", "--name", "once", s(&sample("hello"))]);
    wait_until(10, "--rm left the container", || {
        ps(&world, true).is_empty()
    });
    let attached = world
        .run_cmd(&["--name", "attached", s(&sample("exit")), "7"])
        .output()
        .unwrap();
    assert_eq!(attached.status.code(), Some(7));
    let row = ps(&world, true).pop().unwrap();
    assert!(row[4].starts_with("Exited (7)"), "{row:?}");
    let echo = world
        .run_cmd(&["--name", "talker", s(&sample("echo")), "said"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&echo),
        "args: said\n",
        "attached output passes through"
    );
    assert_eq!(
        ok(&world, &["logs", "talker"]),
        "args: said\n",
        "and is logged"
    );
    ok(&world, &["rm", "attached", "talker"]);
    world.assert_nothing_left();
}

#[test]
fn a_dead_monitor_is_never_shown_running() {
    let world = privileged_test!(World::new());
    detach(&world, &["--name", "orphan", s(&sample("idle"))]);
    let json = inspect(&world, "orphan");
    let pid: i32 = json
        .split("\"Pid\": ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("a pid");
    let monitor = parent_of(pid);
    kill(monitor, libc::SIGKILL);
    wait_until(10, "the workload outlived its monitor", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(names(&world, false).is_empty(), "shown running");
    let row = ps(&world, true).pop().unwrap();
    assert!(row[4].starts_with("Exited (unknown)"), "{row:?}");
    ok(&world, &["rm", "orphan"]);
    world.assert_nothing_left();
}

#[test]
fn a_settled_monitor_carries_on_in_a_fresh_process_and_ends_the_run_as_before() {
    let world = privileged_test!(busybox_world());
    // Output on both streams before and after the hand-over, one line cut across it, an exit
    // code; `--rm` containers that end after their hand-over; a restart policy's runs.
    let script = "echo before; printf 'cut '; sleep 5; echo across; echo late >&2; exit 7";
    detach(&world, &["--name", "handed", "busybox", "sh", "-c", script]);
    let idle = sample("idle");
    detach(
        &world,
        &["--rm", "--name", "gone", "--timeout", "3s", s(&idle)],
    );
    detach(
        &world,
        &["--rm", "--name", "later", "busybox", "sleep", "3"],
    );
    // Lines written all through the hand-over (≈3 s of them).
    let counter = "i=0; while [ $i -lt 20000 ]; do echo $i; i=$((i+1)); \
                   [ $((i % 10)) = 0 ] && usleep 1000; done; echo done";
    detach(
        &world,
        &["--name", "counter", "busybox", "sh", "-c", counter],
    );
    let retried = "echo try; sleep 2; exit 3";
    let policy = ["--restart", "on-failure:1", "busybox", "sh", "-c", retried];
    detach(&world, &[&["--name", "retried"], &policy[..]].concat());
    let supervisor_of = |name: &str| {
        let first = match name {
            "handed" => "before",
            "counter" => "0",
            _ => "try",
        };
        wait_for_log(&world, name, first);
        let json: serde_json::Value = serde_json::from_str(&inspect(&world, name)).unwrap();
        parent_of(json[0]["State"]["Pid"].as_i64().unwrap() as i32)
    };
    let handed_over = |pid: i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("--resume-monitor")
    };
    // A second after the start the monitor execs wrun afresh: the same process, a new program
    // with only the wait to do. A restart policy's run does too (its supervisor, a child of
    // the process that restarts it).
    let monitor = supervisor_of("handed");
    wait_until(10, "the monitor never handed its wait over", || {
        handed_over(monitor)
    });
    let counting = supervisor_of("counter");
    wait_until(10, "the counter's monitor never handed over", || {
        handed_over(counting)
    });
    let run_supervisor = supervisor_of("retried");
    wait_until(
        10,
        "the restarted container's run never handed over",
        || handed_over(run_supervisor),
    );
    let anonymous = || anonymous_kib(monitor as u32);
    // One that started the workload holds ≈240 KiB (docs/architecture.md, "Idle memory"); the
    // fresh one, a second after its own start, a third of that.
    let (deadline, mut last) = (Instant::now() + Duration::from_secs(4), anonymous());
    while last.is_none_or(|kib| kib >= 120) {
        assert!(
            Instant::now() < deadline,
            "the carried-on monitor still holds {last:?} KiB of anonymous memory"
        );
        std::thread::sleep(Duration::from_millis(50));
        last = anonymous();
    }
    let json: serde_json::Value = serde_json::from_str(&inspect(&world, "handed")).unwrap();
    assert_eq!(json[0]["State"]["Status"], "running", "{json}");
    assert_output(&world.wrun(&["wait", "handed"]), 0, "7\n");
    let logs = world.wrun(&["logs", "handed"]);
    assert_eq!(stdout(&logs), "before\ncut across\n");
    assert_eq!(stderr(&logs), "late\n");
    let json: serde_json::Value = serde_json::from_str(&inspect(&world, "handed")).unwrap();
    assert_eq!(json[0]["State"]["Status"], "exited", "{json}");
    assert_eq!(json[0]["State"]["ExitCode"], 7, "{json}");
    wait_until(10, "an --rm container outlived its run", || {
        let left = names(&world, true);
        !left.iter().any(|name| name == "gone" || name == "later")
    });
    wait_until(5, "the monitor outlived its container", || {
        !Path::new(&format!("/proc/{monitor}")).exists()
    });
    // The policy read the handed-over run's code: one more run, then it stays exited with it.
    wait_until(20, "retried was not run twice", || {
        let json: serde_json::Value = serde_json::from_str(&inspect(&world, "retried")).unwrap();
        json[0]["RestartCount"] == 1 && json[0]["State"]["Status"] == "exited"
    });
    let json: serde_json::Value = serde_json::from_str(&inspect(&world, "retried")).unwrap();
    assert_eq!(json[0]["State"]["ExitCode"], 3, "{json}");
    assert_eq!(ok(&world, &["logs", "retried"]), "try\ntry\n");
    // Not a line lost or repeated across the exec.
    assert_output(&world.wrun(&["wait", "counter"]), 0, "0\n");
    let counted: Vec<String> = ok(&world, &["logs", "counter"])
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = (0..20000)
        .map(|i| i.to_string())
        .chain(["done".to_string()])
        .collect();
    assert!(counted == expected, "{} lines logged", counted.len());
    ok(&world, &["rm", "handed", "retried", "counter"]);
    world.assert_nothing_left();
    let runs = std::fs::read_dir(world.root.path().join("runs"))
        .unwrap()
        .count();
    assert_eq!(runs, 0, "run records left behind");
    // The flag is the hand-over's own; typed by hand it fails cleanly.
    for (args, error) in [
        (&["--resume-monitor"][..], "no hand-over descriptor"),
        (
            &["--resume-monitor", "99"][..],
            "99 is not an open descriptor",
        ),
    ] {
        let out = Command::new(wrun_bin()).args(args).output().unwrap();
        assert_one_line_error(&out, 125, error);
    }
}

fn parent_of(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap()
}

#[test]
fn fifty_parallel_run_ps_rm_leave_exact_state() {
    let world = privileged_test!(World::new());
    ok(&world, &["compile", s(&sample("idle"))]);
    let idle = sample("idle");
    let spawn = |args: Vec<String>| {
        std::process::Command::new(wrun_bin())
            .arg("--root")
            .arg(world.root.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs: Vec<_> = (0..50)
        .map(|n| {
            spawn(vec![
                "run".into(),
                "-d".into(),
                "--cgroup-parent".into(),
                world.cgroup_parent.clone(),
                "--name".into(),
                format!("p-{n}"),
                s(&idle).into(),
            ])
        })
        .collect();
    let listers: Vec<_> = (0..10)
        .map(|_| spawn(vec!["ps".into(), "-a".into()]))
        .collect();
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    for child in listers {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..50).map(|n| format!("p-{n}")).collect();
        v.sort();
        v
    };
    assert_eq!(names(&world, false), expected);
    let removers: Vec<_> = (0..50)
        .map(|n| spawn(vec!["rm".into(), "-f".into(), format!("p-{n}")]))
        .collect();
    for child in removers {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    assert!(ps(&world, true).is_empty());
    world.assert_nothing_left();
}

#[test]
fn rmi_refuses_images_in_use() {
    let world = privileged_test!(World::new());
    ok(
        &world,
        &["image", "pack", s(&sample("hello")), "-t", "used"],
    );
    ok(
        &world,
        &[
            "run",
            "--cgroup-parent",
            &world.cgroup_parent,
            "--name",
            "user",
            "used",
        ],
    );
    let refused = world.wrun(&["rmi", "used"]);
    assert_one_line_error(&refused, 125, "is used by container user");
    ok(&world, &["rmi", "-f", "used"]);
    assert_eq!(ok(&world, &["images", "-q"]), "");
    let blobs = std::fs::read_dir(world.root.path().join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "unreferenced blobs are collected");
    ok(&world, &["rm", "user"]);
    world.assert_nothing_left();
}

#[test]
fn version_and_info_describe_wrun_and_this_host() {
    let world = privileged_test!(World::new());
    let version = ok(&world, &["version"]);
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert_contains(&version, &format!("wasmtime:         {wasmtime}"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_contains(&version, release.trim());
    detach(&world, &["--name", "info-1", s(&sample("idle"))]);
    let info = ok(&world, &["info"]);
    assert_contains(
        &info,
        &format!("State root:     {}", world.root.path().display()),
    );
    assert_contains(&info, "Containers:     1 (running 1, created 0, exited 0)");
    assert_contains(&info, "Warm pool:      not running");
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "Cgroup version: v2"
    } else {
        "Cgroup version: v1"
    };
    assert_contains(&info, cgroup);
    ok(&world, &["rm", "-f", "info-1"]);
    world.assert_nothing_left();
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let world = privileged_test!(World::new());
    let script = world.root.path().join("wrun.bash");
    std::fs::write(&script, ok(&world, &["completion", "bash"])).unwrap();
    // bash completes `wrun ex` to `exec` with the generated function.
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(wrun ex); COMP_CWORD=1; _wrun wrun ex wrun; echo ${{COMPREPLY[@]}}",
            script.display()
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&completed).trim(), "exec", "{}", stderr(&completed));
    for shell in ["zsh", "fish"] {
        assert_contains(&ok(&world, &["completion", shell]), "exec");
    }
    assert_one_line_error(&world.wrun(&["completion", "nosh"]), 125, "nosh");
    let pages = world.root.path().join("man1");
    ok(&world, &["man", s(&pages)]);
    for page in ["wrun.1", "wrun-run.1", "wrun-exec.1", "wrun-ps.1"] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
}

#[test]
fn start_restart_and_wait_as_docker_has_them() {
    let world = privileged_test!(busybox_world());
    let script = "echo run >> /count; wc -l < /count; exit 3";
    detach(&world, &["--name", "again", "busybox", "sh", "-c", script]);
    assert_output(&world.wrun(&["wait", "again"]), 0, "3\n");
    // A stopped container runs again with its configuration and writable layer.
    assert_output(&world.wrun(&["start", "again"]), 0, "again\n");
    assert_output(&world.wrun(&["wait", "again"]), 0, "3\n");
    let logs: Vec<String> = stdout(&world.wrun(&["logs", "again"]))
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(logs, ["1", "2"]);
    // restart: a running container is stopped and started again, a new process.
    detach(&world, &["--name", "idle-r", s(&sample("idle"))]);
    let pid_of = |world: &World| {
        let json: serde_json::Value = serde_json::from_str(&inspect(world, "idle-r")).unwrap();
        json[0]["State"]["Pid"].as_i64()
    };
    wait_until(10, "idle-r never ran", || pid_of(&world).is_some());
    let first = pid_of(&world);
    assert_output(
        &world.wrun(&["restart", "-t", "1", "idle-r"]),
        0,
        "idle-r\n",
    );
    wait_until(10, "idle-r never ran again", || {
        pid_of(&world).is_some() && pid_of(&world) != first
    });
    wait_until(10, "the second run never logged", || {
        stdout(&world.wrun(&["logs", "idle-r"])) == "idle ready\nidle ready\n"
    });
    assert_one_line_error(&world.wrun(&["wait", "no-such"]), 125, "no such container");
    // logs --timestamps, --since and --until split the two runs by the second's start.
    let stamped = ok(&world, &["logs", "--timestamps", "idle-r"]);
    let times: Vec<&str> = stamped
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{stamped}");
    assert!(
        times.iter().all(|t| t.ends_with('Z') && t.contains('T')),
        "{stamped}"
    );
    assert_eq!(
        ok(&world, &["logs", "--since", times[1], "idle-r"]),
        "idle ready\n"
    );
    assert_eq!(
        ok(&world, &["logs", "--until", times[1], "idle-r"]),
        "idle ready\n"
    );
    assert_eq!(
        ok(&world, &["logs", "--since", "10m", "idle-r"])
            .lines()
            .count(),
        2
    );
    assert_eq!(
        ok(&world, &["logs", "--since", "1", "--until", "2", "idle-r"]),
        ""
    );
    assert_one_line_error(
        &world.wrun(&["logs", "--since", "yesterday", "idle-r"]),
        125,
        "yesterday",
    );
    ok(&world, &["rm", "-f", "again", "idle-r"]);
    world.assert_nothing_left();
}

#[test]
fn ps_lists_newest_first_with_docker_filters_and_labels() {
    let world = privileged_test!(World::new());
    let labels = world.root.path().join("labels");
    std::fs::write(&labels, "# the team\nteam=edge\n").unwrap();
    let idle = sample("idle");
    let first = detach(&world, &["--name", "web-a", "-l", "tier=web", s(&idle)]);
    let label_file = ["--label-file", s(&labels)];
    let second = detach(
        &world,
        &[
            &["--name", "db-b", "--label", "tier=db"],
            &label_file[..],
            &[s(&sample("hello"))],
        ]
        .concat(),
    );
    wait_until(10, "db-b never exited", || {
        ok(&world, &["ps", "-a", "-q", "-f", "status=exited"]).contains(&second[..12])
    });
    let third = detach(
        &world,
        &["--name", "web-c", "--label", "tier=web", s(&idle)],
    );
    let ids = |args: &[&str]| -> Vec<String> {
        ok(&world, &[&["ps", "-q", "--no-trunc"], args].concat())
            .lines()
            .map(String::from)
            .collect()
    };
    // Newest first; running ones unless asked.
    assert_eq!(ids(&[]), vec![third.clone(), first.clone()]);
    assert_eq!(
        ids(&["-a"]),
        vec![third.clone(), second.clone(), first.clone()]
    );
    assert_eq!(ids(&["-n", "2"]), vec![third.clone(), second.clone()]);
    assert_eq!(ids(&["-l"]), vec![third.clone()]);
    assert_eq!(
        ids(&["-f", "label=tier=web"]),
        [third.clone(), first.clone()]
    );
    assert_eq!(ids(&["-f", "label=team"]), vec![second.clone()]);
    assert_eq!(
        ids(&["-f", "name=web", "-f", "status=running"]),
        [third.clone(), first.clone()]
    );
    assert_eq!(ids(&["-f", "status=exited"]), vec![second.clone()]);
    assert_eq!(
        ids(&["-f", &format!("id={}", &first[..8])]),
        vec![first.clone()]
    );
    assert_one_line_error(
        &world.wrun(&["ps", "-f", "colour=red"]),
        125,
        "filters are name",
    );
    let json: serde_json::Value = serde_json::from_str(&inspect(&world, "db-b")).unwrap();
    assert_eq!(
        json[0]["Config"]["Labels"],
        serde_json::json!({"team": "edge", "tier": "db"})
    );
    let table = ok(&world, &["ps", "--no-trunc"]);
    assert_contains(&table, &first);
    // rename: the new name finds it, the old one is free, a taken one is refused.
    ok(&world, &["rename", "web-a", "web-z"]);
    assert_eq!(ids(&["-f", "name=web-z"]), vec![first.clone()]);
    assert_one_line_error(&world.wrun(&["rename", "web-z", "web-c"]), 125, "web-c");
    ok(&world, &["rm", "-f", "web-z", "db-b", "web-c"]);
    world.assert_nothing_left();
}

#[test]
fn format_templates_render_ps_images_inspect_and_stats_as_docker_does() {
    let world = privileged_test!(busybox_world());
    let id = detach(
        &world,
        &[
            "--name",
            "web-1",
            "-l",
            "tier=front",
            "busybox",
            "sleep",
            "300",
        ],
    );
    let line = |args: &[&str]| ok(&world, args).trim_end().to_string();
    assert_eq!(
        line(&[
            "ps",
            "--format",
            "{{.Names}} {{.State}} {{.Labels}} {{upper .Names}}"
        ]),
        "web-1 running tier=front WEB-1"
    );
    // `table`: Docker's column titles, columns at least ten wide and three spaces apart.
    let table = ok(
        &world,
        &["ps", "--format", r"table {{.Names}}\t{{.ID}}\t{{.State}}"],
    );
    assert_eq!(
        table,
        format!(
            "NAMES     CONTAINER ID   STATE\nweb-1     {}   running\n",
            &id[..12]
        )
    );
    let json: serde_json::Value = serde_json::from_str(&line(&["ps", "--format", "json"])).unwrap();
    assert_eq!(json["ID"], &id[..12]);
    assert_eq!(json["Image"], "busybox");
    assert_eq!(json["Command"], "\"sleep 300\"");
    assert!(
        json["CreatedAt"].as_str().unwrap().ends_with(" +0000 UTC"),
        "{json}"
    );
    assert_eq!(
        line(&["ps", "--no-trunc", "--format", "{{.ID}}"]),
        id,
        "--no-trunc reaches the template's ID"
    );
    assert_one_line_error(
        &world.wrun(&["ps", "--format", "{{.Nmes}}"]),
        125,
        "its fields are ID, Image",
    );
    assert_one_line_error(
        &world.wrun(&["ps", "--format", "{{.Names"]),
        125,
        "invalid --format `{{.Names`",
    );
    // images: Docker's names, the short ID the same as `-q` prints.
    let image_id = line(&["images", "-q"]);
    assert_eq!(
        line(&[
            "images",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}} {{.Type}}"
        ]),
        format!("{image_id} busybox:latest native")
    );
    assert!(line(&["images", "--format", "{{.Digest}}"]).starts_with(&format!("sha256:{image_id}")));
    // inspect -f: the fields of inspect's JSON, Go's `index` and Docker's `json`.
    assert_eq!(
        line(&[
            "inspect",
            "-f",
            r#"{{.State.Status}} {{index .Config.Labels "tier"}} {{json .Config.Labels}}"#,
            "web-1"
        ]),
        r#"running front {"tier":"front"}"#
    );
    let whole: serde_json::Value =
        serde_json::from_str(&line(&["inspect", "--format", "json", "web-1"])).unwrap();
    assert_eq!(whole["Id"], id.as_str());
    // stats: one sample, the fields Docker names.
    assert_eq!(
        line(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.Container}} {{.PIDs}}",
            "web-1"
        ]),
        "web-1 web-1 1"
    );
    let stats = ok(
        &world,
        &[
            "stats",
            "--no-stream",
            "--format",
            r"table {{.Name}}\t{{.PIDs}}",
        ],
    );
    assert_eq!(stats, "NAME      PIDS\nweb-1     1\n");
    ok(&world, &["rm", "-f", "web-1"]);
    world.assert_nothing_left();
}

#[test]
fn cp_copies_in_and_out_of_native_containers_as_docker_cp_does() {
    let world = privileged_test!(busybox_world());
    let host = world.root.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let at = |name: &str| host.join(name).to_string_lossy().into_owned();
    let script =
        "mkdir -p /data/sub && echo hi > /data/sub/f && ln -sfn /proc/sys/kernel /data/ksys \
                  && ln -sfn /etc /data/etc && echo ready && sleep 300";
    detach(&world, &["--name", "box", "busybox", "sh", "-c", script]);
    wait_for_log(&world, "box", "ready");
    let exec = |args: &[&str]| ok(&world, &[&["exec", "box"], args].concat());
    // Out: a directory by its name, a file under a new name, a directory's contents.
    ok(&world, &["cp", "box:/data", &at("data")]);
    assert_eq!(
        std::fs::read_to_string(host.join("data/sub/f")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_link(host.join("data/ksys")).unwrap(),
        Path::new("/proc/sys/kernel"),
        "links are copied as links, not followed"
    );
    ok(&world, &["cp", "box:data/sub/f", &at("g")]);
    assert_eq!(std::fs::read_to_string(host.join("g")).unwrap(), "hi\n");
    std::fs::create_dir(host.join("contents")).unwrap();
    ok(&world, &["cp", "box:/data/.", &at("contents")]);
    assert!(host.join("contents/sub/f").is_file());
    let tar = world
        .command(wrun_bin())
        .args(["cp", "box:/data/sub", "-"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let listing = Command::new("tar")
        .args(["-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(&tar.stdout)?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "sub/\nsub/f\n");
    // In: owned by the container's root unless -a; a directory under a new name; `-`.
    std::fs::write(host.join("note"), "from the host\n").unwrap();
    std::os::unix::fs::chown(host.join("note"), Some(1234), Some(1234)).unwrap();
    ok(&world, &["cp", &at("note"), "box:/tmp/"]);
    assert_eq!(exec(&["cat", "/tmp/note"]), "from the host\n");
    assert_eq!(exec(&["stat", "-c", "%u:%g", "/tmp/note"]), "0:0\n");
    ok(&world, &["cp", "-a", &at("note"), "box:/tmp/kept"]);
    assert_eq!(exec(&["stat", "-c", "%u:%g", "/tmp/kept"]), "1234:1234\n");
    ok(&world, &["cp", &at("contents"), "box:/copied"]);
    assert_eq!(exec(&["cat", "/copied/sub/f"]), "hi\n");
    let archive = Command::new("tar")
        .args(["-C", &at(""), "-c", "note"])
        .output()
        .unwrap();
    let mut piped = world
        .command(wrun_bin())
        .args(["cp", "-", "box:/root"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // Zeros after the archive's end, more than a pipe holds: tar pads its output so, and
    // all of it is taken, not refused with a broken pipe.
    let mut padded = archive.stdout.clone();
    padded.resize(padded.len() + (1 << 20), 0);
    piped.stdin.take().unwrap().write_all(&padded).unwrap();
    assert!(piped.wait().unwrap().success());
    assert_eq!(exec(&["cat", "/root/note"]), "from the host\n");
    // The container's links resolve in the container: its /etc, never the host's, and a
    // link into /proc reaches only what the container itself could write.
    ok(&world, &["cp", &at("note"), "box:/data/etc/wrun-cp-note"]);
    assert_eq!(exec(&["cat", "/etc/wrun-cp-note"]), "from the host\n");
    assert!(!Path::new("/etc/wrun-cp-note").exists());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let escape = world.wrun(&["cp", &at("note"), "box:/data/ksys/hostname"]);
    assert_one_line_error(&escape, 125, "hostname");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
    // Docker's refusals, one line each.
    assert_one_line_error(
        &world.wrun(&["cp", "box:/nope", &at("x")]),
        125,
        "`/nope`: no such file or directory",
    );
    assert_one_line_error(
        &world.wrun(&["cp", "box:/data", &at("g")]),
        125,
        "cannot copy a directory to the file",
    );
    assert_one_line_error(
        &world.wrun(&["cp", &at("g"), "box:/no/such/x"]),
        125,
        "`/no/such`: no such directory",
    );
    assert_one_line_error(&world.wrun(&["cp", "a", "b"]), 125, "CONTAINER:PATH");
    // A stopped container: its writable layer, kept for the next start.
    ok(&world, &["stop", "-t", "1", "box"]);
    ok(&world, &["cp", &at("note"), "box:/while-stopped"]);
    ok(&world, &["cp", "box:/root/note", &at("back")]);
    assert_eq!(
        std::fs::read_to_string(host.join("back")).unwrap(),
        "from the host\n"
    );
    ok(&world, &["start", "box"]);
    wait_until(10, "box never ran again", || {
        ok(&world, &["logs", "box"]).matches("ready").count() == 2
    });
    assert_eq!(exec(&["cat", "/while-stopped"]), "from the host\n");
    // Wasm containers have no file system of their own to copy into.
    let wasm = detach(&world, &["--name", "guest", s(&sample("idle"))]);
    assert_one_line_error(
        &world.wrun(&["cp", &at("note"), &format!("{}:/tmp", &wasm[..12])]),
        125,
        "runs a Wasm module",
    );
    ok(&world, &["rm", "-f", "box", "guest"]);
    world.assert_nothing_left();
}

#[test]
fn progress_bars_show_on_a_terminal_only_and_honour_no_color() {
    let world = privileged_test!(World::new());
    // `script` gives the command a terminal and copies what it drew to its stdout.
    let on_terminal = |command: &str, no_color: bool| -> String {
        let mut script = Command::new("script");
        script.args(["-qec", command, "/dev/null"]);
        match no_color {
            true => script.env("NO_COLOR", "1"),
            false => script.env_remove("NO_COLOR"),
        };
        let out = script.output().expect("script (bsdutils)");
        assert!(out.status.success(), "{command}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wrun = format!(
        "{} --root {}",
        wrun_bin().display(),
        world.root.path().display()
    );
    let hello = sample("hello");
    let drawn = on_terminal(&format!("{wrun} compile {}", hello.display()), false);
    assert_contains(&drawn, "compiling hello.wasm");
    assert_contains(&drawn, " functions");
    assert_contains(&drawn, "\x1b[36m");
    // The counted compile made the code a plain one finds: the same cache entry.
    let cached = ok(&world, &["compile", s(&hello)]);
    assert_contains(&drawn, cached.trim());
    // Per layer, in bytes; no colour under NO_COLOR.
    let archive = busybox_archive();
    let drawn = on_terminal(&format!("{wrun} image import {}", archive.display()), true);
    assert_contains(&drawn, "KiB/");
    assert!(
        !drawn.contains("\x1b[3"),
        "colour despite NO_COLOR: {drawn:?}"
    );
    // Not on a terminal: nothing drawn.
    let plain = world.wrun(&["compile", s(&sample("echo"))]);
    assert!(plain.status.success());
    assert_eq!(String::from_utf8_lossy(&plain.stderr), "");
    world.assert_nothing_left();
}

#[test]
fn stats_streams_and_top_lists_a_containers_processes() {
    let world = privileged_test!(busybox_world());
    detach(
        &world,
        &[
            "--name",
            "busy",
            "busybox",
            "sh",
            "-c",
            "sleep 301 & sleep 302",
        ],
    );
    wait_until(10, "busy never ran both sleeps", || {
        ok(&world, &["top", "busy"]).lines().count() == 3
    });
    let top = ok(&world, &["top", "busy", "-o", "pid,args"]);
    assert_contains(&top, "sleep 301");
    assert_contains(&top, "sleep 302");
    // Without --no-stream, a new sample every second until the reader goes.
    let mut stats = world
        .command(wrun_bin())
        .args(["stats", "busy"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stats.stdout.take().unwrap()));
    let headers = (0..4)
        .map(|_| lines.next().unwrap().unwrap())
        .filter(|l| l.starts_with("CONTAINER ID"))
        .count();
    assert_eq!(headers, 2, "two samples, each a header and a row");
    drop(lines);
    let ended = wait_for(10, "stats kept running after its reader went", || {
        stats.try_wait().unwrap()
    });
    assert!(ended.success());
    ok(&world, &["rm", "-f", "busy"]);
    assert_one_line_error(&world.wrun(&["top", "busy"]), 125, "no such container");
    world.assert_nothing_left();
}

#[test]
fn prune_and_system_df_reclaim_as_docker_does() {
    let world = privileged_test!(busybox_world());
    ok(
        &world,
        &["image", "pack", s(&sample("hello")), "-t", "hello"],
    );
    detach(&world, &["--name", "done", "busybox", "true"]);
    detach(&world, &["--name", "up", "busybox", "sleep", "300"]);
    wait_until(10, "done never exited", || {
        ok(&world, &["ps", "-q", "-f", "status=exited"])
            .lines()
            .count()
            == 1
    });
    let df = ok(&world, &["system", "df"]);
    let lines: Vec<&str> = df.lines().collect();
    let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(words(lines[0]), "TYPE TOTAL ACTIVE SIZE RECLAIMABLE");
    assert!(words(lines[1]).starts_with("Images 2 1 "), "{df}");
    assert!(words(lines[2]).starts_with("Containers 2 1 "), "{df}");
    let column = lines[0].find("TOTAL").unwrap();
    assert_eq!(&lines[1][column..column + 1], "2", "columns aligned: {df}");
    // Without -f the question is asked, and anything but "y" keeps everything.
    let asked = world.wrun(&["container", "prune"]);
    assert_contains(&stderr(&asked), "Are you sure you want to continue?");
    assert_eq!(ok(&world, &["ps", "-aq"]).lines().count(), 2);
    let pruned = ok(&world, &["container", "prune", "-f"]);
    assert_contains(&pruned, "Deleted Containers:");
    assert_eq!(ok(&world, &["ps", "-aq"]).lines().count(), 1);
    // -a: images no container was made from; busybox stays for `up`.
    assert_contains(
        &ok(&world, &["image", "prune", "-a", "-f"]),
        "Deleted: hello",
    );
    assert_contains(&ok(&world, &["images"]), "busybox");
    ok(&world, &["rm", "-f", "up"]);
    assert_contains(
        &ok(&world, &["system", "prune", "-a", "-f"]),
        "Deleted: busybox",
    );
    let df: Vec<String> = ok(&world, &["system", "df"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(df[1].starts_with("Images 0 0 0B"), "{df:?}");
    assert!(df[3].starts_with("Compiled cache 0 "), "{df:?}");
    world.assert_nothing_left();
}

#[test]
fn restart_policies_run_containers_again_with_dockers_back_off() {
    let world = privileged_test!(busybox_world());
    let state = |name: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&inspect(&world, name)).unwrap()[0].clone()
    };
    // on-failure:2: two more runs after the first failure, then it stays exited.
    let failing = [
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 4",
    ];
    detach(&world, &[&["--name", "flaky"], &failing[..]].concat());
    wait_until(20, "flaky was not run three times", || {
        let s = state("flaky");
        s["RestartCount"] == 2 && s["State"]["Status"] == "exited"
    });
    assert_eq!(state("flaky")["State"]["ExitCode"], 4);
    assert_eq!(
        state("flaky")["HostConfig"]["RestartPolicy"]["MaximumRetryCount"],
        2
    );
    assert_eq!(ok(&world, &["logs", "flaky"]), "try\ntry\ntry\n");
    // always: it runs again whatever its code; `stop` ends that, `start` resumes it.
    let quick = ["--restart", "always", "busybox", "sh", "-c", "sleep 0.2"];
    detach(&world, &[&["--name", "always"], &quick[..]].concat());
    wait_until(20, "always was not restarted", || {
        state("always")["RestartCount"].as_u64() >= Some(2)
    });
    ok(&world, &["stop", "-t", "2", "always"]);
    let count = state("always")["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        state("always")["RestartCount"],
        count,
        "restarted after stop"
    );
    assert_eq!(state("always")["State"]["Status"], "exited");
    // unless-stopped, through a "reboot": every process of this state root killed.
    detach(
        &world,
        &[
            "--name",
            "svc",
            "--restart",
            "unless-stopped",
            s(&sample("idle")),
        ],
    );
    wait_until(10, "svc never ran", || {
        state("svc")["State"]["Status"] == "running"
    });
    let root = world.root.path().to_string_lossy().into_owned();
    for pid in processes_matching(&[&root, "run"]) {
        kill(pid, libc::SIGKILL);
    }
    wait_until(10, "svc outlived the reboot", || {
        state("svc")["State"]["Status"] == "exited"
    });
    let started = ok(&world, &["start", "--all"]);
    assert_contains(&started, "svc");
    assert_contains(&started, "always");
    assert!(!started.contains("flaky"), "{started}");
    // A policy is for detached containers, and not with --rm.
    assert_one_line_error(
        &world.run(&["--restart", "always", s(&sample("hello"))]),
        125,
        "detached",
    );
    assert_one_line_error(
        &world.run(&["-d", "--rm", "--restart", "always", s(&sample("hello"))]),
        125,
        "--rm",
    );
    assert_one_line_error(
        &world.run(&["-d", "--restart", "sometimes", s(&sample("hello"))]),
        125,
        "invalid --restart",
    );
    ok(&world, &["rm", "-f", "flaky", "always", "svc"]);
    world.assert_nothing_left();
}

#[test]
fn an_idle_container_gives_its_start_up_pages_back_and_still_stops_as_asked() {
    let world = privileged_test!(World::new());
    detach(&world, &["--name", "settled", s(&sample("idle"))]);
    wait_for_log(&world, "settled", "idle ready");
    let json: serde_json::Value = serde_json::from_str(&inspect(&world, "settled")).unwrap();
    let sandbox = json[0]["State"]["Pid"].as_u64().unwrap() as u32;
    let monitor = parent_of(sandbox as i32) as u32;
    let wrun = wrun_bin();
    // Starting maps 10-20 MiB of wrun's code into each (docs/architecture.md, "Idle memory");
    // a second after the start both have given it back, and keep only what waiting touches
    // again: where the page cache holds the binary in 2 MiB folios, each code page touched
    // again maps its whole 2 MiB (the monitor's wait loop, carried on in a fresh process,
    // touches three or four of them here, as the code's layout falls).
    let code = || (code_rss_kib(sandbox, &wrun), code_rss_kib(monitor, &wrun));
    let given_back = |(in_sandbox, in_monitor): (u64, u64)| {
        in_sandbox > 0 && in_sandbox < 4096 && in_monitor > 0 && in_monitor < 8192
    };
    let (at_start, deadline) = (code(), Instant::now() + Duration::from_secs(10));
    let mut last = at_start;
    while !given_back(last) {
        assert!(
            Instant::now() < deadline,
            "wrun's code still mapped (sandbox, monitor): {at_start:?} KiB at first, \
             {last:?} KiB after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
        last = code();
    }
    // Its heap is compact too: the set-up's blocks side by side, the parent's small blocks
    // musl's (≈305 KiB of anonymous memory in all; ≈415 with mimalloc everywhere, see
    // docs/architecture.md, "Set-up allocates compactly, work fast").
    let sandbox_anonymous = anonymous_kib(sandbox);
    assert!(
        sandbox_anonymous.is_some_and(|kib| kib < 360),
        "the idle sandbox holds {sandbox_anonymous:?} KiB of anonymous memory"
    );
    // The code comes back when it is needed: the stop signal reaches the guest's handler,
    // the monitor records the exit and removes the container's cgroup.
    ok(&world, &["stop", "-t", "5", "settled"]);
    let json: serde_json::Value = serde_json::from_str(&inspect(&world, "settled")).unwrap();
    assert_eq!(json[0]["State"]["Status"], "exited", "{json}");
    assert_eq!(json[0]["State"]["ExitCode"], 143, "{json}");
    assert_eq!(ok(&world, &["logs", "settled"]), "idle ready\n");
    wait_until(5, "the monitor outlived its container", || {
        !Path::new(&format!("/proc/{monitor}")).exists()
    });
    ok(&world, &["rm", "settled"]);
    world.assert_nothing_left();
}
