//! Durations and times as Docker shows them ("5 seconds ago", "Up 2 minutes").

use std::time::{Duration, SystemTime};

/// How long ago an RFC 3339 time was, in words.
pub fn ago(rfc3339: &str) -> String {
    match since(rfc3339) {
        Some(elapsed) => format!("{} ago", words(elapsed)),
        None => String::new(),
    }
}

/// The time passed since an RFC 3339 time.
pub fn since(rfc3339: &str) -> Option<Duration> {
    let then = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(SystemTime::now().duration_since(then).unwrap_or_default())
}

/// An RFC 3339 time as Docker's `CreatedAt` fields write it: `2026-12-05 07:46:02 +0000 UTC`.
pub fn docker_time(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(time) => {
            let text = humantime::format_rfc3339_seconds(time).to_string();
            format!(
                "{} +0000 UTC",
                text.trim_end_matches('Z').replacen('T', " ", 1)
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// A duration the way Docker rounds it.
pub fn words(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        172_800..=31_535_999 => format!("{} days", secs / 86_400),
        _ => format!("{} years", secs / 31_536_000),
    }
}

/// Bytes in Docker's units (kB, MB, GB with one decimal; B below a kilobyte).
pub fn size(bytes: u64) -> String {
    let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in units {
        if bytes >= scale {
            return format!("{:.1}{unit}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_like_docker() {
        assert_eq!(words(Duration::from_secs(5)), "5 seconds");
        assert_eq!(words(Duration::from_secs(90)), "About a minute");
        assert_eq!(words(Duration::from_secs(600)), "10 minutes");
        assert_eq!(words(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(size(512), "512B");
        assert_eq!(size(64 << 20), "64.0MiB");
        assert_eq!(
            docker_time("2026-12-05T07:46:02.5Z"),
            "2026-12-05 07:46:02 +0000 UTC"
        );
    }
}
