//! The catalog for a person: a table of providers and the card of one provider, as printed by
//! `latchkey providers list` and `latchkey providers show`.

use std::fmt::Write;

use serde_json::Value;

use super::{Catalog, Provider, TokenUrl};

/// Which providers to list.
#[derive(Debug, Default)]
pub struct Filter {
    pub category: Option<String>,
    pub auth_mode: Option<String>,
}

impl Filter {
    fn admits(&self, provider: &Provider) -> bool {
        let category =
            self.category.as_ref().is_none_or(|c| provider.categories.iter().any(|have| have.eq_ignore_ascii_case(c)));
        let mode = self
            .auth_mode
            .as_ref()
            .is_none_or(|m| provider.auth_mode.is_some_and(|have| have.as_str().eq_ignore_ascii_case(m)));
        category && mode
    }
}

pub fn matching<'c>(catalog: &'c Catalog, filter: &Filter) -> Vec<&'c Provider> {
    catalog.iter().filter(|p| filter.admits(p)).map(|p| &**p).collect()
}

/// One line per provider: name, auth mode, categories, display name.
pub fn table(providers: &[&Provider]) -> String {
    let name_width = providers.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<name_width$}  {:<18}  {:<32}  DISPLAY NAME\n", "NAME", "AUTH MODE", "CATEGORIES");
    for p in providers {
        let mode = p.auth_mode.map(|m| m.as_str()).unwrap_or("-");
        let _ =
            writeln!(out, "{:<name_width$}  {:<18}  {:<32}  {}", p.name, mode, p.categories.join(","), p.display_name);
    }
    let _ = write!(out, "{} provider(s)", providers.len());
    out
}

/// Everything a person configuring an integration needs to know about one provider.
pub fn card(p: &Provider) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<22}{value}");
    };
    line("name", &p.name);
    line("display name", &p.display_name);
    line("auth mode", p.auth_mode.map(|m| m.as_str()).unwrap_or("-"));
    line("categories", &p.categories.join(", "));
    line("docs", &p.docs);
    if let Some(url) = &p.authorization_url {
        line("authorization url", url);
    }
    match &p.token_url {
        Some(TokenUrl::One(url)) => line("token url", url),
        Some(TokenUrl::PerMode(urls)) => {
            for (mode, url) in urls {
                line(&format!("token url ({mode})"), url);
            }
        }
        None => {}
    }
    if !p.default_scopes.is_empty() {
        line("default scopes", &p.default_scopes.join(" "));
    }
    if let Some(separator) = &p.scope_separator {
        line("scope separator", &format!("{separator:?}"));
    }
    if let Some(proxy) = &p.proxy {
        if let Some(base) = &proxy.base_url {
            line("proxy base url", base);
        }
        for (name, template) in &proxy.headers {
            line("proxy header", &format!("{name}: {template}"));
        }
        for (name, template) in &proxy.query {
            line("proxy query", &format!("{name}={template}"));
        }
        if let Some(retry) = &proxy.retry {
            let mut hints: Vec<String> = Vec::new();
            hints.extend(retry.after.iter().map(|h| format!("wait {h}")));
            hints.extend(retry.at.iter().map(|h| format!("until {h}")));
            hints.extend(retry.remaining.iter().map(|h| format!("remaining {h}")));
            line("rate-limit headers", &hints.join(", "));
        }
        if let Some(Value::Object(paginate)) = &proxy.paginate {
            let kind = paginate.get("type").and_then(Value::as_str).unwrap_or("?");
            line("pagination", kind);
        }
        if let Some(v) = &proxy.verification {
            line("verification", &format!("{} {}", v.method, v.endpoints.join(", ")));
        }
    }
    for (section, fields) in [("connection config", &p.connection_config), ("credentials", &p.credentials)] {
        for (name, field) in fields {
            let mut notes = Vec::new();
            if field.optional {
                notes.push("optional");
            }
            if field.automated {
                notes.push("filled in by the provider");
            }
            if field.secret {
                notes.push("secret");
            }
            let title = field.title.as_deref().unwrap_or_default();
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
            line(section, &format!("{name}: {title}{notes}"));
        }
    }
    out.trim_end().to_string()
}
