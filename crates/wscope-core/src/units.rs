//! The text forms of durations, sizes, counts and networks that every wscope surface accepts — command-line flags,
//! environment variables, the TOML file, admin requests and query parameters — parsed in one place
//! so that they all accept and refuse the same things.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// Parses a duration: `30s`, `500ms`, `2m`, `1h`, `1h 30m`, or a bare number of seconds (`7`,
/// `0.5`). `0` is a valid duration (a periodic task given it is turned off).
///
/// ```
/// use std::time::Duration;
/// use wscope_core::units::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            // `from_secs_f64` panics past `Duration::MAX` (`1e20`).
            return Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("invalid duration {s:?}: too long"));
        }
    }
    humantime::parse_duration(s)
        .map_err(|_| format!("invalid duration {s:?}: use 30s, 500ms, 2m or a number of seconds"))
}

/// Parses a size of at least one byte: a number of bytes, or a number and a unit. Units are
/// case-insensitive: `B`; binary `KiB`, `MiB`, `GiB` (also written `K`, `M`, `G`); decimal `KB`,
/// `MB`, `GB` (powers of 1000, as disk makers use them).
///
/// ```
/// use wscope_core::units::parse_size;
/// assert_eq!(parse_size("64KiB"), Ok(65_536));
/// assert_eq!(parse_size("64k"), Ok(65_536));
/// assert_eq!(parse_size("2MB"), Ok(2_000_000));
/// assert!(parse_size("0").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let err = || {
        format!("invalid size {s:?}: use bytes, or a unit: KiB, MiB, GiB (or K, M, G), KB, MB, GB")
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(err)
}

/// Parses a count of at least one (`_` may group digits: `10_000`).
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid count {s:?}: use a whole number of at least 1"
        )),
    }
}

/// Parses an address or a network: `203.0.113.7` (that address alone), `203.0.113.0/24`,
/// `2001:db8::/32`.
///
/// ```
/// use wscope_core::units::parse_net;
/// assert_eq!(parse_net("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
/// assert_eq!(parse_net("2001:db8::/32").unwrap().prefix_len(), 32);
/// assert!(parse_net("203.0.113.0/33").is_err());
/// ```
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("invalid address or network {s:?}: use an IP or a CIDR, such as 203.0.113.7 or 203.0.113.0/24")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3").is_err());
        // Too long for a Duration: refused, not a panic.
        assert_eq!(
            parse_duration("1e20"),
            Err("invalid duration \"1e20\": too long".to_owned())
        );
        assert!(parse_duration("1e400").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("64kib"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net(" 10.0.0.0/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0",
            "example.com",
            "10.0.0.0/8,10.1.0.0/16",
        ] {
            assert!(
                parse_net(bad).unwrap_err().contains("use an IP or a CIDR"),
                "{bad}"
            );
        }
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("10_000"), Ok(10_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("x").is_err());
    }
}
