//! Webhooks to you: events (a connection created, a refresh that failed or recovered, a sync
//! that finished) POSTed to the URLs in `nango.yaml`, in Nango's payload shapes and signed as
//! Nango signs them (`X-Nango-Hmac-Sha256`).
//!
//! [`Webhooks::enqueue`] only stores the delivery ([`Webhooks::enqueue_in`] stores it in the
//! transaction of the change it announces); a background worker sends it, so a slow or dead
//! receiver never slows the caller. Failed sends (network errors, 5xx, 429) are retried
//! with exponential backoff and jitter for up to a day, across restarts; on PostgreSQL nodes
//! claim deliveries with `FOR UPDATE SKIP LOCKED`, so each is sent by one node. Deliveries can
//! be listed and replayed through the API. Nango, by contrast, retries twice within seconds,
//! keeps nothing across a restart and gives up on 429.

pub mod api;
mod deliveries;
mod worker;

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use deliveries::NewDelivery;
pub use deliveries::{Delivery, ListFilter, Status};

use crate::config::ConfigHandle;
use crate::connection::Connection;
use crate::secret::Secret;
use crate::store::connections::Upserted;
use crate::store::{Db, StoreError, Tx};

/// Where webhooks go and which ones are wanted, with Nango's names.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The primary URL, then the secondary one.
    pub urls: Vec<String>,
    /// The signing key; the API secret key when not set (as Nango's SDK assumes).
    pub signing_secret: Option<Secret>,
    pub on_auth_creation: bool,
    pub on_auth_refresh_error: bool,
    pub on_sync_completion_always: bool,
    pub on_sync_error: bool,
    pub on_async_action_completion: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            urls: Vec::new(),
            signing_secret: None,
            on_auth_creation: true,
            on_auth_refresh_error: true,
            on_sync_completion_always: false,
            on_sync_error: true,
            on_async_action_completion: true,
        }
    }
}

impl Settings {
    /// Whether the settings ask for this payload, by its `type` (and `operation`, `success`).
    fn wants(&self, payload: &Value) -> bool {
        let text = |k: &str| payload.get(k).and_then(Value::as_str);
        let success = payload.get("success").and_then(Value::as_bool);
        match text("type") {
            Some("auth") => match text("operation") {
                Some("creation") => self.on_auth_creation,
                // Failures and the recovery that follows one.
                Some("refresh") => self.on_auth_refresh_error,
                _ => true,
            },
            Some("sync") if success == Some(false) => self.on_sync_error,
            Some("sync") => {
                let results = payload.get("responseResults");
                let changed = ["added", "updated", "deleted"]
                    .iter()
                    .any(|k| results.and_then(|r| r.get(k)).and_then(Value::as_u64).unwrap_or(0) > 0);
                changed || self.on_sync_completion_always
            }
            Some("async_action") => self.on_async_action_completion,
            _ => true,
        }
    }
}

/// One event to send: Nango's payload, and the connection it is about.
#[derive(Debug, Clone)]
pub struct Event {
    /// The payload as Nango shapes it; its `type` names the event.
    pub payload: Value,
    pub provider_config_key: Option<String>,
    pub connection_id: Option<String>,
    /// The connection's `webhook_url_override`, which replaces the configured URLs.
    pub url_override: Option<String>,
}

impl Event {
    /// An event about `connection`, sent to its override URL when it has one.
    pub fn for_connection(connection: &Connection, payload: Value) -> Event {
        Event {
            payload,
            provider_config_key: Some(connection.provider_config_key.clone()),
            connection_id: Some(connection.connection_id.clone()),
            url_override: connection.webhook_url_override.clone(),
        }
    }
}

/// What an auth webhook reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOperation {
    Creation,
    Override,
    Refresh,
}

impl AuthOperation {
    fn as_str(self) -> &'static str {
        match self {
            AuthOperation::Creation => "creation",
            AuthOperation::Override => "override",
            AuthOperation::Refresh => "refresh",
        }
    }
}

/// Nango's auth webhook payload. `error` is `(type, description)` for a failure.
pub fn auth_payload(
    connection: &Connection,
    auth_mode: &str,
    operation: AuthOperation,
    error: Option<(&str, &str)>,
) -> Value {
    let mut payload = json!({
        "from": "nango",
        "type": "auth",
        "operation": operation.as_str(),
        "success": error.is_none(),
        "connectionId": connection.connection_id,
        "providerConfigKey": connection.provider_config_key,
        "provider": connection.provider,
        "authMode": auth_mode,
        "environment": "prod",
        "tags": connection.tags,
    });
    if let Some(user) = &connection.end_user {
        payload["endUser"] = json!({
            "endUserId": user.id,
            "endUserEmail": user.email,
            "organizationId": user.organization.as_ref().map(|o| o.id.clone()),
            "tags": user.tags.clone().unwrap_or_default(),
        });
    }
    if let Some((kind, description)) = error {
        payload["error"] = json!({ "type": kind, "description": description });
    }
    payload
}

/// JSON with keys sorted at every level and no whitespace: the exact text Nango signs, which
/// its SDK's legacy verifier re-creates from the parsed object.
pub fn stable_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect::<Map<_, _>>())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// The webhook sender of one gateway.
pub struct Webhooks {
    db: Db,
    config: Arc<ConfigHandle>,
    /// The API secret key, the signing key when the config names none.
    default_key: Secret,
    http: reqwest::Client,
    wake: Notify,
}

impl Webhooks {
    pub fn new(db: Db, config: Arc<ConfigHandle>, default_key: Secret) -> Arc<Webhooks> {
        Arc::new(Webhooks { db, config, default_key, http: worker::http_client(), wake: Notify::new() })
    }

    /// Announces a connection that was just created or replaced (Nango's `auth` webhook with
    /// operation `creation` or `override`). A webhook that cannot be stored is logged, never
    /// passed on: the connection is saved either way.
    pub async fn connection_saved(&self, connection: &Connection, upserted: Upserted) {
        let operation = match upserted {
            Upserted::Creation => AuthOperation::Creation,
            Upserted::Override => AuthOperation::Override,
        };
        let payload = auth_payload(connection, connection.credentials.mode(), operation, None);
        if let Err(e) = self.enqueue(Event::for_connection(connection, payload)).await {
            tracing::error!(connection = %connection.connection_id, "cannot store the auth webhook: {e}");
        }
    }

    /// Stores one delivery per URL the event goes to, for the worker to send; returns how many.
    /// Never waits for a receiver.
    pub async fn enqueue(&self, event: Event) -> Result<usize, StoreError> {
        let new = self.deliveries(&event);
        if new.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin_write().await?;
        deliveries::insert(&mut tx, &new).await?;
        tx.commit().await?;
        self.wake();
        Ok(new.len())
    }

    /// Stores the deliveries of `event` in `tx`, so that they commit with the change they
    /// announce or not at all; returns how many. Call [`Webhooks::wake`] once `tx` has committed.
    pub async fn enqueue_in(&self, tx: &mut Tx, event: Event) -> Result<usize, StoreError> {
        let new = self.deliveries(&event);
        deliveries::insert(tx, &new).await?;
        Ok(new.len())
    }

    /// Tells the worker that deliveries are waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One delivery per URL the event goes to, under the current settings; none when no URL is
    /// set or the settings leave this event out.
    fn deliveries(&self, event: &Event) -> Vec<NewDelivery> {
        let config = self.config.current();
        let settings = &config.webhooks;
        if !settings.wants(&event.payload) {
            return Vec::new();
        }
        let urls = match &event.url_override {
            Some(url) => vec![url.clone()],
            None => settings.urls.clone(),
        };
        let kind = event.payload.get("type").and_then(Value::as_str).unwrap_or("event");
        let body = stable_json(&event.payload);
        urls.into_iter()
            .map(|url| NewDelivery {
                event_type: kind.to_string(),
                url,
                body: body.clone(),
                provider_config_key: event.provider_config_key.clone(),
                connection_id: event.connection_id.clone(),
            })
            .collect()
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Delivery>, StoreError> {
        deliveries::list(&self.db, filter).await
    }

    pub async fn get(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
        deliveries::get(&self.db, id).await
    }

    /// Sends a delivery again, whatever became of it, with a fresh retry window.
    pub async fn replay(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
        let replayed = deliveries::replay(&self.db, id).await?;
        if replayed.is_some() {
            self.wake();
        }
        Ok(replayed)
    }

    /// Starts the worker that sends pending deliveries (those left by an earlier run too).
    pub fn spawn_worker(self: &Arc<Self>) {
        let webhooks = Arc::clone(self);
        tokio::spawn(async move { worker::run(webhooks).await });
    }

    fn signing_key(&self) -> Secret {
        self.config.current().webhooks.signing_secret.clone().unwrap_or_else(|| self.default_key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_json_sorts_keys_at_every_level() {
        let v = json!({ "b": 1, "a": { "d": [ { "z": 1, "y": 2 } ], "c": "x" } });
        assert_eq!(stable_json(&v), r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#);
    }

    #[test]
    fn settings_pick_events_as_nango_does() {
        let s = Settings::default();
        assert!(s.wants(&json!({ "type": "auth", "operation": "creation" })));
        assert!(!Settings { on_auth_creation: false, ..s.clone() }
            .wants(&json!({ "type": "auth", "operation": "creation" })));
        let unchanged =
            json!({ "type": "sync", "success": true, "responseResults": { "added": 0, "updated": 0, "deleted": 0 } });
        assert!(!s.wants(&unchanged));
        assert!(Settings { on_sync_completion_always: true, ..s.clone() }.wants(&unchanged));
        assert!(s.wants(&json!({ "type": "sync", "success": true, "responseResults": { "added": 2 } })));
        assert!(s.wants(&json!({ "type": "forward" })));
    }
}
