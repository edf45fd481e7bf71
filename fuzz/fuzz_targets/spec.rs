//! Every parser of command-line input (sizes, CPU counts, durations, `--dir`, `--env`, env
//! files, cgroup parents) on arbitrary text: no panic, and what is accepted is well formed.

#![no_main]

#[path = "../../engine/src/spec.rs"]
#[allow(dead_code)]
mod spec;

use libfuzzer_sys::fuzz_target;
use spec::*;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = parse_size(text) {
        assert!(text.trim().bytes().next().is_some_and(|b| b.is_ascii_digit()));
        let _ = bytes;
    }
    if let Ok(bytes) = parse_memory(text) {
        assert!(bytes >= 1 << 20);
    }
    if let Ok(quota) = parse_cpus(text) {
        assert!((1_000..=4096 * CPU_PERIOD_US).contains(&quota));
    }
    if let Ok(pids) = parse_pids(text) {
        assert!(pids > 0);
    }
    if let Ok(duration) = parse_duration(text) {
        assert!(!duration.is_zero() && duration <= MAX_DURATION);
        // What the supervisor does with it must not overflow.
        assert!(std::time::Instant::now().checked_add(duration * 2).is_some());
    }
    if let Ok(dir) = Preopen::parse(text) {
        assert!(!dir.host.as_os_str().is_empty() && !dir.guest.is_empty());
        assert!(!dir.guest.contains('\0'));
    }
    for entry in [parse_env(text)].into_iter().flatten() {
        let (EnvEntry::Set(name, _) | EnvEntry::Inherit(name)) = entry;
        assert!(!name.is_empty() && !name.contains('=') && !name.contains('\0'));
    }
    if let Ok(entries) = parse_env_file("fuzz", text) {
        for entry in entries {
            let (EnvEntry::Set(name, _) | EnvEntry::Inherit(name)) = entry;
            assert!(!name.is_empty() && !name.contains('=') && !name.chars().any(char::is_whitespace));
        }
    }
    if let Ok(parent) = parse_cgroup_parent(text) {
        assert!(!parent.starts_with('/') && parent.split('/').all(|p| !p.is_empty() && p != ".."));
    }
});
