//! The host API a running function calls: every operation takes JSON and answers
//! `{"ok": value}` or `{"error": {message, type, response?}}`. The sandbox calls it from a
//! blocking thread; operations that wait (HTTP, the database) run on the tokio runtime.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::run::{Context, Failure, RunState};
use super::sandbox::Host;
use super::state;
use crate::app::App;
use crate::logs::{Entry, Kind as LogKind, Level};
use crate::proxy::plan::{plan, Outbound};
use crate::records::{Dataset, Records, Summary};
use crate::time::now_millis;

/// Variables with this prefix are the function's environment (`getEnvironmentVariables`),
/// without it.
pub const ENV_PREFIX: &str = "LATCHKEY_FN_ENV_";
/// The longest a single log message may be.
const MAX_LOG_MESSAGE: usize = 100_000;
/// How many log lines one run keeps for its caller.
const MAX_LOG_LINES: usize = 10_000;

static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| crate::http::client("functions", None));

pub struct FunctionHost {
    pub app: Arc<App>,
    pub runtime: tokio::runtime::Handle,
    pub context: Arc<Context>,
    pub deadline: Instant,
    pub state: RunState,
    /// Models whose deletions are being tracked (`trackDeletesStart`).
    tracking: HashSet<String>,
}

/// A failed operation, as the function sees it (a thrown error).
#[derive(Debug)]
struct OpError {
    message: String,
    kind: &'static str,
    response: Option<Value>,
}

impl OpError {
    fn new(kind: &'static str, message: impl Into<String>) -> OpError {
        OpError { message: message.into(), kind, response: None }
    }
}

impl FunctionHost {
    pub fn new(app: Arc<App>, runtime: tokio::runtime::Handle, context: Arc<Context>, deadline: Instant) -> Self {
        FunctionHost { app, runtime, context, deadline, state: RunState::default(), tracking: HashSet::new() }
    }

    fn answer(&mut self, op: &str, arg: Value) -> Result<Value, OpError> {
        match op {
            "context" => Ok(self.context.to_js()),
            "output" => self.output(arg),
            "fail" => {
                self.fail(arg);
                Ok(Value::Null)
            }
            "log" => {
                self.log(arg);
                Ok(Value::Null)
            }
            "proxy" => {
                let request: ProxyRequest = parse(arg)?;
                let app = Arc::clone(&self.app);
                let context = Arc::clone(&self.context);
                let deadline = self.deadline;
                self.runtime.block_on(proxy(&app, &context, request, deadline))
            }
            "batchSave" | "batchUpdate" | "batchDelete" => self.batch(op, arg),
            "trackDeletesStart" => {
                let model: ModelArg = parse(arg)?;
                self.tracking.insert(model.model);
                Ok(Value::Null)
            }
            "trackDeletesEnd" => self.track_deletes_end(arg),
            "getConnection" => Ok(self.context.connection.to_api_full(true)),
            "getMetadata" => self
                .wait(state::metadata(&self.app, &self.context))
                .map(|m| m.map(Value::Object).unwrap_or(Value::Null)),
            "setMetadata" | "updateMetadata" => {
                let body: MetadataArg = parse(arg)?;
                let merge = op == "updateMetadata";
                self.wait(state::set_metadata(&self.app, &self.context, &body.metadata, merge)).map(|_| Value::Null)
            }
            "getCheckpoint" => self.wait(state::checkpoint(&self.app, &self.context)),
            "saveCheckpoint" => {
                let body: CheckpointArg = parse(arg)?;
                if body.checkpoint.values().any(|v| v.is_object() || v.is_array()) {
                    return Err(OpError::new(
                        "invalid_checkpoint",
                        "a checkpoint is a flat object: its values are strings, numbers or booleans",
                    ));
                }
                self.wait(state::save_checkpoint(&self.app, &self.context, Some(&body.checkpoint))).map(|_| Value::Null)
            }
            "clearCheckpoint" => self.wait(state::save_checkpoint(&self.app, &self.context, None)).map(|_| Value::Null),
            "getEnvironmentVariables" => Ok(Value::Array(
                std::env::vars()
                    .filter_map(|(k, v)| k.strip_prefix(ENV_PREFIX).map(|name| json!({ "name": name, "value": v })))
                    .collect(),
            )),
            other => Err(OpError::new("unknown_operation", format!("the host has no operation `{other}`"))),
        }
    }

    fn wait<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
    ) -> Result<T, OpError> {
        self.runtime.block_on(work).map_err(|e| {
            tracing::error!("a function's storage call failed: {e}");
            OpError::new("internal_error", "the gateway could not read or write its database")
        })
    }

    fn output(&mut self, value: Value) -> Result<Value, OpError> {
        let size = value.to_string().len();
        let limit = self.context.limits.max_output_bytes;
        if size > limit {
            let message = format!("the output is {size} bytes, more than the limit of {limit} bytes");
            self.state.failure.get_or_insert(Failure::new("output_too_large", message.clone()));
            return Err(OpError::new("output_too_large", message));
        }
        self.state.output = Some(value);
        Ok(Value::Null)
    }

    fn fail(&mut self, report: Value) {
        let text = |key: &str| report.get(key).and_then(Value::as_str).map(str::to_string);
        let failure = Failure {
            kind: text("type").unwrap_or_else(|| "script_runtime_error".into()),
            message: text("message").unwrap_or_else(|| "the function failed".into()),
            payload: report.get("payload").cloned().filter(|p| !p.is_null()),
            stack: text("stack"),
            response: report.get("response").cloned().filter(|p| !p.is_null()),
        };
        self.state.failure.get_or_insert(failure);
    }

    fn log(&mut self, arg: Value) {
        let level = arg.get("level").and_then(Value::as_str).unwrap_or("info").to_string();
        let mut message = arg.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
        if message.len() > MAX_LOG_MESSAGE {
            message.truncate(message.floor_char_boundary(MAX_LOG_MESSAGE));
        }
        let function = &self.context.function.name;
        let connection = &self.context.connection.connection_id;
        match level.as_str() {
            "error" => tracing::error!(target: "latchkey::function", function, connection, "{message}"),
            "warn" => tracing::warn!(target: "latchkey::function", function, connection, "{message}"),
            "debug" => tracing::debug!(target: "latchkey::function", function, connection, "{message}"),
            _ => tracing::info!(target: "latchkey::function", function, connection, "{message}"),
        }
        let mut entry = Entry::new(LogKind::Function, Level::parse(&level).unwrap_or(Level::Info), message.clone());
        entry.integration = Some(self.context.connection.provider_config_key.clone());
        entry.connection = Some(connection.clone());
        entry.operation = Some(self.context.operation());
        self.app.logs.record(entry.redact(&self.context.connection.credentials.secret_values()));
        if self.state.logs.len() < MAX_LOG_LINES {
            let mut line = json!({ "level": level, "message": message, "at": crate::time::iso(chrono::Utc::now()) });
            if let Some(payload) = arg.get("payload").filter(|p| !p.is_null()) {
                line["payload"] = payload.clone();
            }
            self.state.logs.push(line);
        }
    }

    fn batch(&mut self, op: &str, arg: Value) -> Result<Value, OpError> {
        let body: BatchArg = parse(arg)?;
        let limit = self.context.limits.max_records_per_batch;
        if body.records.len() > limit {
            let message = format!(
                "{op} got {} records for `{}`, more than the limit of {limit} per batch; save in smaller batches",
                body.records.len(),
                body.model
            );
            tracing::error!(target: "latchkey::function", function = %self.context.function.name, "{message}");
            return Err(OpError::new("too_many_records", message));
        }
        let models = &self.context.function.models;
        if !models.is_empty() && !models.iter().any(|m| m == &body.model) {
            return Err(OpError::new(
                "invalid_model",
                format!("`{}` is not a model of this sync (it declares {})", body.model, models.join(", ")),
            ));
        }
        let Some(run) = self.context.run.as_ref() else {
            return Err(OpError::new("not_a_sync", format!("{op} is for syncs; actions return their output")));
        };
        if !self.context.save {
            if op == "batchSave" {
                self.state.dry_records.entry(body.model).or_default().extend(body.records);
            }
            return Ok(Value::Null);
        }
        let dataset = Dataset::new(self.context.connection.id, &body.model, Some(&run.variant));
        let records = Records::new(self.app.store.db.clone());
        let now = now_millis();
        let result = self.runtime.block_on(async {
            match op {
                "batchSave" => records.save(&dataset, body.records, run.id, now).await,
                "batchUpdate" => records.update(&dataset, body.records, run.id, now).await,
                _ => records.delete(&dataset, body.records, now).await,
            }
        });
        let summary = result.map_err(|e| match e {
            crate::records::RecordsError::InvalidRecord { .. } => OpError::new("invalid_sync_record", e.to_string()),
            e => {
                tracing::error!("cannot write records of {}: {e}", dataset.model);
                OpError::new("internal_error", "the gateway could not write the records")
            }
        })?;
        self.state.results.entry(body.model).or_default().add(summary);
        Ok(json!({ "added": summary.added, "updated": summary.updated, "deleted": summary.deleted }))
    }

    fn track_deletes_end(&mut self, arg: Value) -> Result<Value, OpError> {
        let ModelArg { model } = parse(arg)?;
        if !self.tracking.remove(&model) {
            return Err(OpError::new("invalid_call", format!("trackDeletesEnd(`{model}`) without trackDeletesStart")));
        }
        let deleted = self.delete_unseen(&model)?;
        Ok(json!({ "deletedKeys": deleted }))
    }

    /// Marks deleted every record of `model` this run did not save.
    fn delete_unseen(&mut self, model: &str) -> Result<u64, OpError> {
        let (Some(run), true) = (self.context.run.as_ref(), self.context.save) else { return Ok(0) };
        let dataset = Dataset::new(self.context.connection.id, model, Some(&run.variant));
        let records = Records::new(self.app.store.db.clone());
        let deleted = self.runtime.block_on(records.delete_unseen(&dataset, run.id, now_millis())).map_err(|e| {
            tracing::error!("cannot track deletes of {model}: {e}");
            OpError::new("internal_error", "the gateway could not write the records")
        })?;
        self.state.results.entry(model.to_string()).or_default().add(Summary { deleted, ..Summary::default() });
        Ok(deleted)
    }
}

impl Host for FunctionHost {
    fn call(&mut self, op: &str, arg: &[u8]) -> Vec<u8> {
        if op == "module" {
            return self.context.module_source(&String::from_utf8_lossy(arg)).into_bytes();
        }
        let arg = serde_json::from_slice(arg).unwrap_or(Value::Null);
        let answer = match self.answer(op, arg) {
            Ok(value) => json!({ "ok": value }),
            Err(e) => {
                let mut error = json!({ "message": e.message, "type": e.kind });
                if let Some(response) = e.response {
                    error["response"] = response;
                }
                json!({ "error": error })
            }
        };
        answer.to_string().into_bytes()
    }
}

fn parse<T: for<'de> Deserialize<'de>>(arg: Value) -> Result<T, OpError> {
    serde_json::from_value(arg).map_err(|e| OpError::new("invalid_argument", e.to_string()))
}

#[derive(Deserialize)]
struct ModelArg {
    model: String,
}

#[derive(Deserialize)]
struct BatchArg {
    model: String,
    #[serde(default)]
    records: Vec<Value>,
}

#[derive(Deserialize)]
struct MetadataArg {
    #[serde(default)]
    metadata: Map<String, Value>,
}

#[derive(Deserialize)]
struct CheckpointArg {
    #[serde(default)]
    checkpoint: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyRequest {
    method: String,
    endpoint: Option<String>,
    params: Option<Value>,
    data: Option<Value>,
    headers: Option<IndexMap<String, Value>>,
    retries: Option<u32>,
    retry_on: Option<Vec<u16>>,
    base_url_override: Option<String>,
    provider_config_key: Option<String>,
    connection_id: Option<String>,
}

/// One call through the connection: planned like a `/proxy` request (credentials injected),
/// retried on network errors, 429 and 5xx (and `retryOn`) when `retries` allows.
async fn proxy(app: &App, context: &Context, request: ProxyRequest, deadline: Instant) -> Result<Value, OpError> {
    let key = request.provider_config_key.as_deref().unwrap_or(&context.connection.provider_config_key);
    let connection_id = request.connection_id.as_deref().unwrap_or(&context.connection.connection_id);
    let endpoint = request.endpoint.clone().unwrap_or_else(|| "/".into());
    // A pagination link carries its query in the endpoint.
    let (endpoint, inline_query) = match endpoint.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (endpoint, String::new()),
    };
    let query = [inline_query, query_string(request.params.as_ref())]
        .into_iter()
        .filter(|q| !q.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    let outbound = Outbound {
        method: &request.method,
        endpoint: &endpoint,
        query: (!query.is_empty()).then_some(query.as_str()),
        base_url_override: request.base_url_override.as_deref(),
    };
    let planned = plan(app, key, connection_id, &outbound)
        .await
        .map_err(|e| OpError::new("proxy_error", format!("{} ({})", e.message, e.code)))?;
    let target = &planned.target;
    let url =
        format!("{}://{}{}", if target.tls { "https" } else { "http" }, target.authority(), target.path_and_query);
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| OpError::new("invalid_argument", format!("`{}` is not an HTTP method", request.method)))?;
    let retries = request.retries.unwrap_or(0).min(10);
    let mut attempt = 0;
    loop {
        let mut builder = HTTP.request(method.clone(), &url);
        for (name, value) in request.headers.iter().flatten() {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            builder = builder.header(name.as_str(), value);
        }
        for (name, value) in &planned.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match &request.data {
            None | Some(Value::Null) => builder,
            Some(Value::String(text)) => builder.body(text.clone()),
            Some(data) => builder.json(data),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(OpError::new("execution_timeout", "the function's time limit passed during an HTTP call"));
        }
        let sent = builder.timeout(left).send().await;
        let retry_status = |status: u16| {
            status == 429 || status >= 500 || request.retry_on.as_ref().is_some_and(|codes| codes.contains(&status))
        };
        match sent {
            Ok(response) if attempt < retries && retry_status(response.status().as_u16()) => {
                let wait = retry_after(response.headers()).unwrap_or_else(|| backoff(attempt));
                tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
            }
            Ok(response) => return answer(response).await,
            Err(_) if attempt < retries => tokio::time::sleep(backoff(attempt)).await,
            Err(e) => {
                let message = if e.is_timeout() {
                    "the function's time limit passed during an HTTP call".to_string()
                } else {
                    format!("the request to {} failed: {}", target.authority(), without_url(&e))
                };
                return Err(OpError::new("script_network_error", message));
            }
        }
        attempt += 1;
    }
}

/// reqwest's message without the URL, whose query may carry an injected credential.
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    last.unwrap_or_else(|| "connection error".into())
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(10))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(60)))
}

/// The Axios-like response a function reads; 4xx and 5xx become a thrown error that carries it.
async fn answer(response: reqwest::Response) -> Result<Value, OpError> {
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        if let Ok(text) = value.to_str() {
            headers.insert(name.as_str().to_string(), Value::String(text.to_string()));
        }
    }
    let bytes = response.bytes().await.map_err(|e| {
        OpError::new("script_network_error", format!("reading the response failed: {}", without_url(&e)))
    })?;
    let data = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let body = json!({ "status": status, "headers": headers, "data": data });
    if status >= 400 {
        return Err(OpError {
            message: format!("Request failed with status code {status}"),
            kind: "script_http_error",
            response: Some(body),
        });
    }
    Ok(body)
}

/// `params` as a query string; arrays repeat the key.
fn query_string(params: Option<&Value>) -> String {
    let Some(Value::Object(params)) = params else { return String::new() };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        let mut put = |v: &Value| match v {
            Value::Null => {}
            Value::String(s) => {
                query.append_pair(key, s);
            }
            other => {
                query.append_pair(key, &other.to_string());
            }
        };
        match value {
            Value::Array(items) => items.iter().for_each(&mut put),
            other => put(other),
        }
    }
    query.finish()
}
