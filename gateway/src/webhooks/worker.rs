//! The sender: claims due deliveries, POSTs them signed, and records what happened.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::deliveries::{self, Attempt, Delivery, Status};
use super::Webhooks;
use crate::catalog::template::hex;
use crate::time::now_millis;

/// How long a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How long a claim lasts: longer than any attempt, so only a dead node's claims run out.
const LEASE: Duration = Duration::from_secs(45);
/// Deliveries in flight at once per node.
const PARALLEL: usize = 32;
/// How often due retries are looked for when nothing new was enqueued.
const POLL: Duration = Duration::from_secs(1);
/// The first retry waits about this long; each further one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Retries stop this long after the delivery was created (or replayed).
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

pub(super) fn http_client() -> reqwest::Client {
    crate::http::client("webhooks", Some(TIMEOUT))
}

pub(super) async fn run(webhooks: Arc<Webhooks>) {
    if !webhooks.db.is_postgres() {
        if let Err(e) = deliveries::release_all(&webhooks.db).await {
            tracing::warn!("cannot release webhook deliveries claimed by an earlier run: {e}");
        }
    }
    let slots = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let free = slots.available_permits();
        if free > 0 {
            let now = now_millis();
            let lease_until = now + LEASE.as_millis() as i64;
            match deliveries::claim(&webhooks.db, now, lease_until, free as i64).await {
                Ok(due) => {
                    for delivery in due {
                        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
                        let webhooks = Arc::clone(&webhooks);
                        tokio::spawn(async move {
                            send(&webhooks, &delivery).await;
                            drop(permit);
                            webhooks.wake.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!("cannot claim webhook deliveries: {e}"),
            }
        }
        tokio::select! {
            _ = webhooks.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn send(webhooks: &Webhooks, delivery: &Delivery) {
    let key = webhooks.signing_key();
    let body = delivery.body.as_bytes();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(body);
    let hmac = hex(&mac.finalize().into_bytes());
    let legacy = hex(&Sha256::new().chain_update(key.expose().as_bytes()).chain_update(body).finalize());
    let result = webhooks
        .http
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Nango-Hmac-Sha256", hmac)
        .header("X-Nango-Signature", legacy)
        .header("X-Latchkey-Delivery", delivery.id.to_string())
        .body(delivery.body.clone())
        .send()
        .await;
    let host = url::Url::parse(&delivery.url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let outcome = match result {
        Ok(response) if response.status().is_success() => Outcome::Delivered(response.status().as_u16()),
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            if status >= 500 || status == 429 {
                Outcome::Retry { status: Some(status), error: format!("HTTP {status}"), retry_after }
            } else {
                Outcome::Fail { status, error: format!("HTTP {status}, which is not retried") }
            }
        }
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no answer within {} s", TIMEOUT.as_secs())
            } else {
                let e = e.without_url();
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ")
            };
            Outcome::Retry { status: None, error, retry_after: None }
        }
    };
    let attempt = outcome.into_attempt(delivery, now_millis());
    match attempt.status {
        Status::Delivered => tracing::debug!(id = delivery.id, host, "webhook delivered"),
        Status::Pending => tracing::info!(
            id = delivery.id,
            host,
            error = attempt.error.as_deref(),
            attempt = delivery.attempts + 1,
            "webhook not delivered; will retry"
        ),
        Status::Failed => tracing::warn!(
            id = delivery.id,
            host,
            error = attempt.error.as_deref(),
            "webhook not delivered; giving up (replay it through POST /webhooks/deliveries/{}/replay)",
            delivery.id
        ),
    }
    if let Err(e) = deliveries::record(&webhooks.db, delivery.id, &attempt).await {
        tracing::warn!(id = delivery.id, "cannot record a webhook attempt: {e}");
    }
}

enum Outcome {
    Delivered(u16),
    Retry { status: Option<u16>, error: String, retry_after: Option<Duration> },
    Fail { status: u16, error: String },
}

impl Outcome {
    fn into_attempt(self, delivery: &Delivery, now: i64) -> Attempt {
        match self {
            Outcome::Delivered(status) => {
                Attempt { status: Status::Delivered, http_status: Some(status), error: None, next_attempt_at: now }
            }
            Outcome::Fail { status, error } => {
                Attempt { status: Status::Failed, http_status: Some(status), error: Some(error), next_attempt_at: now }
            }
            Outcome::Retry { status, error, retry_after } => {
                let wait = backoff(delivery.attempts.max(0) as u32, rand::thread_rng().gen_range(0.0..1.0));
                let wait = retry_after.map_or(wait, |asked| wait.max(asked.min(MAX_BACKOFF)));
                let next = now + wait.as_millis() as i64;
                let window_ends = delivery.window_started_at + GIVE_UP_AFTER.as_millis() as i64;
                if next > window_ends {
                    let error = format!("{error}; gave up after {} attempts", delivery.attempts + 1);
                    Attempt { status: Status::Failed, http_status: status, error: Some(error), next_attempt_at: now }
                } else {
                    Attempt { status: Status::Pending, http_status: status, error: Some(error), next_attempt_at: next }
                }
            }
        }
    }
}

/// The wait before retry `n + 1`: `FIRST_BACKOFF × 2ⁿ`, capped, of which the upper half is
/// random (`jitter` in 0..1), so that receivers coming back are not hit by every sender at once.
fn backoff(failed_before: u32, jitter: f64) -> Duration {
    let full = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(failed_before.min(20))).min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = at.timestamp_millis() - now_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(0, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(0, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(40, 0.0), MAX_BACKOFF / 2);
    }

    #[test]
    fn retry_after_is_read_in_both_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    fn delivery(attempts: i32, window_started_at: i64) -> Delivery {
        Delivery {
            id: 1,
            event_type: "auth".into(),
            url: "http://x".into(),
            body: "{}".into(),
            provider_config_key: None,
            connection_id: None,
            status: "pending".into(),
            attempts,
            next_attempt_at: 0,
            window_started_at,
            last_status: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            delivered_at: None,
        }
    }

    #[test]
    fn retries_stop_when_the_window_closes_and_4xx_is_final() {
        let now = 1_000_000_000_000;
        let retry = || Outcome::Retry { status: Some(503), error: "HTTP 503".into(), retry_after: None };
        let a = retry().into_attempt(&delivery(2, now), now);
        assert_eq!(a.status, Status::Pending);
        assert!(a.next_attempt_at >= now + 4_000 && a.next_attempt_at <= now + 8_000);
        let old = now - GIVE_UP_AFTER.as_millis() as i64;
        let a = retry().into_attempt(&delivery(30, old), now);
        assert_eq!(a.status, Status::Failed);
        assert!(a.error.unwrap().contains("gave up after 31 attempts"));
        let a = Outcome::Fail { status: 404, error: "HTTP 404".into() }.into_attempt(&delivery(0, now), now);
        assert_eq!(a.status, Status::Failed);
        let asked =
            Outcome::Retry { status: Some(429), error: "HTTP 429".into(), retry_after: Some(Duration::from_secs(30)) };
        assert_eq!(asked.into_attempt(&delivery(0, now), now).next_attempt_at, now + 30_000);
    }
}
