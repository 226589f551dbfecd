//! Kubernetes quantities (`500m`, `1.5`, `256Mi`, `1G`) as numbers, for CPU and memory.

/// A string that is not a quantity Stevedore understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a quantity such as 500m, 0.5, 256Mi or 1G")]
pub struct QuantityError(pub String);

/// The value of a quantity: `"500m"` → 0.5, `"256Mi"` → 268435456.
pub fn parse_quantity(text: &str) -> Result<f64, QuantityError> {
    let error = || QuantityError(text.to_string());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| error())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Ei" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(error()),
    };
    let value = number * multiplier;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("2"), Ok(2.0));
        assert_eq!(parse_quantity("256Mi"), Ok(268_435_456.0));
        assert_eq!(parse_quantity("1G"), Ok(1e9));
        assert_eq!(parse_quantity("1.5Gi"), Ok(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("1MB").is_err());
        assert!(parse_quantity("-1").is_err());
    }
}
