//! Rate limits the proxy applies before a request leaves: the catalog's `rate_limit` (or
//! `rate_limits.<provider>` in `nango.yaml`, which replaces it), per connection and per provider,
//! as requests per interval and requests in flight; and pauses the upstream asked for with a 429.
//!
//! A request over a limit waits for its turn up to the limit's `max_wait` (5 s by default);
//! when its turn is further away, it is refused with 429 and a `Retry-After` saying when to come
//! back. Request rates use GCRA (a token bucket kept as one instant), so a burst up to
//! `requests` passes at once and the rest are spaced evenly. Limits are per gateway node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::catalog::{Limit, RateLimit};
use crate::time::parse_duration;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// The limiter state of one gateway node.
pub struct Limiter {
    /// Per scope and limit: the scope's state. Idle scopes are forgotten.
    buckets: moka::sync::Cache<(String, Limit), Arc<Bucket>>,
    /// Per connection: when the upstream said it may be called again.
    pauses: DashMap<(String, String), Instant>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            buckets: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            pauses: DashMap::new(),
        }
    }
}

/// Permission to send one request; holds its places under concurrency limits until dropped.
#[derive(Default)]
pub struct Admission {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// A request refused for being over a limit.
#[derive(Debug)]
pub struct Refused {
    pub retry_after: Duration,
    pub reason: String,
}

struct Bucket {
    /// GCRA's theoretical arrival time of the next request.
    next: Mutex<Option<Instant>>,
    concurrency: Option<Arc<Semaphore>>,
}

impl Limiter {
    /// Waits until the request may go, or refuses it.
    pub async fn admit(
        &self,
        rules: Option<&RateLimit>,
        provider: &str,
        integration: &str,
        connection: &str,
    ) -> Result<Admission, Refused> {
        let mut admission = Admission::default();
        if !self.pauses.is_empty() {
            let key = (integration.to_string(), connection.to_string());
            let until = self.pauses.get(&key).map(|p| *p);
            if let Some(until) = until {
                let now = Instant::now();
                if until <= now {
                    self.pauses.remove_if(&key, |_, u| *u <= now);
                } else {
                    let wait = until - now;
                    let max_wait =
                        rules.and_then(|r| r.per_connection.as_ref()).map(max_wait).unwrap_or(DEFAULT_MAX_WAIT);
                    if wait > max_wait {
                        return Err(Refused {
                            retry_after: wait,
                            reason: format!("the provider asked to pause connection `{connection}`"),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let Some(rules) = rules else { return Ok(admission) };
        if let Some(limit) = &rules.per_provider {
            let scope = format!("provider {provider}");
            self.take(&scope, limit, &mut admission).await?;
        }
        if let Some(limit) = &rules.per_connection {
            let scope = format!("connection `{connection}` of `{integration}`");
            self.take(&scope, limit, &mut admission).await?;
        }
        Ok(admission)
    }

    /// Remembers that the upstream asked this connection to wait `wait` before the next call.
    pub fn pause(&self, integration: &str, connection: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut entry = self.pauses.entry((integration.to_string(), connection.to_string())).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    async fn take(&self, scope: &str, limit: &Limit, admission: &mut Admission) -> Result<(), Refused> {
        let bucket = self.buckets.get_with((scope.to_string(), limit.clone()), || {
            Arc::new(Bucket {
                next: Mutex::new(None),
                concurrency: limit.concurrency.map(|n| Arc::new(Semaphore::new(n as usize))),
            })
        });
        let max_wait = max_wait(limit);
        let started = Instant::now();
        if let Some(requests) = limit.requests.filter(|n| *n > 0) {
            let interval = limit.interval.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_INTERVAL);
            let emission = interval / requests;
            let tolerance = interval.saturating_sub(emission);
            let wait = {
                let mut next = bucket.next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = Instant::now();
                let arrival = next.map_or(now, |n| n.max(now));
                let allowed_at = arrival.checked_sub(tolerance).unwrap_or(now).max(now);
                let wait = allowed_at - now;
                if wait > max_wait {
                    return Err(Refused {
                        retry_after: wait,
                        reason: format!("{scope} may send {requests} requests per {interval:?}"),
                    });
                }
                *next = Some(arrival + emission);
                wait
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(semaphore) = &bucket.concurrency {
            let left = max_wait.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, Arc::clone(semaphore).acquire_owned()).await {
                Ok(Ok(permit)) => admission._permits.push(permit),
                _ => {
                    return Err(Refused {
                        retry_after: Duration::from_secs(1),
                        reason: format!(
                            "{scope} may have {} requests in flight",
                            limit.concurrency.unwrap_or_default()
                        ),
                    })
                }
            }
        }
        Ok(())
    }
}

fn max_wait(limit: &Limit) -> Duration {
    limit.max_wait.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(limit: Limit) -> RateLimit {
        RateLimit { per_connection: Some(limit), per_provider: None }
    }

    #[tokio::test]
    async fn a_burst_passes_then_requests_are_spaced_or_refused() {
        let limiter = Limiter::default();
        let limit = rules(Limit {
            requests: Some(2),
            interval: Some("10s".into()),
            max_wait: Some("0ms".into()),
            ..Limit::default()
        });
        assert!(limiter.admit(Some(&limit), "p", "i", "c").await.is_ok());
        assert!(limiter.admit(Some(&limit), "p", "i", "c").await.is_ok());
        let refused = limiter.admit(Some(&limit), "p", "i", "c").await.err().expect("the third is over the limit");
        assert!(refused.retry_after > Duration::from_secs(4) && refused.retry_after <= Duration::from_secs(5));
        assert!(limiter.admit(Some(&limit), "p", "i", "other").await.is_ok(), "each connection has its own budget");
    }

    #[tokio::test]
    async fn concurrency_holds_places_until_the_admission_is_dropped() {
        let limiter = Limiter::default();
        let limit = rules(Limit { concurrency: Some(1), max_wait: Some("50ms".into()), ..Limit::default() });
        let first = limiter.admit(Some(&limit), "p", "i", "c").await.ok();
        assert!(limiter.admit(Some(&limit), "p", "i", "c").await.is_err());
        drop(first);
        assert!(limiter.admit(Some(&limit), "p", "i", "c").await.is_ok());
    }

    #[tokio::test]
    async fn an_upstream_pause_longer_than_the_wait_is_refused() {
        let limiter = Limiter::default();
        limiter.pause("i", "c", Duration::from_secs(60));
        let refused = limiter.admit(None, "p", "i", "c").await.err().expect("paused");
        assert!(refused.retry_after > Duration::from_secs(50));
        assert!(limiter.admit(None, "p", "i", "c2").await.is_ok());
        limiter.pause("i", "c3", Duration::from_millis(20));
        assert!(limiter.admit(None, "p", "i", "c3").await.is_ok(), "a short pause is waited out");
    }
}
