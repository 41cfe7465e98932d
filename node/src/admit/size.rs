//! Byte sizes as people type them: `8G`, `512M`, `1.5GiB`, `20GB`, `1024`.
//!
//! `K`, `M`, `G`, `T` (and `KiB`…`TiB`, `Ki`…`Ti`) are powers of 1024, as `free`, `df -h` and
//! Docker's `-m 8g` read them; `KB`, `MB`, `GB`, `TB` are powers of 1000 (SI, as disk vendors).
//! Units are case-insensitive; a bare number is bytes.

use crate::output::format_size;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    #[error("empty size; use e.g. 8G, 512M or 1.5GiB")]
    Empty,
    #[error("{0:?} is not a size: it must start with a number (e.g. 8G, 512M, 1.5GiB)")]
    NotANumber(String),
    #[error("{0:?}: a size cannot be negative")]
    Negative(String),
    #[error(
        "{text:?}: unknown unit {unit:?}; use B, K, M, G, T (powers of 1024; also KiB..TiB) or KB, MB, GB, TB (powers of 1000)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is too large (over 16 EiB)")]
    TooLarge(String),
}

const KI: u64 = 1024;

fn multiplier(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => KI,
        "m" | "mi" | "mib" => KI.pow(2),
        "g" | "gi" | "gib" => KI.pow(3),
        "t" | "ti" | "tib" => KI.pow(4),
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        _ => return None,
    })
}

/// Parses a size into bytes (fractions of a byte round down).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    if t.starts_with('-') {
        return Err(SizeError::Negative(text.to_owned()));
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(SizeError::NotANumber(text.to_owned()));
    }
    let factor = multiplier(unit).ok_or_else(|| SizeError::UnknownUnit {
        text: text.to_owned(),
        unit: unit.to_owned(),
    })?;
    let too_large = || SizeError::TooLarge(text.to_owned());
    match number.split_once('.') {
        None => {
            let n: u64 = number.parse().map_err(|_| too_large())?;
            n.checked_mul(factor).ok_or_else(too_large)
        }
        Some((whole, frac)) => {
            // Exact arithmetic: 1.5G is exactly 1610612736, no float rounding.
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| too_large())?
            };
            let digits = frac.len().min(18) as u32;
            let frac: u128 = if digits == 0 {
                0
            } else {
                frac[..digits as usize].parse().map_err(|_| too_large())?
            };
            let scale = 10u128.pow(digits);
            let bytes = whole
                .checked_mul(u128::from(factor))
                .and_then(|w| w.checked_add(frac * u128::from(factor) / scale))
                .ok_or_else(too_large)?;
            u64::try_from(bytes).map_err(|_| too_large())
        }
    }
}

/// Like [`format_size`] for a signed amount.
pub fn format_signed(bytes: i128) -> String {
    let abs = u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX);
    if bytes < 0 {
        format!("-{}", format_size(abs))
    } else {
        format_size(abs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8g"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8 Gi"), Ok(8 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("100T"), Ok(100 << 40));
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("1kb"), Ok(1000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1024B"), Ok(1024));
        assert_eq!(parse_size(" 2G "), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_size("1.5G"), Ok(1_610_612_736));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size(".5K"), Ok(512));
        assert_eq!(parse_size("7.8GB"), Ok(7_800_000_000));
        assert_eq!(parse_size("1.5"), Ok(1), "fractions of a byte round down");
    }

    #[test]
    fn errors_are_precise() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(
            parse_size("lots").unwrap_err().to_string(),
            "\"lots\" is not a size: it must start with a number (e.g. 8G, 512M, 1.5GiB)"
        );
        assert_eq!(
            parse_size("-1G").unwrap_err().to_string(),
            "\"-1G\": a size cannot be negative"
        );
        let e = parse_size("8X").unwrap_err();
        assert_eq!(
            e,
            SizeError::UnknownUnit {
                text: "8X".into(),
                unit: "X".into()
            }
        );
        assert!(e.to_string().contains("use B, K, M, G, T"), "{e}");
        assert!(matches!(
            parse_size("8 GBs"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("1.2.3G"),
            Err(SizeError::NotANumber(_))
        ));
        assert!(matches!(parse_size("."), Err(SizeError::NotANumber(_))));
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn signed_formatting() {
        assert_eq!(format_signed(-(1_288_490_189)), "-1.2 GiB");
        assert_eq!(format_signed(8 << 30), "8 GiB");
    }
}
