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
