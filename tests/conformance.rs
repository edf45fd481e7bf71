//! WASI conformance: guests that check every preview-1 function family and the matching WASI
//! 0.2 interfaces (samples/conformance-p1, samples/conformance-p2) run under wrun and under
//! the in-process reference wasmtime; each must pass all its checks under both, and the two
//! runs must agree byte for byte: stdout, stderr, exit code, the files left behind.

use wrun_tests::compare::{DirSource, GuestDir, Invocation};
use wrun_tests::{privileged_test, sample, World};

fn invocation(module: &str) -> Invocation {
    Invocation {
        module: sample(module),
        args: vec!["alpha".into(), "two words".into()],
        env: vec![
            ("CONF_ONE".into(), "1".into()),
            ("CONF_TWO".into(), "zwei".into()),
        ],
        dirs: vec![GuestDir {
            guest: "/data".into(),
            source: DirSource::Empty,
        }],
        stdin: b"hello from stdin\n".to_vec(),
        wrun_options: Vec::new(),
    }
}

/// Runs `module` both ways; returns the summary line after checking that they agree and
/// that every check passed.
fn conforms(module: &str) -> String {
    let world = World::new();
    let scratch = tempfile::tempdir().unwrap();
    let guest = invocation(module);
    let reference = guest.under_reference(scratch.path());
    let wrun = guest.under_wrun(&world, scratch.path());
    let wrun_stdout = wrun.stdout_text();
    let failures: Vec<&str> = wrun_stdout
        .lines()
        .filter(|line| line.contains(": FAIL"))
        .collect();
    assert_eq!(
        reference.code,
        Some(0),
        "the reference failed checks:\n{}{}",
        reference.stdout_text(),
        reference.stderr_text()
    );
    assert!(failures.is_empty(), "under wrun: {failures:#?}");
    assert_eq!(wrun_stdout, reference.stdout_text(), "stdout differs");
    assert_eq!(
        wrun.stderr_text(),
        reference.stderr_text(),
        "stderr differs"
    );
    assert_eq!(wrun.code, reference.code, "exit code differs");
    assert_eq!(wrun.trees, reference.trees, "the files left differ");
    assert!(
        !wrun.trees[0].is_empty(),
        "the guest left no files to compare"
    );
    world.assert_nothing_left();
    let summary = wrun_stdout.lines().last().unwrap_or("").to_string();
    assert!(summary.starts_with("summary: "), "{summary}");
    summary
}

#[test]
fn wasi_preview1_families_behave_as_under_the_reference() {
    privileged_test!();
    let summary = conforms("conformance-p1");
    eprintln!("conformance-p1 {summary}");
}

#[test]
fn wasi_0_2_interfaces_behave_as_under_the_reference() {
    privileged_test!();
    let summary = conforms("conformance-p2.component");
    eprintln!("conformance-p2 {summary}");
}
