//! The real WASI programs of tests/real-programs (see its programs.md) and their workloads,
//! shared by the test that compares wrun with the reference and by `wrun-bench real`.

use crate::compare::{DirSource, GuestDir, Invocation};
use crate::repo;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fetches the pinned programs (tests/real-programs/fetch.sh; idempotent) into their cache:
/// `$WRUN_REAL_PROGRAMS`, else /var/cache/wrun-tests/real-programs.
pub fn fetch() -> Result<PathBuf, String> {
    let cache = std::env::var_os("WRUN_REAL_PROGRAMS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/wrun-tests/real-programs".into());
    let script = repo().join("tests/real-programs/fetch.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&cache)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(cache)
}

/// One program on one deterministic input.
pub struct Workload {
    pub name: &'static str,
    pub invocation: Invocation,
}

/// Every workload, by name: `cpython`, `cc1`, `yosys-0.60-synth`, `yosys-0.60-error`,
/// `yosys-0.70-synth`, `yosys-0.70-error`.
pub fn workloads(cache: &Path) -> Vec<Workload> {
    let mut all = vec![
        Workload {
            name: "cpython",
            invocation: cpython(cache),
        },
        Workload {
            name: "cc1",
            invocation: cc1(cache),
        },
    ];
    for (version, synth, error) in [
        ("0.60", "yosys-0.60-synth", "yosys-0.60-error"),
        ("0.70", "yosys-0.70-synth", "yosys-0.70-error"),
    ] {
        all.push(Workload {
            name: synth,
            invocation: yosys(cache, version, &["-Q", "-T", "/src/synth.ys"]),
        });
        all.push(Workload {
            name: error,
            invocation: yosys(
                cache,
                version,
                &["-Q", "-T", "-p", "read_verilog /src/broken.v"],
            ),
        });
    }
    all
}

/// The workload called `name`.
pub fn workload(cache: &Path, name: &str) -> Invocation {
    workloads(cache)
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no workload `{name}`"))
        .invocation
}

fn inputs(name: &str) -> PathBuf {
    repo().join("tests/real-programs/inputs").join(name)
}

fn dir(guest: &str, source: DirSource) -> GuestDir {
    GuestDir {
        guest: guest.into(),
        source,
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// `--memory 256m`: far less than compiling any of them takes (wrun's cost, outside the
/// guest's limits), more than any of them uses.
fn limited() -> Vec<String> {
    strings(&["--memory", "256m"])
}

fn cpython(cache: &Path) -> Invocation {
    Invocation {
        module: cache.join("cpython-3.12.0/python-3.12.0.wasm"),
        args: strings(&["/data/workload.py", "alpha", "two words"]),
        env: vec![
            ("PYTHONHASHSEED".into(), "0".into()),
            ("WORKLOAD_NAME".into(), "real-programs".into()),
        ],
        dirs: vec![
            dir("/data", DirSource::ReadOnly(inputs("python"))),
            dir("/out", DirSource::Empty),
        ],
        stdin: std::fs::read(inputs("python/stdin.txt"))
            .expect("tests/real-programs/inputs/python/stdin.txt"),
        wrun_options: limited(),
    }
}

/// GCC's C compiler for AVR, `-O2`, with the package's flags for the atmega328p.
fn cc1(cache: &Path) -> Invocation {
    let toolchain = cache.join("avr-cc1-15.2.0");
    let args = strings(&[
        "-quiet",
        "-nostdinc",
        "-isystem",
        "/include/gcc",
        "-isystem",
        "/include/gcc-fixed",
        "-isystem",
        "/include/avr",
        "-D__AVR_ATmega328P__",
        "-D__AVR_RODATA_IN_RAM__=1",
        "-D__AVR_DEVICE_NAME__=atmega328p",
        "-mn-flash=1",
        "-mdouble=32",
        "-mlong-double=32",
        "-mmcu=avr5",
        "-O2",
        "-Wall",
        "-Wextra",
        "-dumpbase",
        "firmware.c",
        "/src/firmware.c",
        "-o",
        "/out/firmware.s",
    ]);
    Invocation {
        module: toolchain.join("cc1.wasm"),
        args,
        env: Vec::new(),
        dirs: vec![
            dir("/src", DirSource::ReadOnly(inputs("cc1"))),
            dir("/include", DirSource::ReadOnly(toolchain.join("include"))),
            dir("/out", DirSource::Empty),
        ],
        stdin: Vec::new(),
        wrun_options: limited(),
    }
}

/// YoWASP's Yosys: its data at `/share` (where the build looks), a writable `/tmp` for ABC.
fn yosys(cache: &Path, version: &str, args: &[&str]) -> Invocation {
    let yosys = cache.join(format!("yosys-{version}"));
    Invocation {
        module: yosys.join("yosys.wasm"),
        args: strings(args),
        env: Vec::new(),
        dirs: vec![
            dir("/src", DirSource::ReadOnly(inputs("yosys"))),
            dir("/share", DirSource::ReadOnly(yosys.join("share"))),
            dir("/out", DirSource::Empty),
            dir("/tmp", DirSource::Empty),
        ],
        stdin: Vec::new(),
        wrun_options: limited(),
    }
}
