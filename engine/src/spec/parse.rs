//! Parsers of user input (flags, env files, Docker syntax) into the values a spec holds.

use super::{OutboundRule, Preopen, PublishedPort, CPU_PERIOD_US};
use std::path::PathBuf;
use std::time::Duration;

impl OutboundRule {
    pub fn parse(text: &str) -> Result<OutboundRule, SpecError> {
        let bad = |why: &str| SpecError::Outbound(text.to_string(), why.to_string());
        let (host, port) = split_host_port(text).ok_or_else(|| bad("expected HOST[:PORT]"))?;
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(&format!("`{p}` is not a port (1-65535)")))?,
            ),
        };
        let is_name = host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !is_name && host.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(&format!("`{host}` is not a host name or IP address")));
        }
        Ok(OutboundRule {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether the rule names `host` (on whatever port).
    pub fn names(&self, host: &str) -> bool {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .eq_ignore_ascii_case(&self.host)
    }

    /// Whether a request to `host:port` may go out (`default_port` is the scheme's).
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case(&self.host) && port == self.port.unwrap_or(default_port)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` when malformed.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if text.is_empty() || text.matches(':').count() > 1 {
        // A bare IPv6 address has no port.
        return text
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| (text, None));
    }
    match text.split_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port))),
        Some(_) => None,
        None => Some((text, None)),
    }
}

impl PublishedPort {
    /// Docker's syntax; the host IP defaults to every IPv4 address, `[::1]` takes IPv6.
    pub fn parse(text: &str) -> Result<PublishedPort, SpecError> {
        let bad = |why: &str| SpecError::Publish(text.to_string(), why.to_string());
        let (rest, guest) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST_PORT:GUEST_PORT"))?;
        let (ip, host_port) = match rest.rsplit_once(':') {
            Some((ip, port)) => (ip.trim_start_matches('[').trim_end_matches(']'), port),
            None => ("0.0.0.0", rest),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(&format!("`{p}` is not a port (1-65535)")))
        };
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| bad(&format!("`{ip}` is not an IP address")))?;
        Ok(PublishedPort {
            host: std::net::SocketAddr::new(ip, port(host_port)?),
            guest_port: port(guest)?,
        })
    }
}

/// Why a piece of user input was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid -p `{0}`: {1}")]
    Publish(String, String),
    #[error("invalid --allow-outbound `{0}`: {1}")]
    Outbound(String, String),
    #[error("invalid size `{0}`: expected a number with an optional unit b, k, m or g (e.g. 64m)")]
    Size(String),
    #[error("invalid size `{0}`: too large")]
    SizeOverflow(String),
    #[error("invalid --memory `{0}`: must be at least 1m")]
    MemoryTooSmall(String),
    #[error("invalid --cpus `{0}`: expected a positive decimal number such as 0.5 or 2")]
    Cpus(String),
    #[error("invalid --cpus `{given}`: range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available")]
    CpusBeyondHost { given: String, available: usize },
    #[error("invalid --memory `{given}`: more than this host has ({total_mib} MiB)")]
    MemoryBeyondHost { given: String, total_mib: u64 },
    #[error("invalid --pids `{0}`: expected a positive integer")]
    Pids(String),
    #[error("--pids {0} is above what the kernel allows (4194304 processes)")]
    PidsAboveKernel(u64),
    #[error("invalid duration `{0}`: expected e.g. 500ms, 10s, 2m or 1h30m")]
    Duration(String),
    #[error("invalid duration `{0}`: longer than 100 years")]
    DurationTooLong(String),
    #[error("invalid --dir `{0}`: expected HOST[::GUEST][:ro]")]
    Dir(String),
    #[error("invalid --env `{0}`: the variable name must be non-empty and contain no `=` or NUL")]
    Env(String),
    #[error("invalid line {line} in env file `{file}`: {reason}")]
    EnvFile {
        file: String,
        line: usize,
        reason: &'static str,
    },
    #[error("invalid --cgroup-parent `{0}`: expected a relative path without `..`")]
    CgroupParent(String),
    #[error("invalid volume `{0}`: expected HOST:GUEST[:ro|:rw] with absolute paths")]
    Volume(String),
    #[error("invalid name `{0}`: expected letters, digits and _ . - (not first)")]
    Name(String),
}

/// Parses a Docker-style size: `512`, `512b`, `64k`, `64m`, `1g` (binary multiples, any case).
pub fn parse_size(text: &str) -> Result<u64, SpecError> {
    let err = || SpecError::Size(text.to_string());
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    if number.is_empty() {
        return Err(err());
    }
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(err()),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| SpecError::SizeOverflow(text.to_string()))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SpecError::SizeOverflow(text.to_string()))
}

/// Parses `--memory`: a size of at least 1 MiB and at most the host's memory.
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let bytes = parse_size(text)?;
    if bytes < (1 << 20) {
        return Err(SpecError::MemoryTooSmall(text.to_string()));
    }
    if let Some(total) = host_memory().filter(|&total| bytes > total) {
        return Err(SpecError::MemoryBeyondHost {
            given: text.to_string(),
            total_mib: total >> 20,
        });
    }
    Ok(bytes)
}

/// The host's memory (`MemTotal`), if it can be read.
fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Parses `--cpus N.N` into a CFS quota in microseconds per [`CPU_PERIOD_US`].
pub fn parse_cpus(text: &str) -> Result<u64, SpecError> {
    let err = || SpecError::Cpus(text.to_string());
    let cpus: f64 = text.trim().parse().map_err(|_| err())?;
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 4096.0 {
        return Err(err());
    }
    // As Docker: no more CPUs than this process may run on.
    if let Ok(available) = std::thread::available_parallelism() {
        if cpus > available.get() as f64 {
            return Err(SpecError::CpusBeyondHost {
                given: text.to_string(),
                available: available.get(),
            });
        }
    }
    // The kernel refuses quotas under 1 ms.
    let quota = (cpus * CPU_PERIOD_US as f64).round() as u64;
    Ok(quota.max(1_000))
}

/// Parses `--pids N`, a positive process count.
pub fn parse_pids(text: &str) -> Result<u64, SpecError> {
    match text.trim().parse::<u64>() {
        // The kernel's PID_MAX_LIMIT on 64-bit: `pids.max` refuses more.
        Ok(n) if n > 4_194_304 => Err(SpecError::PidsAboveKernel(n)),
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SpecError::Pids(text.to_string())),
    }
}

/// The longest duration accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration such as `500ms`, `10s`, `2m`, `1h30m`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let err = || SpecError::Duration(text.to_string());
    let trimmed = text.trim();
    let duration = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(trimmed.parse().map_err(|_| err())?)
    } else {
        humantime::parse_duration(trimmed).map_err(|_| err())?
    };
    if duration.is_zero() {
        return Err(err());
    }
    // Deadlines are computed by adding to the monotonic clock, which has no room for more.
    if duration > MAX_DURATION {
        return Err(SpecError::DurationTooLong(text.to_string()));
    }
    Ok(duration)
}

impl Preopen {
    /// Parses `HOST[::GUEST][:ro|:rw]` (wasmtime's `HOST::GUEST` plus Docker's `:ro`).
    /// Without `::GUEST` the guest sees the directory under the path as given.
    pub fn parse(text: &str) -> Result<Preopen, SpecError> {
        let err = || SpecError::Dir(text.to_string());
        let (rest, read_only) = if let Some(rest) = text.strip_suffix(":ro") {
            (rest, true)
        } else if let Some(rest) = text.strip_suffix(":rw") {
            (rest, false)
        } else {
            (text, false)
        };
        let (host, guest) = match rest.split_once("::") {
            Some((host, guest)) => (host, guest),
            None => (rest, rest),
        };
        if host.is_empty() || guest.is_empty() || host.contains('\0') || guest.contains('\0') {
            return Err(err());
        }
        Ok(Preopen {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        })
    }
}

impl Preopen {
    /// Parses Docker's `-v HOST:GUEST[:ro|:rw]` (both paths absolute).
    pub fn parse_volume(text: &str) -> Result<Preopen, SpecError> {
        let err = || SpecError::Volume(text.to_string());
        let parts: Vec<&str> = text.split(':').collect();
        let (host, guest, read_only) = match parts.as_slice() {
            [host, guest] => (*host, *guest, false),
            [host, guest, "ro"] => (*host, *guest, true),
            [host, guest, "rw"] => (*host, *guest, false),
            _ => return Err(err()),
        };
        if !host.starts_with('/') || !guest.starts_with('/') || host.contains('\0') {
            return Err(err());
        }
        Ok(Preopen {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        })
    }
}

/// Checks a container name: Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn parse_name(text: &str) -> Result<String, SpecError> {
    let ok = text.len() <= 128
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(SpecError::Name(text.to_string()));
    }
    Ok(text.to_string())
}

/// Where the value of a `--env` entry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEntry {
    Set(String, String),
    /// `NAME` alone: take the value from the caller's environment, if it has one.
    Inherit(String),
}

/// Parses `NAME=VALUE` or `NAME` (inherit), as Docker's `-e` does.
pub fn parse_env(text: &str) -> Result<EnvEntry, SpecError> {
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (text, None),
    };
    if name.is_empty() || name.contains('\0') || value.is_some_and(|v| v.contains('\0')) {
        return Err(SpecError::Env(text.to_string()));
    }
    Ok(match value {
        Some(value) => EnvEntry::Set(name.to_string(), value.to_string()),
        None => EnvEntry::Inherit(name.to_string()),
    })
}

/// Parses a Docker env file: `NAME=VALUE` or `NAME` per line; blank lines and `#` comments
/// are skipped; values are taken literally (no quotes, no expansion), as Docker does.
pub fn parse_env_file(file: &str, content: &str) -> Result<Vec<EnvEntry>, SpecError> {
    let mut entries = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_env(line).map_err(|_| SpecError::EnvFile {
            file: file.to_string(),
            line: index + 1,
            reason: if line.contains('\0') {
                "it contains a NUL byte"
            } else {
                "the variable name is empty"
            },
        })?;
        let (EnvEntry::Set(name, _) | EnvEntry::Inherit(name)) = &entry;
        if name.chars().any(char::is_whitespace) {
            return Err(SpecError::EnvFile {
                file: file.to_string(),
                line: index + 1,
                reason: "the variable name contains whitespace",
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Checks `--cgroup-parent`: a relative cgroup path that cannot climb out of the hierarchy.
pub fn parse_cgroup_parent(text: &str) -> Result<String, SpecError> {
    let trimmed = text.trim_matches('/');
    // A newline would also break `/proc/<pid>/cgroup` and wrun's run records (one per line).
    let bad = trimmed.is_empty()
        || trimmed.contains(['\0', '\n'])
        || trimmed
            .split('/')
            .any(|part| part.is_empty() || part == ".." || part == ".");
    if bad {
        return Err(SpecError::CgroupParent(text.to_string()));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn published_ports_use_dockers_syntax() {
        let p = PublishedPort::parse("8081:8080").unwrap();
        assert_eq!(p.host, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(p.guest_port, 8080);
        let p = PublishedPort::parse("127.0.0.1:9000:80").unwrap();
        assert_eq!(p.host, "127.0.0.1:9000".parse().unwrap());
        let p = PublishedPort::parse("[::1]:9000:80").unwrap();
        assert_eq!(p.host, "[::1]:9000".parse().unwrap());
        for bad in ["8080", "0:80", "x:80", "1.2.3:80:80", "80:70000", ""] {
            assert!(PublishedPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outbound_rules_name_a_host_and_maybe_a_port() {
        let rule = OutboundRule::parse("API.example.com:8080").unwrap();
        assert_eq!(
            (rule.host.as_str(), rule.port),
            ("api.example.com", Some(8080))
        );
        assert!(rule.allows("api.EXAMPLE.com", 8080, 80));
        assert!(!rule.allows("api.example.com", 80, 80));
        assert!(!rule.allows("example.com", 8080, 80));
        let rule = OutboundRule::parse("127.0.0.1").unwrap();
        assert!(rule.allows("127.0.0.1", 80, 80));
        assert!(!rule.allows("127.0.0.1", 8080, 80));
        let rule = OutboundRule::parse("[::1]:9000").unwrap();
        assert_eq!((rule.host.as_str(), rule.port), ("::1", Some(9000)));
        assert!(rule.allows("[::1]", 9000, 80));
        assert_eq!(OutboundRule::parse("::1").unwrap().port, None);
        for bad in [
            "", ":80", "host:", "host:0", "host:x", "a..b", "a b", "[::1", "h/x:80",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;
    use crate::spec::{Limits, RUNTIME_MEMORY_HEADROOM};

    #[test]
    fn sizes_take_docker_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("512b").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    }

    #[test]
    fn malformed_sizes_are_refused() {
        for bad in ["", "m", "-1m", "1.5m", "12x", "1 m", "0x10"] {
            assert!(matches!(parse_size(bad), Err(SpecError::Size(_))), "{bad}");
        }
        assert!(matches!(
            parse_size("99999999999999999999g"),
            Err(SpecError::SizeOverflow(_))
        ));
        assert!(matches!(
            parse_size("17179869184g"),
            Err(SpecError::SizeOverflow(_))
        ));
    }

    #[test]
    fn memory_below_one_mebibyte_is_refused() {
        assert!(matches!(
            parse_memory("100k"),
            Err(SpecError::MemoryTooSmall(_))
        ));
        assert_eq!(parse_memory("1m").unwrap(), 1 << 20);
    }

    #[test]
    fn cpus_become_a_quota() {
        assert_eq!(parse_cpus("1").unwrap(), 100_000);
        assert_eq!(parse_cpus("0.5").unwrap(), 50_000);
        assert_eq!(parse_cpus("1.25").unwrap(), 125_000);
        assert_eq!(parse_cpus("0.001").unwrap(), 1_000);
        for bad in ["0", "-1", "abc", "NaN", "inf", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pids_must_be_positive() {
        assert_eq!(parse_pids("16").unwrap(), 16);
        assert_eq!(parse_pids("4194304").unwrap(), 4_194_304);
        assert!(parse_pids("4194305").is_err());
        for bad in ["0", "-3", "1.5", "x"] {
            assert!(parse_pids(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "0", "0s", "abc", "-1s", "10 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("18446744073709551615"),
            Err(SpecError::DurationTooLong(_))
        ));
        assert!(parse_duration("101y").is_err());
    }

    #[test]
    fn dir_specs_follow_wasmtime_and_docker() {
        assert_eq!(
            Preopen::parse("/data").unwrap(),
            Preopen {
                host: "/data".into(),
                guest: "/data".into(),
                read_only: false
            }
        );
        assert_eq!(
            Preopen::parse("./in::/input:ro").unwrap(),
            Preopen {
                host: "./in".into(),
                guest: "/input".into(),
                read_only: true
            }
        );
        assert_eq!(
            Preopen::parse("/x::.:rw").unwrap(),
            Preopen {
                host: "/x".into(),
                guest: ".".into(),
                read_only: false
            }
        );
        for bad in ["", ":ro", "::/g", "/h::", "/h:::ro"] {
            assert!(Preopen::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_follow_docker() {
        assert_eq!(
            Preopen::parse_volume("/srv/data:/data:ro").unwrap(),
            Preopen {
                host: "/srv/data".into(),
                guest: "/data".into(),
                read_only: true
            }
        );
        assert!(!Preopen::parse_volume("/a:/b").unwrap().read_only);
        for bad in ["a:/b", "/a:b", "/a", "/a:/b:rx", "/a:/b:ro:x"] {
            assert!(Preopen::parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_docker() {
        assert_eq!(parse_name("frontend-app-1").unwrap(), "frontend-app-1");
        for bad in ["", "-x", "a b", "a/b", ".x"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_entries_set_or_inherit() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            EnvEntry::Set("A".into(), "b=c".into())
        );
        assert_eq!(
            parse_env("A=").unwrap(),
            EnvEntry::Set("A".into(), "".into())
        );
        assert_eq!(parse_env("HOME").unwrap(), EnvEntry::Inherit("HOME".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("").is_err());
    }

    #[test]
    fn env_files_skip_comments_and_report_bad_lines() {
        let entries = parse_env_file("f", "# c\n\nA=1\n  B=two words\nC\n").unwrap();
        assert_eq!(
            entries,
            vec![
                EnvEntry::Set("A".into(), "1".into()),
                EnvEntry::Set("B".into(), "two words".into()),
                EnvEntry::Inherit("C".into()),
            ]
        );
        assert_eq!(
            parse_env_file("f", "A=1\n=2\n").unwrap_err(),
            SpecError::EnvFile {
                file: "f".into(),
                line: 2,
                reason: "the variable name is empty"
            }
        );
        assert!(parse_env_file("f", "MY VAR=1").is_err());
    }

    #[test]
    fn cgroup_parent_cannot_climb() {
        assert_eq!(parse_cgroup_parent("/wrun/").unwrap(), "wrun");
        assert_eq!(parse_cgroup_parent("a/b").unwrap(), "a/b");
        for bad in ["", "/", "../x", "a/../b", "a//b", "a/./b", "a/\nb"] {
            assert!(parse_cgroup_parent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kernel_memory_limit_leaves_runtime_headroom() {
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        assert_eq!(
            limits.cgroup_memory(),
            Some((64 << 20) + RUNTIME_MEMORY_HEADROOM)
        );
        assert_eq!(Limits::default().cgroup_memory(), None);
    }
}
