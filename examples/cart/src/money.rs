//! Prices as exact decimals. JSON numbers such as `29.99` are kept exactly: as minor units and
//! a number of decimal places, never as a binary float. Totals are sums of integers.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most decimal places a price may have.
pub const MAX_SCALE: u32 = 6;

/// An exact decimal amount: `minor / 10^scale` (`29.99` is 2999 with scale 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Money {
    minor: i64,
    scale: u32,
}

impl Money {
    /// A whole amount.
    pub fn whole(n: i64) -> Money {
        Money { minor: n, scale: 0 }
    }

    /// `minor / 10^scale`.
    pub fn new(minor: i64, scale: u32) -> Money {
        Money { minor, scale }
    }

    /// Whether it is below zero.
    pub fn is_negative(self) -> bool {
        self.minor < 0
    }

    fn rescale(self, scale: u32) -> Option<i64> {
        self.minor
            .checked_mul(10i64.checked_pow(scale - self.scale)?)
    }

    /// `self + other`, exactly; `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        let scale = self.scale.max(other.scale);
        Some(Money {
            minor: self.rescale(scale)?.checked_add(other.rescale(scale)?)?,
            scale,
        })
    }

    /// `self × n`, exactly; `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Money> {
        Some(Money {
            minor: self.minor.checked_mul(n)?,
            scale: self.scale,
        })
    }

    /// Parses a decimal number as JSON writes it (`-12`, `29.99`, `1e-2`).
    pub fn parse(text: &str) -> Result<Money, String> {
        let bad = || format!("{text:?} is not an amount with at most {MAX_SCALE} decimal places");
        // f64's shortest round-trip text: what the JSON said, without exponents.
        let text = match text.contains(['e', 'E']) {
            true => format!("{}", text.parse::<f64>().map_err(|_| bad())?),
            false => text.to_owned(),
        };
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let frac = frac.trim_end_matches('0');
        let scale = u32::try_from(frac.len()).map_err(|_| bad())?;
        if scale > MAX_SCALE || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let negative = whole.starts_with('-');
        let digits = format!("{}{frac}", whole.trim_start_matches('-'));
        let minor: i64 = digits.parse().map_err(|_| bad())?;
        Ok(Money {
            minor: if negative { -minor } else { minor },
            scale,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.minor);
        }
        let p = 10i64.pow(self.scale);
        let sign = if self.minor < 0 { "-" } else { "" };
        let (whole, frac) = (self.minor.abs() / p, self.minor.abs() % p);
        write!(
            f,
            "{sign}{whole}.{frac:0width$}",
            width = self.scale as usize
        )
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.scale == 0 {
            return s.serialize_i64(self.minor);
        }
        // The nearest double to the decimal prints as that decimal (shortest round trip), so
        // JSON shows exactly `29.99`.
        let text = self.to_string();
        s.serialize_f64(text.parse().map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an amount (a number with at most {MAX_SCALE} decimal places)"
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Ok(Money::whole(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                i64::try_from(v)
                    .map(Money::whole)
                    .map_err(|_| E::custom("the amount is too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                // serde_json hands over the nearest double; its shortest text is the
                // decimal the JSON wrote.
                Money::parse(&format!("{v}")).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_guest::serde_json;

    #[test]
    fn decimals_stay_exact() {
        let p: Money = serde_json::from_str("29.99").unwrap();
        assert_eq!(p, Money::new(2999, 2));
        assert_eq!(serde_json::to_string(&p).unwrap(), "29.99");
        let total = p
            .checked_mul(3)
            .unwrap()
            .checked_add(Money::new(1, 2))
            .unwrap();
        assert_eq!(total.to_string(), "89.98");
        assert_eq!(serde_json::to_string(&total).unwrap(), "89.98");
        // 0.1 + 0.2 is 0.3 here, not 0.30000000000000004.
        let a: Money = serde_json::from_str("0.1").unwrap();
        let b: Money = serde_json::from_str("0.2").unwrap();
        assert_eq!(
            serde_json::to_string(&a.checked_add(b).unwrap()).unwrap(),
            "0.3"
        );
        assert_eq!(serde_json::to_string(&Money::whole(120)).unwrap(), "120");
        assert_eq!(Money::parse("1e-2").unwrap(), Money::new(1, 2));
        assert_eq!(Money::parse("-3.50").unwrap(), Money::new(-35, 1));
        assert!(Money::parse("0.0000001").is_err());
        assert!(serde_json::from_str::<Money>("\"abc\"").is_err());
    }
}
