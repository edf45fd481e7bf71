//! The check lines and the summary: the Checker and the ok / FAIL helpers every check uses.

use std::collections::BTreeSet;

use wasip2::cli::{exit, stdout};
use wasip2::filesystem::types::ErrorCode as FE;
use wasip2::io::streams::OutputStream;
use wasip2::sockets::network::ErrorCode as SE;

pub type R = Result<(), String>;

/// Prints the check lines and counts them.
pub struct Checker {
    out: OutputStream,
    total: u32,
    passed: u32,
    interfaces: BTreeSet<&'static str>,
}

impl Checker {
    pub fn new() -> Self {
        Checker {
            out: stdout::get_stdout(),
            total: 0,
            passed: 0,
            interfaces: BTreeSet::new(),
        }
    }

    pub fn line(&self, text: &str) {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(b'\n');
        // blocking-write-and-flush takes at most 4096 bytes at a time.
        for chunk in bytes.chunks(4096) {
            if self.out.blocking_write_and_flush(chunk).is_err() {
                exit::exit(Err(()));
            }
        }
    }

    pub fn check(&mut self, interface: &'static str, name: &str, result: R) {
        self.total += 1;
        self.interfaces.insert(interface);
        match result {
            Ok(()) => {
                self.passed += 1;
                self.line(&format!("{interface} {name}: ok"));
            }
            Err(detail) => self.line(&format!("{interface} {name}: FAIL {detail}")),
        }
    }

    pub fn run(&mut self, interface: &'static str, name: &str, body: impl FnOnce() -> R) {
        let result = body();
        self.check(interface, name, result);
    }

    /// A check whose value the checks after it need: `None` (and a FAIL line) if it failed.
    pub fn checked<T>(
        &mut self,
        interface: &'static str,
        name: &str,
        result: Result<T, String>,
    ) -> Option<T> {
        let (outcome, value) = match result {
            Ok(value) => (Ok(()), Some(value)),
            Err(detail) => (Err(detail), None),
        };
        self.check(interface, name, outcome);
        value
    }

    /// Counts a check whose ok line the check wrote itself: only a failure is printed here.
    pub fn check_printed(&mut self, interface: &'static str, name: &str, result: R) {
        self.total += 1;
        self.interfaces.insert(interface);
        match result {
            Ok(()) => self.passed += 1,
            Err(detail) => self.line(&format!("{interface} {name}: FAIL {detail}")),
        }
    }

    /// Prints the summary line, releases stdout and tells whether every check passed.
    pub fn summary(self) -> bool {
        self.line(&format!(
            "summary: {} interfaces, {} checks, {} passed",
            self.interfaces.len(),
            self.total,
            self.passed
        ));
        self.passed == self.total
    }
}

/// Error codes printed by name (stable across runs, unlike their Debug text's layout).
pub trait Code: Copy + PartialEq {
    fn label(&self) -> String;
}

impl Code for FE {
    fn label(&self) -> String {
        self.name().to_string()
    }
}

impl Code for SE {
    fn label(&self) -> String {
        self.name().to_string()
    }
}

pub fn ensure(cond: bool, detail: impl FnOnce() -> String) -> R {
    if cond {
        Ok(())
    } else {
        Err(detail())
    }
}

/// The call must fail with exactly `want`.
pub fn want_err<T, E: Code>(result: Result<T, E>, want: E) -> R {
    match result {
        Ok(_) => Err(format!("expected {}, got success", want.label())),
        Err(got) if got == want => Ok(()),
        Err(got) => Err(format!("expected {}, got {}", want.label(), got.label())),
    }
}

/// The call must succeed; its error otherwise becomes the FAIL detail.
pub fn ok<T, E: Code>(result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| format!("unexpected error {}", e.label()))
}

pub fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}
