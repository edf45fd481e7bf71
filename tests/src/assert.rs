//! Assertions on a run's exit code and output, whose failure messages show what it printed.

use std::process::Output;

use crate::{stderr, stdout};

/// Asserts that the run ended with exit `code`, showing its stderr if not.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", stderr(output));
}

/// Asserts that the run ended with exit `code` having printed exactly `expected` on stdout.
#[track_caller]
pub fn assert_output(output: &Output, code: i32, expected: &str) {
    assert_exit(output, code);
    assert_eq!(stdout(output), expected);
}

/// Asserts that `text` contains `needle`, showing the whole text if not.
#[track_caller]
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

/// Asserts that `text` does not contain `needle`, showing the whole text if it does.
#[track_caller]
pub fn assert_lacks(text: &str, needle: &str) {
    assert!(!text.contains(needle), "{needle:?} in: {text}");
}

/// Asserts a failed run: exit `code`, and exactly one line on stderr containing `needle`.
#[track_caller]
pub fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err:?}");
    assert!(err.starts_with("wrun: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}
