//! The edge: one Pingora service in front of everything. `/proxy/*` is handled here, in
//! Pingora's phases; every other request goes to the control plane (the API router) over a
//! private Unix socket.
//!
//! A proxied request runs through these phases:
//! 1. `request_filter`: authenticate the secret key, read the integration from the config
//!    snapshot, the connection from the store's cache, and plan the upstream request (URL,
//!    SSRF guard, injected credentials). Any failure is answered here with Nango's error
//!    envelope.
//! 2. `upstream_peer`: the provider's host, over TLS when the base URL is https.
//! 3. `upstream_request_filter`: only the body framing headers and `Nango-Proxy-*` headers of
//!    the caller survive; the injected ones are added.
//! 4. Pingora streams both bodies; `logging` writes one line, without credentials.

mod inject;
pub mod plan;
mod resolve;
mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use serde_json::json;

use crate::app::App;
use crate::logs;
pub use plan::{Outbound, Plan, PlanError};
pub use target::{Target, TargetError};

/// How the edge answers one request.
pub struct Edge {
    app: Arc<App>,
    control_socket: PathBuf,
    resolver: resolve::Resolver,
}

impl Edge {
    pub fn new(app: Arc<App>, control_socket: PathBuf) -> Edge {
        Edge { app, control_socket, resolver: resolve::Resolver::default() }
    }
}

/// What one request became.
#[derive(Default)]
pub enum Route {
    #[default]
    Undecided,
    /// Handed to the control plane.
    Control,
    /// Proxied to a provider.
    Proxy(Box<Plan>),
}

pub struct Exchange {
    route: Route,
    started: Instant,
    /// A response the edge wrote itself, for the log: status and error code.
    answered: Option<(u16, &'static str)>,
    /// The status of the upstream's last response.
    upstream_status: Option<u16>,
    /// Why the request failed, in the gateway's words.
    failure: Option<String>,
    retries: u32,
}

const PROXY_PREFIX: &str = "/proxy";

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Exchange;

    fn new_ctx(&self) -> Exchange {
        Exchange {
            route: Route::Undecided,
            started: Instant::now(),
            answered: None,
            upstream_status: None,
            failure: None,
            retries: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Exchange) -> Result<bool> {
        let path = session.req_header().uri.path();
        let is_proxy = path == PROXY_PREFIX || path.starts_with("/proxy/");
        if !is_proxy {
            ctx.route = Route::Control;
            return Ok(false);
        }
        if session.req_header().method == Method::OPTIONS {
            return self.answer_preflight(session, ctx).await;
        }
        match self.plan(session.req_header()).await {
            Ok(plan) => {
                ctx.route = Route::Proxy(Box::new(plan));
                Ok(false)
            }
            Err(refusal) => {
                ctx.answered = Some((refusal.status.as_u16(), refusal.code));
                write_json(
                    session,
                    refusal.status,
                    json!({ "error": { "code": refusal.code, "message": refusal.message } }),
                )
                .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Exchange) -> Result<Box<HttpPeer>> {
        match &ctx.route {
            Route::Proxy(plan) => {
                let t = &plan.target;
                let addr =
                    self.resolver.resolve(&t.host, t.port).await.map_err(|e| {
                        Error::because(ErrorType::ConnectNoRoute, format!("cannot resolve {}", t.host), e)
                    })?;
                let mut peer = HttpPeer::new(addr, t.tls, t.host.clone());
                peer.options.connection_timeout = Some(Duration::from_secs(10));
                peer.options.total_connection_timeout = Some(Duration::from_secs(15));
                peer.options.read_timeout = Some(Duration::from_secs(120));
                peer.options.write_timeout = Some(Duration::from_secs(120));
                Ok(Box::new(peer))
            }
            Route::Control | Route::Undecided => {
                let socket = self.control_socket.to_string_lossy();
                let peer = HttpPeer::new_uds(&socket, false, String::new())?;
                Ok(Box::new(peer))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Exchange,
    ) -> Result<()> {
        let Route::Proxy(plan) = &ctx.route else { return Ok(()) };
        let forwarded = forwarded_headers(upstream);
        let names: Vec<http::HeaderName> = upstream.headers.keys().cloned().collect();
        for name in names {
            upstream.remove_header(&name);
        }
        let uri: http::Uri = plan
            .target
            .path_and_query
            .parse()
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "upstream path"))?;
        upstream.set_uri(uri);
        upstream.insert_header(header::HOST, plan.target.authority())?;
        for (name, value) in forwarded.framing {
            upstream.insert_header(name, value)?;
        }
        for (name, value) in &plan.headers {
            upstream.insert_header(name.clone(), value.as_str())?;
        }
        // The caller's `Nango-Proxy-*` headers win over the injected ones, except a provider's
        // own user-agent.
        let provider_sets_agent = plan.headers.iter().any(|(n, _)| n == "user-agent");
        for (name, value) in forwarded.caller {
            if name == header::USER_AGENT && provider_sets_agent {
                continue;
            }
            upstream.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Exchange,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream.status.as_u16());
        Ok(())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Exchange) {
        if matches!(ctx.route, Route::Control) {
            return;
        }
        let entry = log_entry(session, error, ctx);
        tracing::info!(
            integration = entry.integration.as_deref().unwrap_or_default(),
            connection = entry.connection.as_deref().unwrap_or_default(),
            method = entry.method.as_deref().unwrap_or_default(),
            path = entry.path.as_deref().unwrap_or_default(),
            status = entry.status.unwrap_or_default(),
            latency_ms = entry.latency_ms.unwrap_or_default(),
            retries = entry.retries,
            error = entry.error.as_deref(),
            "proxied"
        );
        self.app.logs.record(entry);
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Exchange) -> pingora::proxy::FailToProxy
    where
        Exchange: Send + Sync,
    {
        let (status, code, message) = match (&ctx.route, e.etype()) {
            (Route::Proxy(plan), ErrorType::ConnectTimedout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                format!("connecting to {} timed out", plan.target.host),
            ),
            (Route::Proxy(plan), ErrorType::ReadTimedout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("{} did not answer in time", plan.target.host),
            ),
            (Route::Proxy(plan), ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("cannot connect to {}:{}: {}", plan.target.host, plan.target.port, e.etype().as_str()),
            ),
            (
                Route::Proxy(plan),
                ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError,
            ) => (
                StatusCode::BAD_GATEWAY,
                "upstream_tls_error",
                format!("the TLS handshake with {} failed: {}", plan.target.host, e.etype().as_str()),
            ),
            (Route::Proxy(plan), _) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the request to {} failed: {}", plan.target.host, e.etype().as_str()),
            ),
            _ => (StatusCode::BAD_GATEWAY, "server_error", "the gateway's control plane did not answer".to_string()),
        };
        ctx.failure = Some(message.clone());
        let written = session.response_written().is_some();
        if !written && e.esource() != &pingora::ErrorSource::Downstream {
            let body = json!({ "error": { "code": code, "message": message } });
            let _ = write_json(session, status, body).await;
        }
        pingora::proxy::FailToProxy { error_code: status.as_u16(), can_reuse_downstream: false }
    }
}

impl Edge {
    async fn plan(&self, request: &RequestHeader) -> Result<Plan, PlanError> {
        self.authenticate(request)?;
        let header_text = |name: &str| -> Result<Option<&str>, PlanError> {
            match request.headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
                    PlanError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_headers",
                        format!("header {name} is not valid text"),
                    )
                }),
            }
        };
        let required = |name: &str| -> Result<String, PlanError> {
            header_text(name)?.filter(|v| !v.is_empty()).map(str::to_string).ok_or_else(|| {
                PlanError::new(StatusCode::BAD_REQUEST, "invalid_headers", format!("the {name} header is required"))
            })
        };
        let key = required("provider-config-key")?;
        let connection_id = required("connection-id")?;
        let outbound = Outbound {
            method: request.method.as_str(),
            endpoint: request.uri.path().strip_prefix(PROXY_PREFIX).unwrap_or_default(),
            query: request.uri.query(),
            base_url_override: header_text("base-url-override")?.filter(|v| !v.is_empty()),
        };
        plan::plan(&self.app, &key, &connection_id, &outbound).await
    }

    fn authenticate(&self, request: &RequestHeader) -> Result<(), PlanError> {
        let token = request
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            Some(t) if self.app.is_secret_key(t) => Ok(()),
            Some(_) => Err(PlanError::new(StatusCode::UNAUTHORIZED, "unknown_account", "The secret key is not valid")),
            None => Err(PlanError::new(
                StatusCode::UNAUTHORIZED,
                "missing_auth_header",
                "Send the API secret key as `Authorization: Bearer <key>`",
            )),
        }
    }

    async fn answer_preflight(&self, session: &mut Session, ctx: &mut Exchange) -> Result<bool> {
        let mut response = ResponseHeader::build(StatusCode::NO_CONTENT, Some(6))?;
        response.insert_header("access-control-allow-origin", "*")?;
        response.insert_header("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")?;
        let asked = session.req_header().headers.get("access-control-request-headers").cloned();
        response.insert_header(
            "access-control-allow-headers",
            asked.unwrap_or_else(|| http::HeaderValue::from_static("*")),
        )?;
        response.insert_header("access-control-max-age", "600")?;
        response.insert_header(header::CONTENT_LENGTH, "0")?;
        session.write_response_header(Box::new(response), true).await?;
        ctx.answered = Some((204, "preflight"));
        Ok(true)
    }
}

/// The log entry of one `/proxy` request. The path is the caller's endpoint without its query
/// (never the upstream URL, where a provider may have put a key), with any of the connection's
/// secrets that the caller wrote into it redacted.
fn log_entry(session: &Session, error: Option<&Error>, ctx: &Exchange) -> logs::Entry {
    let request = session.req_header();
    let written = session.response_written().map(|r| r.status.as_u16());
    let failed = ctx.answered.is_some() || ctx.failure.is_some() || error.is_some();
    let level = if failed { logs::Level::Error } else { logs::Level::Info };
    let endpoint = request.uri.path().strip_prefix(PROXY_PREFIX).unwrap_or_default();
    let status = ctx.upstream_status.or(written);
    let mut entry = logs::Entry::new(
        logs::Kind::Proxy,
        level,
        format!("{} {} → {}", request.method, endpoint, status.map(|s| s.to_string()).unwrap_or_else(|| "-".into())),
    );
    entry.method = Some(request.method.to_string());
    entry.path = Some(endpoint.to_string());
    entry.status = status;
    entry.latency_ms = Some(u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX));
    entry.retries = ctx.retries;
    entry.request_bytes = Some(session.body_bytes_read() as u64);
    entry.response_bytes = Some(session.body_bytes_sent() as u64);
    entry.error = match (ctx.answered, &ctx.failure, error) {
        (Some((_, code)), _, _) => Some(code.to_string()),
        (None, Some(failure), _) => Some(failure.clone()),
        (None, None, Some(e)) => Some(format!("{} error: {}", e.source_str(), e.etype().as_str())),
        (None, None, None) => None,
    };
    match &ctx.route {
        Route::Proxy(plan) => {
            entry.integration = Some(plan.integration.unique_key.clone());
            entry.connection = Some(plan.connection.connection_id.clone());
            entry.redact(&plan.connection.credentials.secret_values())
        }
        _ => {
            let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            entry.integration = header("provider-config-key");
            entry.connection = header("connection-id");
            entry
        }
    }
}

struct Forwarded {
    /// Headers that describe the body: they go upstream as they came.
    framing: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `Nango-Proxy-<name>` headers, renamed to `<name>`.
    caller: Vec<(http::HeaderName, http::HeaderValue)>,
}

fn forwarded_headers(request: &RequestHeader) -> Forwarded {
    let mut framing = Vec::new();
    let mut caller = Vec::new();
    for (name, value) in request.headers.iter() {
        let text = name.as_str();
        if matches!(text, "content-type" | "content-length" | "transfer-encoding" | "content-encoding") {
            framing.push((name.clone(), value.clone()));
        } else if let Some(inner) = text.strip_prefix("nango-proxy-") {
            if let Ok(inner) = http::HeaderName::from_bytes(inner.as_bytes()) {
                caller.push((inner, value.clone()));
            }
        }
    }
    Forwarded { framing, caller }
}

async fn write_json(session: &mut Session, status: StatusCode, body: serde_json::Value) -> Result<()> {
    let bytes = Bytes::from(body.to_string());
    let mut response = ResponseHeader::build(status, Some(4))?;
    response.insert_header(header::CONTENT_TYPE, "application/json")?;
    response.insert_header(header::CONTENT_LENGTH, bytes.len().to_string())?;
    response.insert_header("access-control-allow-origin", "*")?;
    session.write_response_header(Box::new(response), false).await?;
    session.write_response_body(Some(bytes), true).await?;
    Ok(())
}
