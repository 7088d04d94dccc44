//! Value parsers shared by the commands' arguments; their errors are what
//! users read, so they say what was wrong and what would be right.

use std::time::Duration;

/// Parses a protocol name or number.
pub fn parse_proto(text: &str) -> Result<u8, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" | "ipv6-icmp" => Ok(58),
        "sctp" => Ok(132),
        "udplite" => Ok(136),
        "gre" => Ok(47),
        other => other.parse().map_err(|_| {
            format!("unknown protocol `{text}`; use tcp, udp, icmp, icmpv6, sctp or a number")
        }),
    }
}

/// Parses `10`, `2.5`, `10s`, `500ms`, `5m`, `1h`. Bare numbers are seconds.
/// The shortest `--interval`: below it a report costs more than it tells
/// (counters move by a handful per report, and the loop takes a core).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A `--interval`: a duration of at least [`MIN_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "`{}`: the interval must be at least {} ms",
            text.trim(),
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(d)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 10, 2.5s, 500ms, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}`: the duration must be greater than zero"));
    }
    if seconds > 366.0 * 86400.0 {
        return Err(format!(
            "`{text}`: durations longer than a year are not supported"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(super) fn parse_ring_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of MiB"))?;
    if mib == 0 || !mib.is_power_of_two() || mib > 1024 {
        return Err(format!(
            "`{text}`: the ring size must be a power of two from 1 to 1024 MiB"
        ));
    }
    Ok(mib)
}
