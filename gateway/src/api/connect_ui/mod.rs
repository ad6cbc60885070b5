//! Latchkey's Connect UI: the page `nango.openConnectUI()` shows in its iframe (at `/connect`,
//! the session token in the URL or posted by the parent page), the theme it is drawn with
//! (`connect_ui:` in nango.yaml), and the provider logos it and the API point to.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::app::App;
use crate::config::Config;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Scripts and styles come from this gateway only; the page calls the API it is told about
/// (`apiURL`) and may be framed by any application.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data:; connect-src *; \
                   frame-ancestors *; base-uri 'none'; form-action 'none'";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/connect", get(page))
        .route("/connect/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/connect/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/images/template-logos/{file}", get(logo))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

/// A provider's logo. The catalog carries no images, so each provider gets a monogram in a
/// colour derived from its name: stable, distinct, and never a broken image.
async fn logo(State(app): State<Arc<App>>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let name = file.strip_suffix(".svg").unwrap_or(&file);
    let config = app.config.current();
    let provider = config.catalog.get(name).ok_or_else(|| ApiError::not_found(format!("Unknown provider {name}")))?;
    let svg = monogram(&provider.name, &provider.display_name);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], svg)
        .into_response())
}

fn monogram(name: &str, display_name: &str) -> String {
    let hue = name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 360;
    let letter: String =
        display_name.chars().find(|c| c.is_alphanumeric()).map(|c| c.to_uppercase().collect()).unwrap_or_default();
    let letter = crate::auth::page::escape_html(&letter);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64"><rect width="64" height="64" rx="14" fill="hsl({hue} 55% 45%)"/><text x="32" y="43" font-family="system-ui, sans-serif" font-size="30" font-weight="600" fill="#fff" text-anchor="middle">{letter}</text></svg>"##
    )
}

/// Nango's `connectUISettings`, from the configured theme.
pub fn settings(config: &Config) -> Value {
    let ui = &config.connect_ui;
    let colours = |c: &crate::config::ConnectUiColours, fallback: &str| {
        json!({
            "primary": c.primary.as_deref().unwrap_or(fallback),
            "background": c.background,
            "text": c.text,
        })
    };
    json!({
        "theme": { "light": colours(&ui.theme.light, "#1f6feb"), "dark": colours(&ui.theme.dark, "#4c8dff") },
        "defaultTheme": ui.default_theme.as_deref().unwrap_or("system"),
        "showWatermark": ui.show_watermark.unwrap_or(false),
        "logoUrl": ui.logo_url,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn monograms_are_stable_and_escaped() {
        let a = super::monogram("github", "GitHub");
        assert_eq!(a, super::monogram("github", "GitHub"));
        assert!(a.contains(">G</text>"));
        assert!(super::monogram("x", "<script>").contains(">S</text>"));
    }
}
