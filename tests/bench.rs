//! `wrun-bench` cannot rot: each subcommand runs with tiny counts and writes its results.
//! No timing is asserted; benchmarks are measured, not tested.

use std::path::Path;
use std::process::Command;
use wrun_tests::*;

fn bench_bin() -> std::path::PathBuf {
    let bin = wrun_bin().with_file_name("wrun-bench");
    assert!(bin.exists(), "{} is missing: build it first", bin.display());
    bin
}

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(bench_bin())
        .args(args)
        .output()
        .expect("run wrun-bench")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("results file")).expect("json")
}

/// Runs `wrun-bench COMMAND FLAGS... --out DIR`, which must succeed, and returns the
/// `DIR/COMMAND.json` it wrote.
fn bench_results(dir: &Path, command: &str, flags: &str) -> serde_json::Value {
    let mut args = vec![command];
    args.extend(flags.split_whitespace());
    args.extend(["--out", dir.to_str().unwrap()]);
    let out = bench(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    json(&dir.join(format!("{command}.json")))
}

/// The cgroups `wrun-kernel-steps` made under `wrun-bench` that are still there.
fn kernel_steps_cgroups() -> Vec<std::path::PathBuf> {
    [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ]
    .iter()
    .filter_map(|hierarchy| std::fs::read_dir(Path::new(hierarchy).join("wrun-bench")).ok())
    .flatten()
    .flatten()
    .map(|entry| entry.path())
    .filter(|path| {
        path.file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("kernel-steps-"))
    })
    .collect()
}

#[test]
fn every_subcommand_runs_with_tiny_counts() {
    privileged_test!();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_str().unwrap();

    let report = bench_results(
        out_dir.path(),
        "startup",
        "--runs 2 --warmup 0 --gap-ms 0 --skip microvm",
    );
    let rows = report["rows"].as_array().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    for key in [
        "bare",
        "floor",
        "kernel-steps",
        "engine",
        "wasm-warm",
        "wasm-pooled",
        "wasm-cold",
        "native",
        "crun",
        "runc",
        "ctr-wrun",
        "ctr-runc",
    ] {
        let row = rows
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key} missing: {keys:?}"));
        assert_eq!(row["summary"]["runs"], 2, "{key}: {row}");
        assert!(row["error"].is_null(), "{key}: {row}");
    }
    assert!(out_dir.path().join("startup.svg").exists());
    assert!(std::fs::read_to_string(out_dir.path().join("startup.md"))
        .unwrap()
        .contains("| row |"));

    // burst: the rows without other tools' daemons, back to back.
    let report = bench_results(out_dir.path(), "burst", "--runs 3");
    assert_eq!(report["gap_ms"], 0, "{report}");
    let rows = report["rows"].as_array().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "bare",
            "floor",
            "kernel-steps",
            "engine",
            "wasm-warm",
            "wasm-pooled",
            "native",
            "crun",
            "runc"
        ],
        "{report}"
    );
    for row in rows {
        assert_eq!(row["summary"]["runs"], 3, "{row}");
    }
    let burst = std::fs::read_to_string(out_dir.path().join("burst.md")).unwrap();
    assert_contains(&burst, "# Start-up back to back");
    assert_contains(&burst, "| vs kernel floor | p90 vs floor's p90 |");
    assert_contains(&burst, "wrun's kernel steps alone: a small program");
    assert!(
        kernel_steps_cgroups().is_empty(),
        "wrun-kernel-steps left cgroups behind: {:?}",
        kernel_steps_cgroups()
    );

    let report = bench_results(
        out_dir.path(),
        "density",
        "--count 2 --parallel 2 --rows wasm,native,runc,crun,ctr-wasm,ctr-runc",
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{report}");
    for row in rows {
        assert_eq!(row["count"], 2);
        assert!(row["pss_bytes"].as_u64().unwrap() > 0, "{row}");
        assert!(row["mem_available_drop"].is_u64(), "{row}");
        assert!(row["unreclaimable_added"].is_u64(), "{row}");
        assert_eq!(row["left_behind"].as_array().unwrap().len(), 0, "{row}");
    }
    // A pod is its shim and what the shim started: 3 processes for wrun's (shim, supervisor,
    // sandbox), 2 for runc.v2's (shim, `sleep`); containerd itself is not counted.
    let processes = |key: &str| {
        let row = rows.iter().find(|r| r["key"] == key).unwrap();
        row["processes"].as_u64().unwrap()
    };
    assert_eq!(processes("ctr-wasm"), 6, "{report}");
    assert_eq!(processes("ctr-runc"), 4, "{report}");

    let rows = bench_results(out_dir.path(), "http", "--requests 20 --concurrency 2");
    let wrun_row = &rows.as_array().unwrap()[0];
    assert!(wrun_row["error"].is_null(), "{wrun_row}");
    assert_eq!(wrun_row["latency_ms"]["runs"], 20, "{wrun_row}");

    // The TCP sample under wrun -p (component and preview-1 module) and natively under runc:
    // every row measured, every request.
    let rows = bench_results(
        out_dir.path(),
        "tcp",
        "--requests 40 --concurrency 2 --rounds 2",
    );
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    for row in rows.as_array().unwrap() {
        assert!(row["error"].is_null(), "{row}");
        assert_eq!(row["latency_ms"]["runs"], 80, "{row}");
        assert_eq!(row["first_answer_ms"].as_array().unwrap().len(), 2, "{row}");
    }

    let rows = bench_results(
        out_dir.path(),
        "refill",
        "--pools 2 --rates 20 --seconds 0.5",
    );
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["starts"], 10, "{row}");
    assert_eq!(row["failed"], 0, "{row}");
    // Every start either taken by the pool or run standalone, and at this rate the pool
    // takes some.
    assert!(row["pooled"].as_u64().unwrap() > 0, "{row}");

    let comparison = out_dir.path().join("comparison.md");
    let table = bench(&[
        "table",
        "--results",
        out,
        "--out",
        comparison.to_str().unwrap(),
    ]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = std::fs::read_to_string(&comparison).unwrap();
    assert_contains(&text, "| start to exit (median) |");
    assert_contains(&text, "Wasm sandbox");
}

/// `real` on its smallest program: CPython (26 MB), one warm run each.
#[test]
fn real_compares_a_real_program_with_the_reference() {
    let out_dir = privileged_test!(tempfile::tempdir().unwrap());
    let report = bench_results(out_dir.path(), "real", "--runs 1 --workload cpython");
    let row = &report["rows"][0];
    assert_eq!(row["workload"], "cpython");
    assert_eq!(row["exit_code"], 3, "{row}");
    for field in [
        "cold_wrun",
        "cold_reference",
        "cold_reference_winch",
        "compile_wrun",
        "compile_reference",
    ] {
        assert!(row[field].as_f64().unwrap() > 0.0, "{field}: {row}");
    }
    for field in ["warm_wrun", "warm_reference", "warm_reference_epoch"] {
        assert_eq!(row[field]["runs"], 1, "{field}: {row}");
    }
    assert!(std::fs::read_to_string(out_dir.path().join("real.md"))
        .unwrap()
        .contains("| cpython | 26.3 MB | 3 |"));
}

#[test]
fn bad_arguments_fail_with_one_line() {
    for args in [["density", "--count", "0"], ["refill", "--rates", "0"]] {
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let out = bench(&["table", "--results", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    assert_contains(&stderr(&out), "/nonexistent/startup.json");
}
