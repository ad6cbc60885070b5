//! `latchkey run`: one function, once, against a real connection, like `nango dryrun`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::catalog::Kind;
use super::run::{invoke, Context, Limits, SyncRun};
use crate::app::App;

/// Runs the function and returns what to print: the output or the records, the logs, and the
/// error if it failed. Records are only written with `save` (syncs then run as recorded runs).
pub async fn run_once(
    app: Arc<App>,
    integration: &str,
    name: &str,
    connection_id: &str,
    input: Value,
    save: bool,
) -> Result<Value, String> {
    let config = app.config.current();
    let function = config.functions.get(integration, name).cloned().ok_or_else(|| {
        format!("integration `{integration}` has no sync or action `{name}` in {}", config.path.display())
    })?;
    let connection = app
        .store
        .connections
        .get(integration, connection_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("there is no connection `{connection_id}` for integration `{integration}`"))?;
    if function.kind == Kind::Sync && save {
        return crate::scheduler::run_now(&app, integration, name, connection_id)
            .await
            .map(|changes| json!({ "saved": changes }))
            .map_err(|e| e.to_string());
    }
    let context = Context {
        paginate: super::api::paginate_hints(&config, &connection),
        run: (function.kind == Kind::Sync).then(|| SyncRun { id: 0, variant: "base".into(), last_sync_date: None }),
        function,
        connection,
        input,
        save,
        limits: Limits::from_env(),
    };
    let finished = invoke(app, context).await;
    let mut report = json!({ "duration_ms": finished.duration.as_millis() as u64, "logs": finished.logs });
    match finished.result {
        Ok(output) => {
            if finished.dry_records.is_empty() {
                report["output"] = output;
            } else {
                report["records"] = json!(finished.dry_records);
            }
            Ok(report)
        }
        Err(e) => {
            report["error"] = e.failure().to_json();
            Err(report.to_string())
        }
    }
}
