//! Disk sizes in qemu-img syntax: `1073741824`, `512M`, `10G`, `1.5T`.

/// Parses a qemu-img size: a number with an optional suffix `B`, `K`, `M`, `G`,
/// `T`, `P` or `E` (powers of 1024, case-insensitive; no suffix means bytes).
/// Fractions are allowed with a suffix (`1.5G`). Returns bytes, or a message
/// saying what was expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let expected = || {
        format!(
            "expected a size like `10G`, `512M` or a number of bytes (suffixes B, K, M, G, T, P, E), found {text:?}"
        )
    };
    if t.is_empty() {
        return Err(expected());
    }
    let (num, mult): (&str, u64) = match t.as_bytes()[t.len() - 1].to_ascii_uppercase() {
        b'B' => (&t[..t.len() - 1], 1),
        b'K' => (&t[..t.len() - 1], 1 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        b'T' => (&t[..t.len() - 1], 1 << 40),
        b'P' => (&t[..t.len() - 1], 1 << 50),
        b'E' => (&t[..t.len() - 1], 1 << 60),
        _ => (t, 1),
    };
    let num = num.trim_end();
    let well_formed = !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && num.bytes().filter(|&b| b == b'.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    if !well_formed {
        return Err(expected());
    }
    let bytes = if num.contains('.') {
        let value: f64 = num.parse().map_err(|_| expected())?;
        let b = value * mult as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(format!("size {text:?} is too large"));
        }
        b.round() as u64
    } else {
        let value: u64 = num.parse().map_err(|_| format!("size {text:?} is too large"))?;
        value
            .checked_mul(mult)
            .ok_or_else(|| format!("size {text:?} is too large"))?
    };
    if bytes == 0 {
        return Err(format!("expected a size above zero, found {text:?}"));
    }
    Ok(bytes)
}

/// A size in its largest exact unit: `64M`, `1G`, `1536K`, `100 bytes`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("E", 1 << 60),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, m) in UNITS {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{u}", bytes / m);
        }
    }
    format!("{bytes} bytes")
}

/// A size for people, rounded: `432.1M`, `4.0G`, `512B`.
pub fn approx_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, m) in UNITS {
        if bytes >= m {
            return format!("{:.1}{u}", bytes as f64 / m as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::{approx_size, format_size, parse_size};

    #[test]
    fn sizes_print_in_their_largest_exact_unit_or_rounded() {
        assert_eq!(format_size(10 << 30), "10G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(parse_size(&format_size(1536 << 20)), Ok(1536 << 20));
        assert_eq!(approx_size(453_000_000), "432.0M");
        assert_eq!(approx_size(4 << 30), "4.0G");
        assert_eq!(approx_size(512), "512B");
    }

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512b"), Ok(512));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("101G"), Ok(101 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
    }

    #[test]
    fn garbage_and_zero_are_rejected() {
        for bad in ["", "G", "ten", "1.2.3G", "1GiB", "-1G", "0", "0M", ".5G", "20000000E"] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }
}
