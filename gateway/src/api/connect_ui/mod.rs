//! Latchkey's Connect UI: the page `nango.openConnectUI()` shows in its iframe, and the theme it
//! is drawn with (`connect_ui:` in nango.yaml).

use serde_json::{json, Value};

use crate::config::Config;

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
