//! The WebSocket the frontend SDK opens on `/` before an OAuth popup: the gateway names the
//! client (`connection_ack` with a `ws_client_id`), the popup's URL carries that id, and the
//! callback pushes the flow's one result (`success` or `error`) to it.
//!
//! With several gateway nodes on one PostgreSQL database, the callback may reach another node
//! than the one holding the socket: a result for a client that is not here is relayed to every
//! node over `LISTEN/NOTIFY`, and the node that holds the client delivers it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use dashmap::DashMap;
use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, OnceCell};

use super::AuthState;
use crate::api::error::ApiError;
use crate::app::App;
use crate::store::Db;

/// The PostgreSQL channel that carries results between nodes.
const RELAY_CHANNEL: &str = "latchkey_ws";

/// How long the 101 waits; see [`upgrade`].
const UPGRADE_DELAY: Duration = Duration::from_millis(50);

/// How long a client may wait for its result: longer than any user spends on a consent page.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);

/// The clients connected to this node, by id.
#[derive(Default)]
pub struct Hub {
    clients: DashMap<String, mpsc::UnboundedSender<String>>,
    relay: OnceCell<()>,
}

/// The result a flow reports to its client.
pub enum Outcome<'a> {
    Success { provider_config_key: &'a str, connection_id: &'a str },
    Error { provider_config_key: &'a str, connection_id: &'a str, error_type: &'a str, description: &'a str },
}

impl Hub {
    /// Sends the result of a flow to its client, here or, through the database, on another node.
    pub async fn notify(&self, db: &Db, ws_client_id: &str, outcome: Outcome<'_>) {
        let message = match outcome {
            Outcome::Success { provider_config_key, connection_id } => json!({
                "message_type": "success",
                "provider_config_key": provider_config_key,
                "connection_id": connection_id,
                "is_pending": false,
            }),
            Outcome::Error { provider_config_key, connection_id, error_type, description } => json!({
                "message_type": "error",
                "provider_config_key": provider_config_key,
                "connection_id": connection_id,
                "error_type": error_type,
                "error_desc": description,
            }),
        };
        if self.deliver(ws_client_id, message.to_string()) {
            return;
        }
        match db {
            Db::Postgres(pool) => {
                let payload = json!({ "client": ws_client_id, "message": message }).to_string();
                let sent =
                    sqlx::query("SELECT pg_notify($1, $2)").bind(RELAY_CHANNEL).bind(payload).execute(pool).await;
                if let Err(e) = sent {
                    tracing::warn!("cannot relay a flow result to the other nodes: {e}");
                }
            }
            Db::Sqlite(_) => {
                tracing::info!(ws_client_id, "the frontend that started this flow is no longer connected")
            }
        }
    }

    /// Hands `text` to the client if it is connected to this node.
    fn deliver(&self, ws_client_id: &str, text: String) -> bool {
        match self.clients.remove(ws_client_id) {
            Some((_, sender)) => sender.send(text).is_ok(),
            None => false,
        }
    }

    /// Listens for results relayed by other nodes (PostgreSQL only), once per process; returns
    /// when the listener is in place, so that no result sent after the ack can be missed.
    async fn relay_from_other_nodes(self: &Arc<Self>, db: &Db) {
        let Db::Postgres(pool) = db else { return };
        self.relay
            .get_or_init(|| async {
                let listener = listen(pool).await;
                tokio::spawn(Arc::clone(self).relay_loop(pool.clone(), listener));
            })
            .await;
    }

    async fn relay_loop(self: Arc<Self>, pool: PgPool, mut listener: Option<PgListener>) {
        loop {
            if let Some(active) = listener.as_mut() {
                while let Ok(notification) = active.recv().await {
                    let Ok(relayed) = serde_json::from_str::<Value>(notification.payload()) else { continue };
                    if let (Some(client), Some(message)) = (relayed["client"].as_str(), relayed.get("message")) {
                        self.deliver(client, message.to_string());
                    }
                }
                tracing::warn!("lost the listener for flow results relayed by other nodes; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            listener = listen(&pool).await;
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .map_err(|e| tracing::warn!("cannot connect the listener for relayed flow results: {e}"))
        .ok()?;
    listener
        .listen(RELAY_CHANNEL)
        .await
        .map_err(|e| tracing::warn!("cannot listen for flow results relayed by other nodes: {e}"))
        .ok()?;
    Some(listener)
}

/// `GET /` with `Upgrade: websocket`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => {
            auth.hub.relay_from_other_nodes(&app.store.db).await;
            // Pingora tears an upgraded tunnel down when it reads the 101 before it has passed
            // on the upgrade request's own empty body (cloudflare/pingora#946). Answering a
            // moment later lets the edge finish the request first; one socket per sign-in
            // makes the wait invisible.
            tokio::time::sleep(UPGRADE_DELAY).await;
            ws.on_upgrade(move |socket| serve(socket, auth))
        }
        Err(_) => ApiError::not_found("Nothing here: `/` is the WebSocket the frontend SDK opens").into_response(),
    }
}

async fn serve(mut socket: WebSocket, auth: Arc<AuthState>) {
    let id = uuid::Uuid::new_v4().to_string();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    auth.hub.clients.insert(id.clone(), sender);
    let ack = json!({ "message_type": "connection_ack", "ws_client_id": id }).to_string();
    if socket.send(Message::Text(ack.into())).await.is_ok() {
        let deadline = tokio::time::sleep(MAX_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                result = receiver.recv() => {
                    if let Some(text) = result {
                        let _ = socket.send(Message::Text(text.into())).await;
                    }
                    break;
                }
                incoming = socket.recv() => match incoming {
                    // Clients say nothing; anything but a close is ignored.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                _ = &mut deadline => break,
            }
        }
    }
    auth.hub.clients.remove(&id);
    let _ = socket.send(Message::Close(None)).await;
}
