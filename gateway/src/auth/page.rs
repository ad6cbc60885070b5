//! The page the OAuth popup ends on. It tells the window that opened it how the flow ended
//! (`postMessage` to the opener and on the `nango-oauth-callback` broadcast channel, in the
//! message shapes Nango's Connect UI reads), then closes itself.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The success page.
pub fn success() -> Response {
    render(StatusCode::OK, None)
}

/// The error page; `message` is shown as given (a provider's own words reach the user).
pub fn error(error_type: &str, message: &str) -> Response {
    render(StatusCode::BAD_REQUEST, Some(json!({ "message": message, "errorType": error_type })))
}

fn render(status: StatusCode, error: Option<Value>) -> Response {
    let (title, text) = match &error {
        None => ("Connected", "The connection was created. You can close this window.".to_string()),
        Some(e) => ("Connection failed", e["message"].as_str().unwrap_or_default().to_string()),
    };
    let data = script_json(&error.unwrap_or(Value::Null));
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; display: grid; place-items: center; min-height: 100vh; margin: 0;
       background: #f6f7f9; color: #1c2024; }}
main {{ max-width: 32rem; padding: 2rem; background: #fff; border-radius: 12px; box-shadow: 0 1px 4px #0002; }}
h1 {{ font-size: 1.25rem; margin: 0 0 .5rem; }}
p {{ margin: 0; line-height: 1.5; overflow-wrap: anywhere; }}
</style>
</head>
<body>
<main role="status"><h1>{title}</h1><p>{text}</p></main>
<script>
(function () {{
  var error = {data};
  window.__nangoOAuthError = error;
  var message = error ? {{ type: "nango_oauth_callback_error", payload: error }} : {{ type: "nango_oauth_callback_success" }};
  try {{ if (window.opener) window.opener.postMessage(message, "*"); }} catch (e) {{}}
  try {{ new BroadcastChannel("nango-oauth-callback").postMessage(message); }} catch (e) {{}}
  window.addEventListener("message", function (event) {{
    if (event.data && event.data.type === "nango_oauth_callback_ack") window.close();
  }});
  if (!error) setTimeout(function () {{ window.close(); }}, 500);
}})();
</script>
</body>
</html>
"#,
        text = escape_html(&text),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside a `<script>` element, whatever text it carries.
pub fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_cannot_break_out_of_the_page() {
        let hostile = "</script><script>alert(1)</script> & \u{2028}";
        let json = script_json(&json!({ "message": hostile }));
        assert!(!json.contains('<') && !json.contains('\u{2028}'));
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["message"], hostile);
        assert_eq!(escape_html("<b>\"x\"</b>"), "&lt;b&gt;&quot;x&quot;&lt;/b&gt;");
    }
}
