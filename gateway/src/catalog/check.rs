//! Semantic checks of a resolved provider entry: what JSON Schema cannot say, such as an OAuth 2
//! entry without a token URL or a template naming a connection-config field nobody fills in.

use std::collections::HashSet;

use serde_json::Value;

use super::template::placeholders;
use super::{AuthMode, Provider, TokenUrl};
use crate::problem::Problem;

/// With `strict` (Latchkey's own catalog), entries must also be complete for their auth mode
/// and their form patterns must compile; extra catalogs are held to the rules Nango's own
/// catalog meets.
pub(super) fn check(provider: &Provider, base: &str, strict: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let at = |key: &str| format!("{base}/{key}");
    let problem = |key: &str, message: String, hint: &str| Problem::new(&provider.origin, at(key), message).hint(hint);

    let required = if strict { required_keys(provider) } else { Vec::new() };
    for (key, needed_by) in required {
        if provider.entry.get(key).is_none() {
            problems.push(problem(
                key,
                format!("`{key}` is missing; {needed_by} entries need it"),
                "add it, or change `auth_mode`",
            ));
        }
    }

    let signs = provider.entry.get("token").is_some() && provider.entry.get("signature").is_some();
    if provider.auth_mode == Some(AuthMode::Jwt) && signs {
        if let Some(e) = crate::auth::jwt::entry_problem(provider) {
            problems.push(problem("token", e.to_string(), "make token.header.alg an algorithm of signature.protocol"));
        }
    }

    let declared: HashSet<&str> = provider
        .connection_config
        .keys()
        .map(String::as_str)
        .chain(provider.automated_config_keys())
        .chain(
            provider.proxy.iter().flat_map(|p| p.connection_config.iter().flat_map(|c| c.keys().map(String::as_str))),
        )
        .collect();
    for (pointer, template) in templates(provider) {
        for name in placeholders(template) {
            let Some(field) = name.strip_prefix("connectionConfig.") else { continue };
            // Keys may hold dots themselves (`installation.uuid`) or name a nested value.
            let top = field.split('.').next().unwrap_or(field);
            let known = |f: &str| declared.contains(f) || IMPLICIT_CONFIG.contains(&f);
            if !known(field) && !known(top) {
                problems.push(
                    Problem::new(
                        &provider.origin,
                        format!("{base}{pointer}"),
                        format!("the template names connection config `{field}`, which the entry does not declare"),
                    )
                    .hint(format!("declare `{field}` under `connection_config`, or fix the name")),
                );
            }
        }
    }
    if strict {
        for (section, fields) in
            [("connection_config", &provider.connection_config), ("credentials", &provider.credentials)]
        {
            for (name, field) in fields {
                let Some(pattern) = &field.pattern else { continue };
                if let Err(e) = regex::Regex::new(pattern) {
                    problems.push(
                        Problem::new(
                            &provider.origin,
                            format!("{base}/{section}/{name}/pattern"),
                            format!("the pattern does not compile: {e}"),
                        )
                        .hint("write a regular expression that both JavaScript and Rust accept"),
                    );
                }
            }
        }
    }
    problems
}

/// Connection-config keys Latchkey itself fills in for some flows.
const IMPLICIT_CONFIG: &[&str] = &["oauth_scopes", "appPublicLink", "installation_id", "app_id"];

fn required_keys(provider: &Provider) -> Vec<(&'static str, &'static str)> {
    match provider.auth_mode {
        Some(AuthMode::OAuth2) if provider.entry.get("installation").is_some() => vec![("token_url", "OAUTH2")],
        Some(AuthMode::OAuth2) => vec![("authorization_url", "OAUTH2"), ("token_url", "OAUTH2")],
        Some(AuthMode::OAuth2Cc) => vec![("token_url", "OAUTH2_CC")],
        Some(AuthMode::OAuth1) => {
            vec![("request_url", "OAUTH1"), ("authorization_url", "OAUTH1"), ("token_url", "OAUTH1")]
        }
        Some(AuthMode::TwoStep) => vec![("token_url", "TWO_STEP"), ("token_response", "TWO_STEP")],
        Some(AuthMode::Jwt) => vec![("token", "JWT"), ("signature", "JWT")],
        _ => Vec::new(),
    }
}

/// Every template of the entry that takes connection config, with its pointer.
fn templates(provider: &Provider) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    if let Some(url) = &provider.authorization_url {
        out.push(("/authorization_url".into(), url));
    }
    match &provider.token_url {
        Some(TokenUrl::One(url)) => out.push(("/token_url".into(), url)),
        Some(TokenUrl::PerMode(urls)) => {
            out.extend(urls.iter().map(|(mode, url)| (format!("/token_url/{mode}"), url.as_str())))
        }
        None => {}
    }
    if let Some(url) = &provider.refresh_url {
        out.push(("/refresh_url".into(), url));
    }
    for (section, params) in
        [("authorization_params", &provider.authorization_params), ("token_params", &provider.token_params)]
    {
        for (k, v) in params {
            if let Value::String(s) = v {
                out.push((format!("/{section}/{k}"), s));
            }
        }
    }
    if let Some(proxy) = &provider.proxy {
        if let Some(url) = &proxy.base_url {
            out.push(("/proxy/base_url".into(), url));
        }
        out.extend(proxy.headers.iter().map(|(k, v)| (format!("/proxy/headers/{k}"), v.as_str())));
        out.extend(proxy.query.iter().map(|(k, v)| (format!("/proxy/query/{k}"), v.as_str())));
    }
    out
}
