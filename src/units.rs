//! Durations, byte sizes and growth rates as SREs write them in rule files
//! (`10s`, `5m`, `1h30m`, `512MiB`, `1MiB/min`), and the timestamp format payloads use.

use std::time::Duration;

/// Unix seconds as RFC 3339 UTC with milliseconds (`2025-11-04T10:15:00.000Z`), the time
/// format of Alertmanager, PagerDuty and Discord payloads.
pub fn rfc3339(unix: f64) -> String {
    let t = std::time::UNIX_EPOCH
        + Duration::from_secs_f64(if unix.is_finite() { unix.max(0.0) } else { 0.0 });
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses a human duration (`250ms`, `10s`, `5m`, `1h30m`). Zero is allowed here; callers
/// that need a positive duration say so in their own message.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration `{s}`: {e} (examples: 10s, 5m, 1h30m)"))
}

/// Formats a duration the way rule files write it (`90s` → `1m 30s`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Parses a byte size: a plain number, or a number with `B`, `KB`/`MB`/`GB`/`TB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size `{s}` (examples: 512MiB, 2GB, 1048576)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    if !n.is_finite() {
        return Err(format!("invalid size `{s}`"));
    }
    Ok(n * mult)
}

/// Parses a growth rate `SIZE/PERIOD` (`1MiB/min`, `10MB/h`, `100/5m`) into units per second.
/// The size part may be unitless for non-byte gauges (connections, queue depth).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (size, per) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid rate `{s}`: expected SIZE/PERIOD such as 1MiB/min"))?;
    let amount = parse_bytes(size)?;
    let per = per.trim();
    let secs = match per {
        "s" | "sec" | "second" => 1.0,
        "min" | "m" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86400.0,
        other => parse_duration(other)
            .map_err(|_| {
                format!(
                    "invalid rate `{s}`: unknown period `{other}` (use s, min, h, d or a duration)"
                )
            })?
            .as_secs_f64(),
    };
    if secs <= 0.0 {
        return Err(format!("invalid rate `{s}`: the period must be positive"));
    }
    Ok(amount / secs)
}

/// Formats a byte amount with binary units for explanations (`3.2 MiB`).
pub fn format_bytes(b: f64) -> String {
    let a = b.abs();
    let (v, u) = if a >= 1024.0 * 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if a >= 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0), "MiB")
    } else if a >= 1024.0 {
        (b / 1024.0, "KiB")
    } else {
        (b, "B")
    };
    format!("{v:.1} {u}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 minutes-ish").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_bytes("512MiB"), Ok(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_bytes("2GB"), Ok(2e9));
        assert_eq!(parse_bytes("100"), Ok(100.0));
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(parse_rate("1MiB/min"), Ok(1024.0 * 1024.0 / 60.0));
        assert_eq!(parse_rate("60/5m"), Ok(0.2));
        assert!(parse_rate("1MiB").is_err());
        assert_eq!(format_bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }
}
