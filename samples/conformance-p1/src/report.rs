//! The check bookkeeping: one stdout line per check, counted for the summary line.
//!
//! Every detail printed here must be the same from run to run (the test compares the whole
//! stdout of two runtimes), so FAIL details name errno values and fixed sizes, never times,
//! inode numbers or random bytes.

use std::fmt::Debug;
use wasi::Errno;

/// What a check found: `Ok` or the detail after `FAIL`.
pub type Outcome = Result<(), String>;

pub struct Report {
    family: &'static str,
    families: u32,
    checks: u32,
    passed: u32,
}

impl Report {
    pub fn new() -> Self {
        Report {
            family: "",
            families: 0,
            checks: 0,
            passed: 0,
        }
    }

    /// Starts the next family: the prefix of the lines that follow.
    pub fn family(&mut self, name: &'static str) {
        self.family = name;
        self.families += 1;
    }

    /// Runs one check and prints its line.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> Outcome) {
        let outcome = f();
        self.record(name, outcome);
    }

    pub fn record(&mut self, name: &str, outcome: Outcome) {
        self.checks += 1;
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("{} {}: ok", self.family, name);
            }
            Err(detail) => println!("{} {}: FAIL {}", self.family, name, detail),
        }
    }

    /// Counts a check whose `ok` line the caller has already written itself (the raw
    /// stdout write check prints its own line through the call under test).
    pub fn passed_silently(&mut self) {
        self.checks += 1;
        self.passed += 1;
    }

    /// A step the following checks depend on (creating their files, opening a descriptor).
    /// Only a failure is reported, as a FAIL check, so that a broken step is not mistaken for
    /// failures of the checks after it; a success adds no line, keeping the count fixed.
    pub fn setup<T>(&mut self, name: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(detail) => {
                self.record(&format!("setup {name}"), Err(detail));
                None
            }
        }
    }

    pub fn all_passed(&self) -> bool {
        self.checks == self.passed
    }

    pub fn summary(&self) -> String {
        format!(
            "summary: {} families, {} checks, {} passed",
            self.families, self.checks, self.passed
        )
    }
}

/// The errno's name; the crate's own `name()` is undefined behaviour on a value outside the
/// witx list, and a broken runtime may well return one.
pub fn name(e: Errno) -> String {
    if e.raw() <= 76 {
        e.name().to_string()
    } else {
        format!("errno {}", e.raw())
    }
}

/// The call must succeed; its value is passed on.
pub fn ok<T>(what: &str, r: Result<T, Errno>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", name(e)))
}

/// The call must fail with exactly `want`. A success is reported without its value, which
/// may vary (a descriptor number, a time).
pub fn fails<T>(r: Result<T, Errno>, want: Errno) -> Outcome {
    match r {
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!("got {}, want {}", name(e), name(want))),
        Ok(_) => Err(format!("succeeded, want {}", name(want))),
    }
}

pub fn ensure(cond: bool, detail: impl Into<String>) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(detail.into())
    }
}

/// For values that are the same in every run (sizes, contents, counts, flags).
pub fn eq<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got:?}, want {want:?}"))
    }
}

/// Prefixes a failure with which of several assertions in one check it was.
pub fn at(label: &str, o: Outcome) -> Outcome {
    o.map_err(|e| format!("{label}: {e}"))
}

/// [`fails`], labelled with which of several assertions in one check it was.
pub fn fails_at<T>(label: &str, r: Result<T, Errno>, want: Errno) -> Outcome {
    at(label, fails(r, want))
}
