//! Durations in campaign definitions and delivery caps: a positive whole
//! number and a unit, `90s`, `60m`, `1h`, `24h`, `3d`, `30d`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The longest wait a definition may ask for (a year): anything longer is
/// almost certainly a typo.
pub const MAX_DAYS: i64 = 366;

/// A positive duration written as `<n><unit>` with unit `s`, `m`, `h` or `d`.
/// It keeps the text it was written as, so it serializes back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    amount: i64,
    unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl Unit {
    fn seconds(self) -> i64 {
        match self {
            Unit::Seconds => 1,
            Unit::Minutes => 60,
            Unit::Hours => 3_600,
            Unit::Days => 86_400,
        }
    }
    fn suffix(self) -> char {
        match self {
            Unit::Seconds => 's',
            Unit::Minutes => 'm',
            Unit::Hours => 'h',
            Unit::Days => 'd',
        }
    }
}

/// Why a duration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration \"{0}\": expected a positive whole number and a unit s, m, h or d (e.g. \"90s\", \"1h\", \"3d\")")]
    Syntax(String),
    #[error("invalid duration \"{0}\": must be greater than zero")]
    Zero(String),
    #[error("invalid duration \"{0}\": longer than {MAX_DAYS} days")]
    TooLong(String),
}

impl Duration {
    /// The duration as a chrono duration.
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.as_seconds())
    }

    /// Whole seconds.
    pub fn as_seconds(self) -> i64 {
        self.amount * self.unit.seconds()
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || DurationError::Syntax(text.to_string());
        let unit_char = text.chars().last().ok_or_else(syntax)?;
        let unit = match unit_char {
            's' => Unit::Seconds,
            'm' => Unit::Minutes,
            'h' => Unit::Hours,
            'd' => Unit::Days,
            _ => return Err(syntax()),
        };
        let digits = &text[..text.len() - unit_char.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        // More than 12 digits is beyond any limit below; avoids overflow.
        if digits.len() > 12 {
            return Err(DurationError::TooLong(text.to_string()));
        }
        let amount: i64 = digits.parse().map_err(|_| syntax())?;
        if amount == 0 {
            return Err(DurationError::Zero(text.to_string()));
        }
        let duration = Duration { amount, unit };
        if duration.as_seconds() > MAX_DAYS * 86_400 {
            return Err(DurationError::TooLong(text.to_string()));
        }
        Ok(duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A local wall-clock time of day, `HH:MM` (24-hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime(chrono::NaiveTime);

/// Why a local time was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid local time \"{0}\": expected HH:MM, 24-hour (e.g. \"09:30\")")]
pub struct LocalTimeError(pub String);

impl LocalTime {
    pub fn time(self) -> chrono::NaiveTime {
        self.0
    }
}

impl FromStr for LocalTime {
    type Err = LocalTimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || LocalTimeError(text.to_string());
        let bytes = text.as_bytes();
        if bytes.len() != 5 || bytes[2] != b':' {
            return Err(bad());
        }
        let (hh, mm) = (&text[..2], &text[3..]);
        if !hh.bytes().chain(mm.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let hour: u32 = hh.parse().map_err(|_| bad())?;
        let minute: u32 = mm.parse().map_err(|_| bad())?;
        chrono::NaiveTime::from_hms_opt(hour, minute, 0)
            .map(LocalTime)
            .ok_or_else(bad)
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%H:%M"))
    }
}

impl Serialize for LocalTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("90s", 90),
            ("60m", 3_600),
            ("1h", 3_600),
            ("24h", 86_400),
            ("3d", 259_200),
            ("30d", 2_592_000),
        ];
        for (text, seconds) in cases {
            let d: Duration = text.parse().expect(text);
            assert_eq!(d.as_seconds(), seconds, "{text}");
            assert_eq!(d.to_chrono(), chrono::Duration::seconds(seconds));
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn rejects_zero_negative_and_garbage() {
        for text in ["0s", "0d", "000h"] {
            assert_eq!(
                text.parse::<Duration>(),
                Err(DurationError::Zero(text.into())),
                "{text}"
            );
        }
        for text in [
            "", "h", "-1h", "+1h", "1", "1w", "1.5h", "1 h", " 1h", "1hour", "1H", "1h30m", "abc", "1٣h",
        ] {
            assert!(
                matches!(text.parse::<Duration>(), Err(DurationError::Syntax(_))),
                "{text}"
            );
        }
        for text in ["367d", "9999999999999999999999d", "8785h"] {
            assert!(
                matches!(text.parse::<Duration>(), Err(DurationError::TooLong(_))),
                "{text}"
            );
        }
        assert!("366d".parse::<Duration>().is_ok());
    }

    #[test]
    fn serde_round_trip_and_errors() {
        let d: Duration = serde_json::from_value(serde_json::json!("24h")).expect("valid");
        assert_eq!(serde_json::to_value(d).expect("serializes"), serde_json::json!("24h"));
        assert!(serde_json::from_value::<Duration>(serde_json::json!(24)).is_err());
        assert!(serde_json::from_value::<Duration>(serde_json::json!("24x")).is_err());
    }

    #[test]
    fn local_times() {
        let t: LocalTime = "09:30".parse().expect("valid");
        assert_eq!(t.to_string(), "09:30");
        assert!("23:59".parse::<LocalTime>().is_ok());
        assert!("00:00".parse::<LocalTime>().is_ok());
        for text in [
            "24:00", "9:30", "09:60", "0930", "09:30:00", "ab:cd", "", "-1:00", "+9:30",
        ] {
            assert!(text.parse::<LocalTime>().is_err(), "{text}");
        }
    }
}
