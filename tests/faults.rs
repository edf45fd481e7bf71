//! Fault safety: a supervising `wrun` killed at each stage leaves nothing once the next `wrun`
//! command has run; many concurrent runs all succeed; mutated wasm always gets a clean error.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use wrun_tests::*;

/// Starts `wrun-hooked` paused at `stage` and waits until it says it is there.
fn paused_at(mut hooked: Command, stage: &str) -> Child {
    let mut child = hooked
        .env("WRUN_TEST_PAUSE", stage)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a line from wrun").unwrap();
    assert_eq!(line, format!("paused at {stage}"));
    child
}

fn kill9(child: &mut Child) {
    kill(child.id() as i32, libc::SIGKILL);
    child.wait().unwrap();
}

/// Kills a run's supervisor; its workload dies with it (PR_SET_PDEATHSIG), at once.
fn kill_supervisor(world: &World, parent: &mut Child) {
    kill9(parent);
    wait_until(10, "timed out waiting for the workload to die", || {
        processes_of(world.root.path()).is_empty()
    });
}

#[test]
fn killing_the_supervisor_at_any_stage_leaves_nothing_after_the_next_run() {
    let spin = privileged_test!(sample("spin"));
    let hello = sample("hello");
    for (stage, module) in [("forked", &spin), ("running", &spin), ("reaped", &hello)] {
        let world = World::new();
        let mut parent = paused_at(world.hooked_cmd(&[s(module)]), stage);
        kill_supervisor(&world, &mut parent);
        if stage != "forked" {
            assert_eq!(world.run_records().len(), 1, "{stage}: the record stays");
            assert!(
                !world.live_cgroups().is_empty(),
                "{stage}: the cgroup stays"
            );
        }
        assert_exit(&world.run(&[s(&hello)]), 0);
        world.assert_nothing_left();
    }
}

/// A world whose state root (and cache) a first run made, with `count` run records whose
/// lock this test holds, as live supervisors hold their own.
fn among_live_records(count: usize) -> (World, Vec<std::fs::File>) {
    let world = World::new();
    assert_exit(&world.run(&[s(&sample("hello"))]), 0);
    let runs = world.root.path().join("runs");
    let live = (0..count)
        .map(|i| {
            let file = std::fs::File::create(runs.join(format!("live{i:02}.lock"))).unwrap();
            // SAFETY: a plain flock on a descriptor this test owns.
            assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
            file
        })
        .collect();
    (world, live)
}

/// A run given the ID of a run whose supervisor died (containerd reusing a task's ID) cleans
/// up after it first, though among many live runs its turn of the sweep may not reach it.
#[test]
fn a_run_given_a_dead_runs_id_takes_its_leftovers_first() {
    let spin = privileged_test!(sample("spin"));
    let hello = sample("hello");
    let (world, live) = among_live_records(40);
    let mut parent = paused_at(
        world.hooked_cmd(&["--id", "reused-task", s(&spin)]),
        "running",
    );
    kill_supervisor(&world, &mut parent);
    assert!(
        !world.live_cgroups().is_empty(),
        "the dead run's cgroup stays"
    );
    assert_exit(&world.run(&["--id", "reused-task", s(&hello)]), 0);
    world.assert_nothing_left();
    assert_eq!(world.run_records().len(), 40);
    drop(live);
}

/// Among more live runs than one run sweeps (16 records), a dead supervisor's leftovers go
/// within the few runs that take their turns round the records, and at once with `ps`.
#[test]
fn among_many_live_runs_the_next_runs_sweep_in_turns_and_ps_at_once() {
    let spin = privileged_test!(sample("spin"));
    let hello = sample("hello");
    let (world, live) = among_live_records(40);
    for (next, within) in [("run", 4), ("ps", 1)] {
        let mut parent = paused_at(world.hooked_cmd(&[s(&spin)]), "running");
        kill_supervisor(&world, &mut parent);
        assert_eq!(world.run_records().len(), 41, "the dead run's record stays");
        let mut commands = 0;
        while !world.live_cgroups().is_empty() && commands < within {
            match next {
                "run" => assert_exit(&world.run(&[s(&hello)]), 0),
                _ => assert_exit(&world.wrun(&["ps", "-a"]), 0),
            }
            commands += 1;
        }
        world.assert_nothing_left();
        assert_eq!(world.run_records().len(), 40, "after {commands} {next}");
    }
    drop(live);
}

#[test]
fn a_supervisor_killed_before_its_sandbox_first_ran_still_takes_the_workload_along() {
    let spin = privileged_test!(sample("spin"));
    let world = World::new();
    // The parent has given the go-ahead and is killed while its sandbox, held back as a busy
    // machine's scheduler may hold it, has not yet asked to die with it.
    let mut hooked = world.hooked_cmd(&[s(&spin)]);
    hooked.env("WRUN_TEST_CHILD_LATE", "300");
    let mut parent = paused_at(hooked, "running");
    kill9(&mut parent);
    assert!(
        !processes_of(world.root.path()).is_empty(),
        "the held-back sandbox is there when its parent dies"
    );
    wait_until(
        10,
        "timed out waiting for the held-back sandbox to end",
        || processes_of(world.root.path()).is_empty(),
    );
    assert_exit(&world.run(&[s(&sample("hello"))]), 0);
    world.assert_nothing_left();
}

#[test]
fn two_hundred_concurrent_runs_all_succeed() {
    let world = privileged_test!(World::new());
    let exit = sample("exit");
    // Compiled once, so the runs measure the sandbox rather than the compiler.
    let warm = world.wrun(&["compile", s(&exit)]);
    assert_exit(&warm, 0);
    let children: Vec<(i32, Child)> = (0..200)
        .map(|i| {
            let code = i % 100;
            let child = world.spawn_run(&[s(&exit), &code.to_string()]);
            (code, child)
        })
        .collect();
    for (code, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, code);
        assert_eq!(stderr(&out), "");
    }
    world.assert_nothing_left();
}

/// A small deterministic generator (xorshift), so failures are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(original: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            2 => bytes.truncate(rng.below(bytes.len())),
            3 => {
                let i = rng.below(bytes.len());
                bytes.insert(i, rng.next() as u8);
            }
            _ => {
                let i = rng.below(bytes.len());
                let j = rng.below(bytes.len());
                bytes.swap(i, j);
            }
        }
        if bytes.is_empty() {
            bytes.push(0);
        }
    }
    bytes
}

#[test]
fn thousands_of_mutated_modules_get_clean_errors() {
    let world = privileged_test!(World::new());
    let seeds = [
        wat_binary(&fixture("hello.wat")),
        wat_binary(&fixture("trap.wat")),
        wat_binary(&fixture("sleep.wat")),
    ];
    let dir = world.root.path().join("mutants");
    std::fs::create_dir(&dir).unwrap();
    let mut rng = Rng(seed_wasm_u64());
    let total = 2400;
    let mut outcomes = std::collections::BTreeMap::new();
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let mutants: Vec<(usize, Vec<u8>)> = (0..total / 2)
                .map(|n| {
                    (
                        worker * total / 2 + n,
                        mutate(&seeds[n % seeds.len()], &mut rng),
                    )
                })
                .collect();
            let dir = dir.clone();
            let root = world.root.path().to_path_buf();
            let parent = world.cgroup_parent.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for (n, bytes) in mutants {
                    let path = dir.join(format!("m{n}.wasm"));
                    std::fs::write(&path, &bytes).unwrap();
                    let out = std::process::Command::new(wrun_bin())
                        .arg("--root")
                        .arg(&root)
                        .args(["run", "--cgroup-parent", &parent, "--timeout", "10s"])
                        .arg(&path)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    let code = out.status.code();
                    let err = stderr(&out);
                    assert!(code.is_some(), "m{n}: wrun died of a signal: {err}");
                    let code = code.unwrap();
                    assert!(
                        (0..=125).contains(&code) || [126, 134].contains(&code),
                        "m{n}: exit {code}: {err}"
                    );
                    if code == 126 {
                        assert_eq!(err.lines().count(), 1, "m{n}: {err}");
                        assert!(err.starts_with("wrun: "), "m{n}: {err}");
                    }
                    let _ = std::fs::remove_file(&path);
                    seen.push(code);
                }
                seen
            })
        })
        .collect();
    for worker in workers {
        for code in worker.join().unwrap() {
            *outcomes.entry(code).or_insert(0) += 1;
        }
    }
    eprintln!("exit codes of {total} mutants: {outcomes:?}");
    assert!(outcomes.get(&126).copied().unwrap_or(0) > total / 4);
    world.assert_nothing_left();
}

fn seed_wasm_u64() -> u64 {
    0x9e37_79b9_7f4a_7c15
}

/// The binary form of a WAT fixture (mutating text would mostly test the WAT parser).
fn wat_binary(path: &Path) -> Vec<u8> {
    wat::parse_file(path).unwrap()
}
