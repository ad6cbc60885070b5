//! Checks over Latchkey's own catalog (the repository's `providers/`), beyond what loading it
//! checks: every template renders with a sample connection.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::template::{render_with_fallback, Scope};
use super::{load, AuthMode, Provider, Source, TokenUrl};

fn own_catalog() -> super::Catalog {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers");
    let loaded = load(&[Source::Directory(dir)]);
    assert!(loaded.problems.is_empty(), "the catalog has problems:\n{}", loaded.problems);
    loaded.catalog
}

/// A sample value for a form field: its example, its first allowed value, or a placeholder.
fn sample(field: &Value) -> String {
    if let Some(example) = field.get("example").and_then(Value::as_str) {
        return example.to_string();
    }
    if let Some(first) = field.get("enum").and_then(|e| e.get(0)).and_then(Value::as_str) {
        return first.to_string();
    }
    if field.get("format").and_then(Value::as_str) == Some("uri") {
        return "https://sample.example".to_string();
    }
    "sample".to_string()
}

/// A sample for a key the provider fills in itself: a URL when the name says it is one.
fn automated_sample(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    if ["url", "uri", "endpoint"].iter().any(|w| lower.contains(w)) {
        "https://sample.example".to_string()
    } else {
        "sample".to_string()
    }
}

fn sample_vars(p: &Provider) -> Value {
    let mut config = Map::new();
    if let Some(fields) = p.entry.get("connection_config").and_then(Value::as_object) {
        for (k, f) in fields {
            config.insert(k.clone(), Value::String(sample(f)));
        }
    }
    for key in p.automated_config_keys() {
        config.entry(key.to_string()).or_insert_with(|| Value::String(automated_sample(key)));
    }
    let mut credentials = Map::new();
    if let Some(fields) = p.entry.get("credentials").and_then(Value::as_object) {
        for (k, f) in fields {
            credentials.insert(k.clone(), Value::String(sample(f)));
        }
    }
    // The fields each credential type stores (BILL keeps its session, TWO_STEP its token).
    for standard in [
        "apiKey",
        "username",
        "password",
        "access_token",
        "token",
        "session_id",
        "organization_id",
        "dev_key",
        "user_id",
    ] {
        credentials.entry(standard.to_string()).or_insert(Value::String("secret".into()));
    }
    let mut vars = json!({
        "connectionConfig": config,
        "credentials": credentials.clone(),
        "accessToken": "token",
        "clientId": "client",
        "clientSecret": "client-secret",
        "method": "GET",
    });
    // Credential fields are also visible at the top level (`${apiKey}`).
    if let Some(out) = vars.as_object_mut() {
        out.extend(credentials);
    }
    vars
}

#[test]
fn every_template_of_the_catalog_renders_with_a_sample_connection() {
    let catalog = own_catalog();
    let mut failures = Vec::new();
    for p in catalog.iter() {
        let vars = sample_vars(p);
        let scope = Scope::new(&vars);
        let mut templates: Vec<(&str, &str)> = Vec::new();
        if let Some(url) = &p.authorization_url {
            templates.push(("authorization_url", url));
        }
        match &p.token_url {
            Some(TokenUrl::One(url)) => templates.push(("token_url", url)),
            Some(TokenUrl::PerMode(urls)) => templates.extend(urls.values().map(|u| ("token_url", u.as_str()))),
            None => {}
        }
        if let Some(proxy) = &p.proxy {
            if let Some(base) = &proxy.base_url {
                templates.push(("proxy.base_url", base));
            }
            templates.extend(proxy.headers.values().map(|h| ("proxy.headers", h.as_str())));
            templates.extend(proxy.query.values().map(|q| ("proxy.query", q.as_str())));
        }
        for (field, template) in templates {
            let rendered = render_with_fallback(template, &scope);
            if !rendered.is_complete() {
                failures.push(format!("{}: {field} `{template}` lacks {:?}", p.name, rendered.missing));
            } else if field.ends_with("url") && url::Url::parse(&rendered.text).is_err() {
                failures.push(format!("{}: {field} renders to `{}`, not a URL", p.name, rendered.text));
            }
        }
        let needs_base = !matches!(p.auth_mode, Some(AuthMode::AwsSigV4 | AuthMode::None));
        if needs_base && p.base_url().is_none() {
            failures.push(format!("{}: no proxy.base_url", p.name));
        }
    }
    assert!(failures.is_empty(), "{} template problem(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_entry_names_its_docs_and_categories() {
    let catalog = own_catalog();
    for p in catalog.iter() {
        assert!(p.docs.starts_with("https://"), "{}: docs must be an https link, is `{}`", p.name, p.docs);
        assert!(!p.docs.contains("nango.dev"), "{}: docs must point at the provider's own documentation", p.name);
        assert!(!p.categories.is_empty(), "{}: no category", p.name);
        assert!(p.auth_mode.is_some(), "{}: no auth_mode", p.name);
    }
}

#[test]
fn every_jwt_entry_signs_a_token_with_its_sample_credentials() {
    for p in own_catalog().iter().filter(|p| p.auth_mode == Some(AuthMode::Jwt)) {
        let vars = sample_vars(p);
        let text = |key: &str| vars[key].as_object().cloned().unwrap_or_default();
        let fields = crate::auth::jwt::split_pairs(p, text("credentials"));
        let signed = crate::auth::jwt::sign(p, &fields, &text("connectionConfig"), chrono::Utc::now());
        assert!(signed.is_ok(), "{}: {:?}", p.name, signed.err());
    }
}
