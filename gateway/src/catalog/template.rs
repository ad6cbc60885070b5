//! Templates in provider entries: `${name}` placeholders, helper calls such as `${base64(…)}`, and
//! `left || right` fallbacks.
//!
//! The rules follow Nango's catalog so that the same entry means the same thing in both: the
//! innermost `${…}` is replaced in a single pass, only string and number values are substituted,
//! helpers are evaluated before placeholders, and `now`/`random` are stable within one [`Scope`].
//! Where Nango leaves a placeholder in place silently, a [`Rendered`] also lists what was missing,
//! so that every caller can report it instead of sending `${…}` upstream.

use std::borrow::Cow;
use std::cell::OnceCell;

use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Where placeholder names are looked up.
pub trait Vars {
    /// The value for `name` (a dotted path such as `connectionConfig.subdomain`), when it is a
    /// string or a number.
    fn lookup(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl Vars for Value {
    fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        let parts: Vec<&str> = name.split('.').collect();
        scalar_text(walk(self, &parts)?)
    }
}

impl Vars for Map<String, Value> {
    fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        let parts: Vec<&str> = name.split('.').collect();
        scalar_text(walk_map(self, &parts)?)
    }
}

/// A string or a number as template text; anything else has no text.
fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Follows a dotted path; at each level a key may itself contain dots (connection config keeps
/// token-response metadata under names such as `installation.apiEndPoint`).
pub(crate) fn walk<'v>(node: &'v Value, parts: &[&str]) -> Option<&'v Value> {
    if parts.is_empty() {
        return Some(node);
    }
    walk_map(node.as_object()?, parts)
}

fn walk_map<'v>(map: &'v Map<String, Value>, parts: &[&str]) -> Option<&'v Value> {
    (1..=parts.len()).find_map(|take| map.get(&parts[..take].join(".")).and_then(|next| walk(next, &parts[take..])))
}

/// Several variable sources, searched in order.
pub struct Layers<'a>(pub Vec<&'a dyn Vars>);

impl Vars for Layers<'_> {
    fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.iter().find_map(|layer| layer.lookup(name))
    }
}

/// The variables of one rendering, with a `now` and a `random` that stay the same for every
/// template rendered in the same scope (a signature and the header that carries its nonce must
/// agree).
pub struct Scope<'a> {
    vars: &'a dyn Vars,
    now: DateTime<Utc>,
    random: OnceCell<String>,
}

impl<'a> Scope<'a> {
    pub fn new(vars: &'a dyn Vars) -> Self {
        Scope { vars, now: Utc::now(), random: OnceCell::new() }
    }

    #[cfg(test)]
    fn at(vars: &'a dyn Vars, now: DateTime<Utc>) -> Self {
        Scope { vars, now, random: OnceCell::new() }
    }

    fn random(&self) -> &str {
        self.random.get_or_init(|| uuid::Uuid::new_v4().to_string())
    }
}

/// The result of rendering one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// Placeholder names that had no value; each is still in `text` as `${name}`.
    pub missing: Vec<String>,
}

impl Rendered {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The text when every placeholder was filled.
    pub fn complete(self) -> Result<String, Vec<String>> {
        if self.missing.is_empty() {
            Ok(self.text)
        } else {
            Err(self.missing)
        }
    }
}

/// Whether `template` has anything to interpolate at all.
pub fn is_template(template: &str) -> bool {
    template.contains("${")
}

/// Renders `template` without `||` handling.
pub fn render(template: &str, scope: &Scope<'_>) -> Rendered {
    let mut missing = Vec::new();
    let text = render_into(template, scope, &mut missing);
    // A helper left unexpanded is scanned again by the placeholder pass; name each gap once.
    let mut seen = std::collections::HashSet::new();
    missing.retain(|name| seen.insert(name.clone()));
    Rendered { text, missing }
}

/// Renders `template`, treating `left || right` as a fallback: the left side when it renders
/// completely, else the right side when that does, else the left side with its gaps reported.
pub fn render_with_fallback(template: &str, scope: &Scope<'_>) -> Rendered {
    let Some((left, right)) = template.split_once("||") else {
        return render(template, scope);
    };
    let right = right.split("||").next().unwrap_or_default();
    let left = render(left.trim(), scope);
    if left.is_complete() && !left.text.is_empty() {
        return left;
    }
    let right = render(right.trim(), scope);
    if right.is_complete() {
        return right;
    }
    if left.text.is_empty() {
        right
    } else {
        left
    }
}

/// The placeholder names a template refers to (for semantic checks of catalog entries).
pub fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find(['}', '{', '$']) {
            Some(end) if after.as_bytes()[end] == b'}' => {
                let name = &after[..end];
                if let Some((helper, args)) = name.split_once('(') {
                    if HELPERS.contains(&helper) {
                        names.extend(placeholders(args));
                    }
                } else {
                    names.push(name.to_string());
                }
                rest = &after[end + 1..];
            }
            Some(end) => rest = &after[end..],
            None => break,
        }
    }
    names
}

const HELPERS: &[&str] = &["base64", "sha256Hex", "sha256Base64", "hmacSha1Hex"];

fn render_into(template: &str, scope: &Scope<'_>, missing: &mut Vec<String>) -> String {
    let expanded = expand_helpers(template, scope, missing);
    substitute(&expanded, scope, missing)
}

/// Evaluates `${helper(argument)}` calls. The argument is itself rendered first; a helper whose
/// argument has gaps stays as written and its gaps are reported.
fn expand_helpers(template: &str, scope: &Scope<'_>, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'outer: while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        for helper in HELPERS {
            let Some(args_and_more) = after.strip_prefix(helper).and_then(|s| s.strip_prefix('(')) else {
                continue;
            };
            let Some(end) = helper_end(args_and_more) else { continue };
            let argument = &args_and_more[..end];
            let mut inner_missing = Vec::new();
            let rendered = render_into(argument, scope, &mut inner_missing);
            out.push_str(&rest[..start]);
            if inner_missing.is_empty() {
                out.push_str(&apply_helper(helper, &rendered));
            } else {
                out.push_str(&rest[start..start + 2 + helper.len() + 1 + end + 2]);
                missing.extend(inner_missing);
            }
            rest = &args_and_more[end + 2..];
            continue 'outer;
        }
        out.push_str(&rest[..start + 2]);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The offset of the `)}` that closes a helper call, skipping nested `${…}` and parentheses.
fn helper_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut parens, mut braces) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                braces += 1;
                i += 1;
            }
            b'}' if braces > 0 => braces -= 1,
            b'(' => parens += 1,
            b')' if parens > 0 => parens -= 1,
            b')' if braces == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn apply_helper(helper: &str, argument: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    match helper {
        "base64" => b64.encode(argument.as_bytes()),
        "sha256Hex" => hex(&Sha256::digest(argument.as_bytes())),
        "sha256Base64" => b64.encode(Sha256::digest(argument.as_bytes())),
        "hmacSha1Hex" => {
            let (message, key) = argument.rsplit_once(',').unwrap_or((argument, ""));
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key.trim().as_bytes()) else {
                unreachable!("HMAC takes keys of any length")
            };
            mac.update(message.trim().as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        _ => unreachable!("only names from HELPERS reach here"),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One pass over the innermost `${…}` placeholders.
fn substitute(template: &str, scope: &Scope<'_>, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find(['{', '}']) {
            Some(end) if after.as_bytes()[end] == b'}' => {
                let name = &after[..end];
                out.push_str(&rest[..start]);
                match resolve(name, scope) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push_str(&rest[start..start + 2 + end + 1]);
                        missing.push(name.to_string());
                    }
                }
                rest = &after[end + 1..];
            }
            // A `{` before the closing brace: this `${` is not innermost; keep it as text.
            Some(end) => {
                out.push_str(&rest[..start + 2 + end]);
                rest = &after[end..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn resolve<'s>(name: &str, scope: &'s Scope<'_>) -> Option<Cow<'s, str>> {
    if name == "random" {
        return Some(Cow::Borrowed(scope.random()));
    }
    if name == "now" {
        return Some(Cow::Owned(scope.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    }
    if let Some(spec) = name.strip_prefix("now") {
        if let Some(text) = format_now(spec, scope.now) {
            return Some(Cow::Owned(text));
        }
    }
    scope.vars.lookup(name)
}

/// `now:FORMAT` or `now+N:unit:FORMAT` / `now-N:unit:FORMAT`, with dayjs format tokens.
fn format_now(spec: &str, now: DateTime<Utc>) -> Option<String> {
    let (time, format) = if let Some(format) = spec.strip_prefix(':') {
        (now, format)
    } else {
        let sign = match spec.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let mut parts = spec[1..].splitn(3, ':');
        let amount: i64 = parts.next()?.parse().ok()?;
        let unit = parts.next()?;
        let format = parts.next().unwrap_or("YYYY-MM-DDTHH:mm:ss[Z]");
        let delta = match unit.trim_end_matches('s') {
            "second" => Duration::seconds(amount),
            "minute" => Duration::minutes(amount),
            "hour" => Duration::hours(amount),
            "day" => Duration::days(amount),
            "week" => Duration::weeks(amount),
            _ => return None,
        };
        (now + delta * sign, format)
    };
    Some(format_dayjs(time, format))
}

fn format_dayjs(t: DateTime<Utc>, format: &str) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let tokens: &[(&str, &dyn Fn() -> String)] = &[
        ("YYYY", &|| format!("{:04}", t.year())),
        ("MMM", &|| MONTHS[t.month0() as usize].to_string()),
        ("MM", &|| format!("{:02}", t.month())),
        ("DD", &|| format!("{:02}", t.day())),
        ("ddd", &|| DAYS[t.weekday().num_days_from_monday() as usize].to_string()),
        ("HH", &|| format!("{:02}", t.hour())),
        ("mm", &|| format!("{:02}", t.minute())),
        ("ss", &|| format!("{:02}", t.second())),
        ("SSS", &|| format!("{:03}", t.timestamp_subsec_millis())),
        ("ZZ", &|| "+0000".to_string()),
        ("Z", &|| "+00:00".to_string()),
        ("X", &|| t.timestamp().to_string()),
        ("x", &|| t.timestamp_millis().to_string()),
    ];
    let mut out = String::new();
    let mut rest = format;
    'scan: while !rest.is_empty() {
        if let Some(literal) = rest.strip_prefix('[') {
            if let Some(end) = literal.find(']') {
                out.push_str(&literal[..end]);
                rest = &literal[end + 1..];
                continue;
            }
        }
        for (token, value) in tokens {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(&value());
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn vars() -> Value {
        json!({
            "connectionConfig": { "subdomain": "acme", "port": 8443, "flag": true },
            "apiKey": "k-123",
            "credentials": { "username": "ann", "password": "p:w" },
        })
    }

    fn run(t: &str) -> Rendered {
        let v = vars();
        let scope = Scope::at(&v, Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap());
        render_with_fallback(t, &scope)
    }

    #[test]
    fn placeholders_are_filled_from_paths_and_reported_when_missing() {
        assert_eq!(
            run("https://${connectionConfig.subdomain}.x.com:${connectionConfig.port}").text,
            "https://acme.x.com:8443"
        );
        let r = run("Bearer ${accessToken}");
        assert_eq!(r.text, "Bearer ${accessToken}");
        assert_eq!(r.missing, vec!["accessToken"]);
        // Booleans and objects are not substituted.
        assert_eq!(run("${connectionConfig.flag}").missing, vec!["connectionConfig.flag"]);
        assert_eq!(run("${connectionConfig}").missing, vec!["connectionConfig"]);
    }

    #[test]
    fn fallback_prefers_a_complete_left_side() {
        assert_eq!(run("https://${connectionConfig.subdomain}.x.com || https://x.com").text, "https://acme.x.com");
        let r = run("https://${connectionConfig.region}.x.com || https://x.com");
        assert_eq!(r.text, "https://x.com");
        assert!(r.is_complete());
        let r = run("${connectionConfig.a} || ${connectionConfig.b}");
        assert_eq!(r.missing, vec!["connectionConfig.a"]);
    }

    #[test]
    fn helpers_run_before_placeholders() {
        assert_eq!(run("Basic ${base64(${credentials.username}:${credentials.password})}").text, "Basic YW5uOnA6dw==");
        assert_eq!(run("${sha256Hex(abc)}").text, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // RFC 2202 test case 2.
        assert_eq!(
            run("${hmacSha1Hex(what do ya want for nothing?, Jefe)}").text,
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        let r = run("Basic ${base64(${credentials.username}:${credentials.token})}");
        assert_eq!(r.missing, vec!["credentials.token"]);
        assert!(r.text.starts_with("Basic ${base64("));
    }

    #[test]
    fn now_and_random_are_stable_within_a_scope() {
        assert_eq!(run("${now}").text, "2025-03-04T05:06:07.000Z");
        assert_eq!(run("${now:YYYYMMDD[T]HHmmss[Z]}").text, "20250304T050607Z");
        assert_eq!(run("${now:X}").text, "1741064767");
        assert_eq!(run("${now+7:days:YYYY-MM-DD}").text, "2025-03-11");
        assert_eq!(run("${now:ddd, DD MMM YYYY}").text, "Tue, 04 Mar 2025");
        let v = vars();
        let scope = Scope::new(&v);
        assert_eq!(render("${random}", &scope).text, render("${random}", &scope).text);
    }

    #[test]
    fn only_innermost_braces_are_placeholders_and_one_pass_only() {
        let v = json!({ "a": "${b}", "b": "no" });
        let scope = Scope::new(&v);
        assert_eq!(render("${a}", &scope).text, "${b}");
        let dotted = json!({ "connectionConfig": { "installation.apiEndPoint": "https://x.example" } });
        assert_eq!(
            render("${connectionConfig.installation.apiEndPoint}", &Scope::new(&dotted)).text,
            "https://x.example"
        );
        assert_eq!(placeholders("x ${a.b} ${base64(${c}:${d})} ${now}"), vec!["a.b", "c", "d", "now"]);
    }
}
