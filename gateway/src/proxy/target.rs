//! The upstream URL of a proxied request, and the guard that keeps it on the provider's host.
//!
//! The URL is the provider's base URL joined with the caller's endpoint. The endpoint may not
//! change the authority or climb above the base path, however it is spelt: `//host`, a `@` in
//! the first segment, a backslash, `..` segments, or any of those percent-encoded once or twice.

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query as they go on the request line.
    pub path_and_query: String,
}

impl Target {
    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the base URL `{0}` is not an absolute http(s) URL")]
    BadBase(String),
    #[error(
        "the endpoint `{0}` tries to leave the provider's host ({1}); send a path relative to the provider's base URL"
    )]
    Escapes(String, &'static str),
    #[error("the endpoint contains characters that cannot appear in a URL path")]
    BadEndpoint,
}

/// Joins `base` with `endpoint` (the request path after `/proxy`, still percent-encoded) and the
/// caller's `query`, then appends `extra_query` (already rendered provider parameters).
pub fn build(
    base: &str,
    endpoint: &str,
    query: Option<&str>,
    extra_query: &[(String, String)],
) -> Result<Target, TargetError> {
    let base_url = Url::parse(base.trim()).map_err(|_| TargetError::BadBase(base.to_string()))?;
    if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
        return Err(TargetError::BadBase(base.to_string()));
    }
    let base_text = base.trim().trim_end_matches('/');
    let mut rest = endpoint.strip_prefix('/').unwrap_or(endpoint);
    // An SDK may pass the full URL as the endpoint; keep only what follows the base.
    if let Some(after) = rest.strip_prefix(base_text) {
        if after.is_empty() || after.starts_with(['/', '?', '#']) {
            rest = after.strip_prefix('/').unwrap_or(after);
        }
    }
    check_endpoint(rest)?;

    let mut url = Url::parse(&format!("{base_text}/{rest}")).map_err(|_| TargetError::BadEndpoint)?;
    if url.scheme() != base_url.scheme()
        || url.host() != base_url.host()
        || url.port_or_known_default() != base_url.port_or_known_default()
    {
        return Err(TargetError::Escapes(endpoint.to_string(), "the host changed"));
    }
    let base_path = base_url.path().trim_end_matches('/');
    if !(url.path() == base_path || url.path().starts_with(&format!("{base_path}/"))) {
        return Err(TargetError::Escapes(endpoint.to_string(), "it climbs above the base path"));
    }
    url.set_fragment(None);

    let mut query_text = String::new();
    if let Some(base_query) = base_url.query().filter(|q| !q.is_empty()) {
        query_text.push_str(base_query);
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if !query_text.is_empty() {
            query_text.push('&');
        }
        query_text.push_str(q);
    }
    if !extra_query.is_empty() {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in extra_query {
            serializer.append_pair(k, v);
        }
        if !query_text.is_empty() {
            query_text.push('&');
        }
        query_text.push_str(&serializer.finish());
    }
    let mut path_and_query = url.path().to_string();
    if !query_text.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&query_text);
    }
    if path_and_query.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(TargetError::BadEndpoint);
    }
    let tls = url.scheme() == "https";
    Ok(Target {
        tls,
        host: url.host_str().unwrap_or_default().to_string(),
        port: url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 }),
        path_and_query,
    })
}

/// Refuses endpoints that could change the authority or climb out of the base path, in their
/// written form and once and twice percent-decoded.
fn check_endpoint(rest: &str) -> Result<(), TargetError> {
    let mut variant = rest.to_string();
    for _ in 0..3 {
        if variant.bytes().any(|b| b.is_ascii_control()) {
            return Err(TargetError::BadEndpoint);
        }
        if variant.contains('\\') {
            return Err(TargetError::Escapes(rest.to_string(), "a backslash"));
        }
        if variant.starts_with('/') {
            return Err(TargetError::Escapes(rest.to_string(), "it starts with //"));
        }
        let first_segment = variant.split(['/', '?', '#']).next().unwrap_or_default();
        if first_segment.contains('@') {
            return Err(TargetError::Escapes(rest.to_string(), "a @ before the first /"));
        }
        let path = variant.split(['?', '#']).next().unwrap_or_default();
        let mut depth: i64 = 0;
        for segment in path.split('/') {
            match segment {
                ".." => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(TargetError::Escapes(rest.to_string(), "a .. above the base path"));
                    }
                }
                "." | "" => {}
                _ => depth += 1,
            }
        }
        let decoded = percent_encoding::percent_decode_str(&variant).decode_utf8_lossy().into_owned();
        if decoded == variant {
            break;
        }
        variant = decoded;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(base: &str, endpoint: &str, query: Option<&str>) -> Target {
        build(base, endpoint, query, &[]).unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    #[test]
    fn joins_base_path_endpoint_and_query() {
        let t = ok("https://api.example.com/v2/", "/users/42", Some("a=1&b=2"));
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "api.example.com", 443));
        assert_eq!(t.path_and_query, "/v2/users/42?a=1&b=2");
        assert_eq!(t.authority(), "api.example.com");
        let t = ok("http://127.0.0.1:8080", "/x", None);
        assert_eq!(t.authority(), "127.0.0.1:8080");
        let extra = [("api_key".to_string(), "k y".to_string())];
        assert_eq!(build("https://a.com", "/x", Some("q=1"), &extra).unwrap().path_and_query, "/x?q=1&api_key=k+y");
        assert_eq!(ok("https://a.com/v1", "/users/@me", None).path_and_query, "/v1/users/@me");
        assert_eq!(ok("https://a.com/v1", "/https://a.com/v1/me", None).path_and_query, "/v1/me");
        assert_eq!(ok("https://a.com", "/groups/a%2Fb", None).path_and_query, "/groups/a%2Fb");
        assert_eq!(ok("https://a.com/v1", "/a/../b", None).path_and_query, "/v1/b");
    }

    #[test]
    fn refuses_every_way_out_of_the_host() {
        for endpoint in [
            "//evil.com/x",
            "/%2F%2Fevil.com",
            "/@evil.com/x",
            "/%40evil.com",
            "/user:pw@evil.com",
            "/\\evil.com",
            "/%5Cevil.com",
            "/../admin",
            "/a/../../admin",
            "/%2e%2e/admin",
            "/..%2Fadmin",
            "/%252e%252e/admin",
            "/a%0d%0aHost:evil",
        ] {
            assert!(build("https://api.example.com/v1", endpoint, None, &[]).is_err(), "{endpoint} was let through");
        }
    }

    #[test]
    fn refuses_bad_bases() {
        assert!(matches!(build("ftp://x.com", "/a", None, &[]), Err(TargetError::BadBase(_))));
        assert!(matches!(build("not a url", "/a", None, &[]), Err(TargetError::BadBase(_))));
    }
}
