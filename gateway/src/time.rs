//! Timestamps as the API writes them and as the database stores them (milliseconds since the
//! Unix epoch, which sort and compare the same on SQLite and PostgreSQL).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// `2025-01-02T03:04:05.678Z`, the form Nango's API uses.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Serde for `Option<DateTime<Utc>>` as ISO text with milliseconds; reading also accepts
/// epoch seconds or milliseconds, as token responses and imports write them.
pub mod iso_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => s.serialize_str(&super::iso(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let value = Option::<serde_json::Value>::deserialize(d)?;
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => super::parse_instant(&v)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a date (ISO 8601 or epoch)"))),
        }
    }
}

/// An instant written as ISO 8601 text or as an epoch number (milliseconds when it would
/// otherwise land before 1971, as Nango reads them).
pub fn parse_instant(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    match value {
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc)),
        serde_json::Value::Number(n) => {
            let n = n.as_f64()?;
            let seconds_cutoff = 31_536_000_000.0; // 1971 in milliseconds
            let ms = if n.abs() < seconds_cutoff { n * 1000.0 } else { n };
            Utc.timestamp_millis_opt(ms as i64).single()
        }
        _ => None,
    }
}

/// A duration written as the config writes them: a whole number and a unit, `250ms`, `30s`,
/// `5m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_read_every_unit_and_refuse_the_rest() {
        assert_eq!(super::parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(super::parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(super::parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(super::parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        for bad in ["", "s", "10", "1.5s", "-1s", "10 weeks"] {
            assert_eq!(super::parse_duration(bad), None, "{bad}");
        }
    }
}
