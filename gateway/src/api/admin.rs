//! `GET /admin/config` (the active snapshot and the last reload) and `POST /admin/reload`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, Issue};
use super::extract::SecretKey;
use crate::app::App;
use crate::problem::Problems;
use crate::time::iso;

pub async fn config(_: SecretKey, State(app): State<Arc<App>>) -> Json<Value> {
    let config = app.config.current();
    let status = app.config.status();
    Json(json!({
        "version": config.version,
        "loaded_at": iso(config.loaded_at),
        "config_file": config.path.display().to_string(),
        "files": config.files.len(),
        "providers": config.catalog.len(),
        "integrations": config.integrations.keys().collect::<Vec<_>>(),
        "last_reload": {
            "attempted_at": status.last_attempt_at.map(iso),
            "error": status.last_error.as_ref().map(problems_json),
        },
    }))
}

pub async fn reload(_: SecretKey, State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let handle = Arc::clone(&app.config);
    let result = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the reload task failed"))?;
    match result {
        Ok(version) => Ok(Json(json!({ "success": true, "version": version }))),
        Err(problems) => {
            let error = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                format!("The configuration has {} problem(s); the previous version keeps serving", problems.len()),
            )
            .with_payload(problems_json(&problems));
            Err(problems.0.iter().fold(error, |error, p| {
                error.with_issue(Issue { code: "invalid_config", message: p.to_string(), path: vec![json!(p.pointer)] })
            }))
        }
    }
}

fn problems_json(problems: &Problems) -> Value {
    Value::Array(
        problems
            .0
            .iter()
            .map(|p| {
                json!({
                    "file": p.file.display().to_string(),
                    "line": p.line,
                    "path": p.pointer,
                    "message": p.message,
                    "hint": p.hint,
                })
            })
            .collect(),
    )
}
