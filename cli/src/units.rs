//! Sizes and durations as people write them: `64M`, `64MiB`, `64MB`, `1.5G`; `30s`, `5m`,
//! `250ms`, `90`.

use std::time::Duration;

/// Bytes: a number, with an optional unit. `K`, `M`, `G`, `T` and `KiB`... are powers of 1024;
/// `KB`, `MB`... are powers of 1000 (as `ls`, `df --si` and disk vendors mean them); `B` or
/// nothing is bytes. Case does not matter; a space may come before the unit; a fraction is
/// allowed with a unit (`1.5G`).
pub fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (K, M, G, T or KiB, MiB... are powers of 1024; \
                 KB, MB... of 1000)"
            ))
        }
    };
    let not_a_size = || format!("{text:?} is not a size (bytes, or with a unit: 64M, 64MiB, 64MB)");
    if number.is_empty() {
        return Err(not_a_size());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    // A fraction: only with a unit, rounded down to a byte.
    let value: f64 = number.parse().map_err(|_| not_a_size())?;
    if multiplier == 1 || !value.is_finite() {
        return Err(not_a_size());
    }
    let bytes = value * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// A duration: a number of seconds (`90`, `2.5`), or with a unit: `ms`, `s`, `m`, `h`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{text:?} is not a duration (90, 2.5s, 250ms, 5m, 1h)"
            ))
        }
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * seconds_per).ok())
        .ok_or_else(|| format!("{text:?} is not a duration (90, 2.5s, 250ms, 5m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64M"), Ok(64 << 20));
        assert_eq!(size("64m"), Ok(64 << 20));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("64MB"), Ok(64_000_000));
        assert_eq!(size("64 mb"), Ok(64_000_000));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        assert_eq!(size("2K"), Ok(2048));
        assert_eq!(size("2kB"), Ok(2000));
        assert_eq!(size("7B"), Ok(7));
        assert_eq!(size("1T"), Ok(1 << 40));
        for bad in [
            "",
            "M",
            "12Q",
            "1.5",
            "-1",
            "1e3",
            "99999999999T",
            "1..5M",
            "NaNM",
        ] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "-1", "1d", "1e999"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }
}
