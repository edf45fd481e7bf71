//! Progress of long work (a module's functions compiled, an image's layers unpacked), told
//! to whoever shows it — a bar on a terminal — or to no one.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

/// What a piece of work counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Functions,
}

/// Someone watching: told of each piece of work as it starts.
pub trait Watcher {
    /// A piece of work named `name`, `total` units long; returns its counter.
    fn start(&self, name: &str, total: u64, unit: Unit) -> Arc<dyn Counter>;

    /// Whether anyone is: counting may cost something (see [`CompiledFunctions`]).
    fn watching(&self) -> bool {
        true
    }
}

/// Counts a piece of work as it is done; dropped when the work ends.
pub trait Counter: Send + Sync {
    fn add(&self, units: u64);

    /// The work did not complete: it is not reported done.
    fn failed(&self) {}
}

/// Nobody watching.
pub struct Unwatched;

struct Uncounted;

impl Counter for Uncounted {
    fn add(&self, _: u64) {}
}

impl Watcher for Unwatched {
    fn start(&self, _: &str, _: u64, _: Unit) -> Arc<dyn Counter> {
        Arc::new(Uncounted)
    }

    fn watching(&self) -> bool {
        false
    }
}

/// Bars on stderr, one per piece of work, if stderr is a terminal (in colour unless
/// `NO_COLOR` is set); nobody watching otherwise.
pub fn on_terminal() -> Box<dyn Watcher> {
    match std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        true => Box::new(Bars(indicatif::MultiProgress::new())),
        false => Box::new(Unwatched),
    }
}

/// Bars on a terminal; otherwise a line on stderr as each piece of work ends, as Docker's
/// pull writes one per layer.
pub fn bars_or_lines() -> Box<dyn Watcher> {
    match std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        true => Box::new(Bars(indicatif::MultiProgress::new())),
        false => Box::new(Lines),
    }
}

struct Lines;

impl Watcher for Lines {
    fn start(&self, name: &str, total: u64, unit: Unit) -> Arc<dyn Counter> {
        Arc::new(Line {
            name: name.to_string(),
            total,
            unit,
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

struct Line {
    name: String,
    total: u64,
    unit: Unit,
    failed: std::sync::atomic::AtomicBool,
}

impl Counter for Line {
    fn add(&self, _: u64) {}

    fn failed(&self) {
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let size = match self.unit {
            Unit::Bytes => format!("{} bytes", self.total),
            Unit::Functions => format!("{} functions", self.total),
        };
        eprintln!("{}: done ({size})", self.name);
    }
}

struct Bars(indicatif::MultiProgress);

impl Watcher for Bars {
    fn start(&self, name: &str, total: u64, unit: Unit) -> Arc<dyn Counter> {
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let bar = if colour {
            "{bar:30.cyan/blue}"
        } else {
            "{bar:30}"
        };
        let template = match unit {
            Unit::Bytes => format!("{{prefix}} {bar} {{bytes}}/{{total_bytes}}"),
            Unit::Functions => format!("{{prefix}} {bar} {{pos}}/{{len}} functions {{elapsed}}"),
        };
        let style = indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let bar = indicatif::ProgressBar::new(total)
            .with_style(style.progress_chars("=> "))
            .with_prefix(name.to_string());
        Arc::new(Bar {
            bar: self.0.add(bar),
            unit,
        })
    }
}

/// One bar: it stays, full, for a layer, as Docker's pull lines do; it goes for a compile.
struct Bar {
    bar: indicatif::ProgressBar,
    unit: Unit,
}

impl Counter for Bar {
    fn add(&self, units: u64) {
        // Trampolines are compiled too, beyond the functions a module defines.
        if self.bar.position() < self.bar.length().unwrap_or(u64::MAX) {
            self.bar.inc(units);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        match self.unit {
            Unit::Bytes => self.bar.finish(),
            Unit::Functions => self.bar.finish_and_clear(),
        }
    }
}

/// A reader that counts the bytes read through it.
pub struct CountedReader<R> {
    pub inner: R,
    pub counter: Arc<dyn Counter>,
}

impl<R: Read> Read for CountedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.counter.add(read as u64);
        Ok(read)
    }
}

/// Cranelift's incremental cache turned into a count of the functions it compiled: it is
/// asked for each function before it is compiled and handed the result after, and keeps
/// nothing (every lookup misses).
#[derive(Clone)]
pub struct CompiledFunctions(pub Arc<dyn Counter>);

impl std::fmt::Debug for CompiledFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledFunctions")
    }
}

impl wasmtime::CacheStore for CompiledFunctions {
    fn get(&self, _key: &[u8]) -> Option<Cow<'_, [u8]>> {
        None
    }

    fn insert(&self, _key: &[u8], _value: Vec<u8>) -> bool {
        self.0.add(1);
        false
    }
}

/// The functions a module (or every module of a component) defines: what a compile of it
/// counts to, bar the trampolines.
pub fn functions_defined(wasm: &[u8]) -> u64 {
    wasmparser::Parser::new(0)
        .parse_all(wasm)
        .filter_map(Result::ok)
        .map(|payload| match payload {
            wasmparser::Payload::CodeSectionStart { count, .. } => u64::from(count),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_a_module_defines_are_counted() {
        let wasm = wat::parse_str(
            r#"(module (func (export "a")) (func (export "b") (result i32) i32.const 1))"#,
        )
        .unwrap();
        assert_eq!(functions_defined(&wasm), 2);
        assert_eq!(functions_defined(b"not wasm"), 0);
    }
}
