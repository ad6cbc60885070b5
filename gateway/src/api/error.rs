//! Nango's error envelope: `{"error": {"code", "message", "errors": [{code, message, path}]}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

use crate::store::StoreError;

/// One validation issue, pointing at the field.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub code: &'static str,
    pub message: String,
    pub path: Vec<Value>,
}

impl Issue {
    pub fn new(code: &'static str, message: impl Into<String>, path: &[&str]) -> Issue {
        Issue { code, message: message.into(), path: path.iter().map(|p| Value::String(p.to_string())).collect() }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Rarely present, so kept out of line to keep `Result<_, ApiError>` small.
    pub details: Option<Box<Details>>,
}

#[derive(Debug, Default)]
pub struct Details {
    pub errors: Vec<Issue>,
    pub payload: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None }
    }

    pub fn issues(&self) -> &[Issue] {
        self.details.as_ref().map(|d| d.errors.as_slice()).unwrap_or_default()
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A body field that is wrong: 400 `invalid_body` with the field's path.
    pub fn invalid_body(message: impl Into<String>, path: &[&str]) -> ApiError {
        let message = message.into();
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message.clone()).with_issue(Issue::new(
            "invalid_value",
            message,
            path,
        ))
    }

    pub fn invalid_query(message: impl Into<String>, path: &[&str]) -> ApiError {
        let message = message.into();
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query_params", message.clone()).with_issue(Issue::new(
            "invalid_value",
            message,
            path,
        ))
    }

    pub fn unknown_integration(key: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider_config",
            format!("There is no integration with unique key `{key}`"),
        )
    }

    pub fn with_issue(mut self, issue: Issue) -> ApiError {
        self.details.get_or_insert_default().errors.push(issue);
        self
    }

    pub fn with_payload(mut self, payload: Value) -> ApiError {
        self.details.get_or_insert_default().payload = Some(payload);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            if !details.errors.is_empty() {
                error["errors"] = serde_json::to_value(&details.errors).unwrap_or(Value::Null);
            }
            if let Some(payload) = details.payload {
                error["payload"] = payload;
            }
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("storage failure: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the gateway could not read or write its database",
        )
    }
}
