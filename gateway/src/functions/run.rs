//! Running a function once: its context, its limits, and what it produced.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{json, Value};

use super::catalog::{Code, Function, Kind};
use super::host::FunctionHost;
use super::sandbox::{Sandbox, SandboxError, Shared};
use crate::app::App;
use crate::connection::Connection;
use crate::logs::{Entry, Kind as LogKind, Level};
use crate::records::Summary;
use crate::time::{from_millis, iso};

const SDK: &str = include_str!("sdk.js");
const ZOD: &str = include_str!("zod.js");
/// What the engine evaluates once before its memory is snapshotted (see `snapshot`): the
/// SDK's modules, which every run then finds loaded.
pub(super) const PRELUDE: &str = "import 'nango';\nimport 'zod';\n";
/// The module each run starts from: it loads the function and hands it to the SDK.
const ENTRY: &str = "import * as f from 'latchkey:function';\nimport { __run } from 'nango';\n\
                     await __run(f, JSON.parse(__host('context', 'null')).ok);\n";

/// The limits of one run, each configurable through the environment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub wall_time: Duration,
    pub max_memory: usize,
    pub max_output_bytes: usize,
    pub max_records_per_batch: usize,
}

impl Limits {
    /// `LATCHKEY_FUNCTION_TIMEOUT_MS` (default 5 minutes), `LATCHKEY_FUNCTION_MEMORY_MB` (128),
    /// `LATCHKEY_FUNCTION_MAX_OUTPUT_BYTES` (2 MB, Nango's limit for action output) and
    /// `LATCHKEY_FUNCTION_MAX_BATCH_RECORDS` (10,000).
    pub fn from_env() -> Limits {
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                    tracing::warn!("{name}={text} is not a whole number; using {default}");
                    default
                }),
                Err(_) => default,
            }
        };
        Limits {
            wall_time: Duration::from_millis(number("LATCHKEY_FUNCTION_TIMEOUT_MS", 300_000)),
            max_memory: number("LATCHKEY_FUNCTION_MEMORY_MB", 128) as usize * 1024 * 1024,
            max_output_bytes: number("LATCHKEY_FUNCTION_MAX_OUTPUT_BYTES", 2 * 1024 * 1024) as usize,
            max_records_per_batch: number("LATCHKEY_FUNCTION_MAX_BATCH_RECORDS", 10_000) as usize,
        }
    }
}

/// The sync run a function executes in, if it is a sync.
#[derive(Debug, Clone)]
pub struct SyncRun {
    /// The run's id; records it saves are marked as seen by it.
    pub id: i64,
    pub variant: String,
    /// Start of the last successful run, for incremental syncs.
    pub last_sync_date: Option<i64>,
}

/// Everything a run needs to know.
pub struct Context {
    pub function: Arc<Function>,
    pub connection: Arc<Connection>,
    pub input: Value,
    pub run: Option<SyncRun>,
    /// Whether records are written (`latchkey run` without `--save` only collects them).
    pub save: bool,
    pub limits: Limits,
    /// The provider's pagination hints.
    pub paginate: Option<Value>,
}

impl Context {
    pub(super) fn to_js(&self) -> Value {
        let function = &self.function;
        let mut context = json!({
            "connectionId": self.connection.connection_id,
            "providerConfigKey": self.connection.provider_config_key,
            "provider": self.connection.provider,
            "scriptType": function.kind.as_str(),
            "input": self.input,
            "paginate": self.paginate,
        });
        if let Some(run) = &self.run {
            context["syncName"] = json!(function.name);
            context["variant"] = json!(run.variant);
            context["lastSyncDate"] = run.last_sync_date.map(|t| json!(iso(from_millis(t)))).unwrap_or(Value::Null);
        }
        context
    }

    /// The source of a module the engine imports; empty when there is none.
    pub(super) fn module_source(&self, name: &str) -> String {
        match (name, &self.function.code) {
            ("latchkey:function", Code::JavaScript(js)) => js.to_string(),
            _ => builtin_module(name).unwrap_or_default().to_string(),
        }
    }

    /// How the log store groups this run's lines: `sync:<name>#<run>` or `action:<name>`.
    pub fn operation(&self) -> String {
        match &self.run {
            Some(run) if run.id > 0 => format!("{}:{}#{}", self.function.kind.as_str(), self.function.name, run.id),
            _ => format!("{}:{}", self.function.kind.as_str(), self.function.name),
        }
    }

    /// Nango's checkpoint key: `sync:<name>:<variant>` or `action:<name>`.
    pub fn checkpoint_key(&self) -> String {
        match (&self.run, self.function.kind) {
            (Some(run), Kind::Sync) => format!("sync:{}:{}", self.function.name, run.variant),
            _ => format!("{}:{}", self.function.kind.as_str(), self.function.name),
        }
    }
}

/// The modules every function may import, by name: the SDK and zod.
pub(super) const BUILTIN_MODULES: [(&str, &str); 2] = [("nango", SDK), ("zod", ZOD)];

pub(super) fn builtin_module(name: &str) -> Option<&'static str> {
    BUILTIN_MODULES.iter().find(|(builtin, _)| *builtin == name).map(|(_, source)| *source)
}

/// What the function reported while it ran.
#[derive(Debug, Default)]
pub struct RunState {
    pub output: Option<Value>,
    pub failure: Option<Failure>,
    pub results: IndexMap<String, Summary>,
    /// Records a run that does not save would have saved, by model.
    pub dry_records: IndexMap<String, Vec<Value>>,
    pub logs: Vec<Value>,
}

/// An error the function threw (or the host raised for it).
#[derive(Debug, Clone)]
pub struct Failure {
    /// `action_script_runtime_error` for an ActionError, `script_http_error`, …
    pub kind: String,
    pub message: String,
    pub payload: Option<Value>,
    pub stack: Option<String>,
    pub response: Option<Value>,
}

impl Failure {
    pub fn new(kind: &str, message: String) -> Failure {
        Failure { kind: kind.to_string(), message, payload: None, stack: None, response: None }
    }

    /// The error as the API returns it (no stack: it is in the logs).
    pub fn to_json(&self) -> Value {
        let mut error = json!({ "type": self.kind, "message": self.message });
        if let Some(payload) = &self.payload {
            error["payload"] = payload.clone();
        }
        if let Some(response) = &self.response {
            error["upstream_response"] = json!({ "status": response["status"], "body": response["data"] });
        }
        error
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{}", .0.message)]
    Failed(Box<Failure>),
}

impl FunctionError {
    pub fn failure(&self) -> Failure {
        match self {
            FunctionError::Failed(f) => (**f).clone(),
            FunctionError::Sandbox(e) => {
                let kind = match e {
                    SandboxError::Timeout(_) => "execution_timeout",
                    SandboxError::Memory(_) => "out_of_memory",
                    _ => "script_internal_error",
                };
                Failure::new(kind, e.to_string())
            }
        }
    }
}

/// A finished run: the output (or error), the record changes and the logs.
#[derive(Debug)]
pub struct Finished {
    pub result: Result<Value, FunctionError>,
    pub results: IndexMap<String, Summary>,
    pub dry_records: IndexMap<String, Vec<Value>>,
    pub logs: Vec<Value>,
    pub duration: Duration,
}

/// Runs the function on a blocking thread; host calls go back to this runtime.
pub async fn invoke(app: Arc<App>, context: Context) -> Finished {
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now();
    let context = Arc::new(context);
    let name = format!("{}/{}", context.function.integration, context.function.name);
    let task = {
        let (app, context) = (Arc::clone(&app), Arc::clone(&context));
        tokio::task::spawn_blocking(move || run_blocking(app, context, runtime))
    };
    let mut finished = match task.await {
        Ok(finished) => finished,
        Err(e) => Finished {
            result: Err(SandboxError::Engine(format!("the run's thread failed: {e}")).into()),
            results: IndexMap::new(),
            dry_records: IndexMap::new(),
            logs: Vec::new(),
            duration: Duration::ZERO,
        },
    };
    finished.duration = started.elapsed();
    let (level, message) = match &finished.result {
        Ok(_) => (Level::Info, format!("{name} finished")),
        Err(e) => {
            tracing::warn!(function = %name, "function failed after {:?}: {e}", finished.duration);
            (Level::Error, format!("{name} failed: {e}"))
        }
    };
    let mut entry = Entry::new(LogKind::Function, level, message);
    entry.integration = Some(context.connection.provider_config_key.clone());
    entry.connection = Some(context.connection.connection_id.clone());
    entry.operation = Some(context.operation());
    entry.latency_ms = Some(finished.duration.as_millis() as u64);
    app.logs.record(entry.redact(&context.connection.credentials.secret_values()));
    finished
}

fn run_blocking(app: Arc<App>, context: Arc<Context>, runtime: tokio::runtime::Handle) -> Finished {
    let limits = context.limits;
    let host = Arc::new(Mutex::new(FunctionHost::new(app, runtime, Arc::clone(&context), Instant::now())));
    let ran = Sandbox::get().and_then(|sandbox| {
        let (guest, input) = match &context.function.code {
            Code::JavaScript(_) => (sandbox.js_engine()?, ENTRY.to_string()),
            Code::Wasm(guest) => (guest.as_ref(), context.to_js().to_string()),
            Code::Native(native) => {
                if let Ok(mut host) = host.lock() {
                    host.deadline = Instant::now() + limits.wall_time;
                }
                let mut shared = Shared(Arc::clone(&host));
                return Ok(native.run(context.to_js().to_string().as_bytes(), &mut shared));
            }
        };
        // The clock starts once the engine is ready: compiling it is not the function's time.
        if let Ok(mut host) = host.lock() {
            host.deadline = Instant::now() + limits.wall_time;
        }
        let shared = Box::new(Shared(Arc::clone(&host)));
        sandbox.run(guest, input.as_bytes(), shared, limits.wall_time, limits.max_memory)
    });
    let state = match host.lock() {
        Ok(mut host) => std::mem::take(&mut host.state),
        Err(poisoned) => std::mem::take(&mut poisoned.into_inner().state),
    };
    let result = match (ran, state.failure) {
        (Err(e), _) => Err(FunctionError::Sandbox(e)),
        (Ok(_), Some(failure)) => Err(FunctionError::Failed(Box::new(failure))),
        (Ok(0), None) => Ok(state.output.unwrap_or(Value::Null)),
        (Ok(status), None) => Err(FunctionError::Failed(Box::new(Failure::new(
            "script_internal_error",
            format!("the function exited with status {status}"),
        )))),
    };
    Finished {
        result,
        results: state.results,
        dry_records: state.dry_records,
        logs: state.logs,
        duration: Duration::ZERO,
    }
}

/// Deletion tracking after a successful full run of a sync that asks for it: every record of
/// its models that the run did not save is marked deleted.
pub async fn delete_unseen(app: &App, connection: i64, models: &[String], run: &SyncRun) -> IndexMap<String, u64> {
    let mut deleted = IndexMap::new();
    let records = crate::records::Records::new(app.store.db.clone());
    for model in models {
        let dataset = crate::records::Dataset::new(connection, model, Some(&run.variant));
        match records.delete_unseen(&dataset, run.id, crate::time::now_millis()).await {
            Ok(n) => {
                deleted.insert(model.clone(), n);
            }
            Err(e) => tracing::error!("cannot track deletes of {model}: {e}"),
        }
    }
    deleted
}
