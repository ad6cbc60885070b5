//! When a proxied request is sent again, and after how long.
//!
//! The caller asks with Nango's headers: `Retries: n` (at most [`MAX_RETRIES`]) and `Retry-On:
//! 429,409` (extra statuses). A response is retried when its status is in the provider's
//! `proxy.retry.error_code` list, or, when the provider has none, when it is 5xx or 429; when
//! its status is in `Retry-On`; or when the provider's `proxy.retry.remaining` header reads `0`.
//! Network failures are retried too. Non-idempotent methods (POST, PATCH) are retried only when
//! the caller sent `Retries`; without it, only an idempotent request that failed on a stale
//! pooled connection is sent once more.
//!
//! The wait is the longest of what the upstream asks for: the provider's `proxy.retry.at`
//! headers (an instant) or else its `proxy.retry.after` headers (seconds), and, unlike Nango,
//! always a plain `Retry-After` in either of its forms (seconds or an HTTP date). Without any,
//! it is exponential back-off from 3 s, doubling, capped at 10 min, with jitter so that many
//! callers do not retry in step. No retry starts when its wait would end after the request's
//! time budget ([`BUDGET`]); the last answer is passed on instead.
//!
//! Retrying needs the request body again: Pingora keeps the first 64 KiB of every request body
//! for that. A request whose body is larger is not retried once more than that has been read
//! (its response, or its failure, is passed on); uploads of any size still stream.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use rand::Rng;

use super::plan::PlanError;
use crate::catalog::Retry;

/// The most retries a caller may ask for.
pub const MAX_RETRIES: u32 = 10;
/// How long one proxied request may take, retries and waits included, before the gateway stops
/// retrying.
pub const BUDGET: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What the caller asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub retries: u32,
    pub retry_on: Vec<u16>,
}

impl Policy {
    /// Reads `Retries` and `Retry-On`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Policy, PlanError> {
        let invalid = |message: String| PlanError::new(StatusCode::BAD_REQUEST, "invalid_headers", message);
        let text = |name: &str| headers.get(name).map(|v| v.to_str().map(str::trim).unwrap_or("\u{0}"));
        let retries = match text("retries").filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => t
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .ok_or_else(|| invalid(format!("Retries must be a whole number from 0 to {MAX_RETRIES}")))?,
        };
        let retry_on = match text("retry-on").filter(|t| !t.is_empty()) {
            None => Vec::new(),
            Some(t) => t
                .split(',')
                .map(|code| code.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c)))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| {
                    invalid("Retry-On must be a comma-separated list of status codes, such as 429,503".into())
                })?,
        };
        Ok(Policy { retries, retry_on })
    }
}

/// Whether a response with `status` and `headers` should be retried, by the provider's rules and
/// the caller's `Retry-On`.
pub fn status_retryable(status: u16, headers: &HeaderMap, provider: Option<&Retry>, policy: &Policy) -> bool {
    let by_provider = match provider.filter(|r| !r.error_code.is_empty()) {
        Some(rules) => rules.error_code.iter().any(|rule| code_matches(rule, status)),
        None => status >= 500 || status == 429,
    };
    let exhausted = provider
        .and_then(|r| r.remaining.as_deref())
        .and_then(|name| headers.get(name))
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
    by_provider || policy.retry_on.contains(&status) || exhausted
}

/// `403`, `5xx` or `500-502`.
fn code_matches(rule: &str, status: u16) -> bool {
    if let Some(class) = rule.strip_suffix("xx") {
        return class.parse::<u16>().is_ok_and(|c| status / 100 == c);
    }
    if let Some((low, high)) = rule.split_once('-') {
        return matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&status));
    }
    rule.parse::<u16>().is_ok_and(|c| c == status)
}

/// How long the upstream asked to wait, if it did: the longest of its hints.
pub fn asked_wait(headers: &HeaderMap, provider: Option<&Retry>, now: DateTime<Utc>) -> Option<Duration> {
    let values = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter_map(|n| headers.get(n.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let mut waits = Vec::new();
    if let Some(rules) = provider {
        if !rules.at.is_empty() {
            waits.extend(values(&rules.at).iter().filter_map(|v| until(v, now)));
        } else {
            waits.extend(values(&rules.after).iter().filter_map(|v| retry_after(v, now)));
        }
    }
    if let Some(v) = headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        waits.extend(retry_after(v, now));
    }
    waits.into_iter().max()
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Some(Duration::from_secs_f64(seconds)),
        Ok(_) => None,
        Err(_) => http_date(value).map(|t| (t - now).to_std().unwrap_or_default()),
    }
}

/// An instant (epoch seconds or milliseconds, ISO 8601 or an HTTP date), as the time from now
/// until then; instants in the past are ignored.
fn until(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let instant = match value.parse::<f64>() {
        Ok(n) => crate::time::parse_instant(&serde_json::Value::from(n)),
        Err(_) => {
            crate::time::parse_instant(&serde_json::Value::String(value.to_string())).or_else(|| http_date(value))
        }
    }?;
    (instant - now).to_std().ok()
}

fn http_date(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(value).ok().map(|t| t.with_timezone(&Utc))
}

/// The back-off before retry number `retry` (1 for the first), with jitter: a random point in
/// the upper half of `3 s × 2^(retry-1)`, capped at 10 minutes.
pub fn backoff(retry: u32) -> Duration {
    let full = FIRST_BACKOFF.saturating_mul(1u32 << retry.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    let half = full / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn policy_reads_nangos_headers_and_refuses_nonsense() {
        assert_eq!(Policy::from_headers(&headers(&[])).unwrap(), Policy::default());
        let p = Policy::from_headers(&headers(&[("retries", "3"), ("retry-on", "409, 423")])).unwrap();
        assert_eq!(p, Policy { retries: 3, retry_on: vec![409, 423] });
        for bad in [("retries", "-1"), ("retries", "11"), ("retries", "x"), ("retry-on", "429,abc"), ("retry-on", "99")]
        {
            assert_eq!(Policy::from_headers(&headers(&[bad])).unwrap_err().code, "invalid_headers", "{bad:?}");
        }
    }

    #[test]
    fn retryable_statuses_follow_the_provider_then_the_caller() {
        let none = Policy::default();
        let empty = HeaderMap::new();
        assert!(status_retryable(503, &empty, None, &none));
        assert!(status_retryable(429, &empty, None, &none));
        assert!(!status_retryable(404, &empty, None, &none));
        assert!(!status_retryable(401, &empty, None, &none), "a 401 is answered by a refresh, not by back-off");
        let github = Retry {
            error_code: vec!["403".into(), "5xx".into(), "420-429".into()],
            remaining: Some("x-ratelimit-remaining".into()),
            ..Retry::default()
        };
        assert!(status_retryable(403, &empty, Some(&github), &none));
        assert!(status_retryable(425, &empty, Some(&github), &none));
        assert!(!status_retryable(404, &empty, Some(&github), &none));
        let caller = Policy { retries: 1, retry_on: vec![404] };
        assert!(status_retryable(404, &empty, Some(&github), &caller));
        let exhausted = headers(&[("x-ratelimit-remaining", "0")]);
        let only_remaining = Retry { remaining: Some("x-ratelimit-remaining".into()), ..Retry::default() };
        assert!(status_retryable(400, &exhausted, Some(&only_remaining), &none));
    }

    #[test]
    fn waits_take_the_longest_hint_in_every_form() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let in_a_minute = now.timestamp() + 60;
        let github = Retry { at: vec!["x-ratelimit-reset".into()], ..Retry::default() };
        let h = headers(&[("x-ratelimit-reset", &in_a_minute.to_string()), ("retry-after", "5")]);
        assert_eq!(asked_wait(&h, Some(&github), now), Some(Duration::from_secs(60)));
        let h = headers(&[("x-ratelimit-reset", &(in_a_minute * 1000).to_string())]);
        assert_eq!(asked_wait(&h, Some(&github), now), Some(Duration::from_secs(60)), "milliseconds");
        let h = headers(&[("retry-after", "Wed, 01 Jan 2025 00:00:30 GMT")]);
        assert_eq!(asked_wait(&h, None, now), Some(Duration::from_secs(30)), "an HTTP date");
        let after = Retry { after: vec!["x-wait".into()], ..Retry::default() };
        let h = headers(&[("x-wait", "2.5"), ("retry-after", "1")]);
        assert_eq!(asked_wait(&h, Some(&after), now), Some(Duration::from_millis(2500)));
        let h = headers(&[("x-ratelimit-reset", &(now.timestamp() - 10).to_string())]);
        assert_eq!(asked_wait(&h, Some(&github), now), None, "a past instant asks for nothing");
        assert_eq!(asked_wait(&headers(&[("retry-after", "soon")]), None, now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(1500) && first <= Duration::from_secs(3), "{first:?}");
            let third = backoff(3);
            assert!(third >= Duration::from_secs(6) && third <= Duration::from_secs(12), "{third:?}");
            assert!(backoff(30) <= MAX_BACKOFF);
        }
    }
}
