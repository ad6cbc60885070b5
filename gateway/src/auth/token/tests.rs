use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::integration::{AppCredentials, Origin};
use crate::secret::Secret;

fn provider(entry: Value) -> Provider {
    let mut p: Provider = serde_json::from_value(entry.clone()).expect("a valid entry");
    p.name = "acme".into();
    p.entry = entry;
    p
}

fn base(extra: Value) -> Value {
    let mut entry = json!({
        "display_name": "Acme", "docs": "https://example.com", "auth_mode": "OAUTH2",
        "token_url": "https://${connectionConfig.subdomain}.example.com/oauth/token",
    });
    entry.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    entry
}

fn integration() -> Integration {
    Integration {
        unique_key: "acme-prod".into(),
        provider: "acme".into(),
        display_name: None,
        credentials: AppCredentials {
            client_id: Some("id 1".into()),
            client_secret: Some(Secret::new("s/2")),
            ..AppCredentials::default()
        },
        integration_config: Map::new(),
        custom: Map::new(),
        forward_webhooks: true,
        allow_base_url_override: false,
        refresh_margin_seconds: None,
        origin: Origin::Api,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn config() -> Map<String, Value> {
    json!({ "subdomain": "acme", "tenant": "a b/c" }).as_object().unwrap().clone()
}

fn form(prepared: &Prepared) -> Vec<(String, String)> {
    let (_, body) = prepared.body.as_ref().expect("a body");
    url::form_urlencoded::parse(body).into_owned().collect()
}

const CODE: Grant<'static> =
    Grant::AuthorizationCode { code: "the-code", redirect_uri: "https://gw/oauth/callback", code_verifier: Some("v") };

#[test]
fn code_exchange_is_a_form_with_the_client_in_the_body() {
    let p = provider(base(json!({
        "token_url": "https://${connectionConfig.subdomain}.example.com/${connectionConfig.tenant}/token",
        "token_params": { "grant_type": "authorization_code", "audience": "${connectionConfig.tenant}" },
    })));
    let prepared = prepare(&p, &integration(), &config(), None, &CODE).unwrap();
    assert_eq!(prepared.url.as_str(), "https://acme.example.com/a%20b%2Fc/token");
    assert!(prepared.authorization.is_none());
    assert_eq!(prepared.body.as_ref().unwrap().0, "application/x-www-form-urlencoded");
    let pairs = form(&prepared);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("authorization_code"));
    assert_eq!(get("code"), Some("the-code"));
    assert_eq!(get("redirect_uri"), Some("https://gw/oauth/callback"));
    assert_eq!(get("audience"), Some("a b/c"), "token_params see the raw config");
    assert_eq!(get("code_verifier"), Some("v"));
    assert_eq!(get("client_id"), Some("id 1"));
    assert_eq!(get("client_secret"), Some("s/2"));
}

#[test]
fn pkce_off_leaves_the_verifier_out() {
    let p = provider(base(json!({ "disable_pkce": true })));
    let pairs = form(&prepare(&p, &integration(), &config(), None, &CODE).unwrap());
    assert!(pairs.iter().all(|(n, _)| n != "code_verifier"));
}

#[test]
fn client_authentication_follows_the_provider() {
    let basic_plain = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("id 1:s/2"));
    // token_request_auth_method: basic sends both, as Nango does.
    let p = provider(base(json!({ "token_request_auth_method": "basic" })));
    let prepared = prepare(&p, &integration(), &config(), None, &CODE).unwrap();
    assert_eq!(prepared.authorization.as_deref(), Some(basic_plain.as_str()));
    assert!(form(&prepared).iter().any(|(n, v)| n == "client_secret" && v == "s/2"));
    // authorization_method: header form-encodes each part and keeps the body clean.
    let p = provider(base(json!({ "authorization_method": "header" })));
    let prepared = prepare(&p, &integration(), &config(), None, &CODE).unwrap();
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("id+1:s%2F2"));
    assert_eq!(prepared.authorization.as_deref(), Some(expected.as_str()));
    assert!(form(&prepared).iter().all(|(n, _)| n != "client_secret" && n != "client_id"));
    // Client credentials with basic: the header only; with custom: username and password.
    let scopes = ["a".to_string(), "b".to_string()];
    let cc = Grant::ClientCredentials { scopes: &scopes };
    let p = provider(base(json!({ "token_request_auth_method": "basic", "scope_separator": "," })));
    let prepared = prepare(&p, &integration(), &config(), None, &cc).unwrap();
    assert_eq!(prepared.authorization.as_deref(), Some(basic_plain.as_str()));
    let pairs = form(&prepared);
    assert!(pairs.iter().all(|(n, _)| n != "client_secret"));
    assert!(pairs.contains(&("scope".into(), "a,b".into())));
    assert!(pairs.contains(&("grant_type".into(), "client_credentials".into())));
    let p = provider(base(json!({ "token_request_auth_method": "custom" })));
    let pairs = form(&prepare(&p, &integration(), &config(), Some(Client { id: "u", secret: "pw" }), &cc).unwrap());
    assert!(pairs.contains(&("username".into(), "u".into())) && pairs.contains(&("password".into(), "pw".into())));
    let p = provider(base(json!({ "token_request_auth_method": "private_key_jwt" })));
    assert!(matches!(prepare(&p, &integration(), &config(), None, &cc), Err(TokenError::Unsupported { .. })));
}

#[test]
fn json_and_query_body_formats() {
    let p = provider(base(json!({ "body_format": "json" })));
    let prepared = prepare(&p, &integration(), &config(), None, &CODE).unwrap();
    let (content_type, body) = prepared.body.unwrap();
    assert_eq!(content_type, "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "the-code");
    assert_eq!(body["client_id"], "id 1");
    let p = provider(base(json!({ "body_format": "query" })));
    let cc = Grant::ClientCredentials { scopes: &[] };
    let prepared = prepare(&p, &integration(), &config(), None, &cc).unwrap();
    assert!(prepared.body.is_none());
    assert!(prepared.url.query().unwrap().contains("grant_type=client_credentials"));
    assert!(matches!(prepare(&p, &integration(), &config(), None, &CODE), Err(TokenError::Unsupported { .. })));
}

#[test]
fn refresh_uses_refresh_params_else_token_params_without_their_grant_type() {
    let refresh = Grant::RefreshToken { refresh_token: "rt" };
    let p = provider(base(json!({ "token_params": { "grant_type": "authorization_code", "x": "1" } })));
    let pairs = form(&prepare(&p, &integration(), &config(), None, &refresh).unwrap());
    assert!(pairs.contains(&("grant_type".into(), "refresh_token".into())));
    assert!(pairs.contains(&("refresh_token".into(), "rt".into())));
    assert!(pairs.contains(&("x".into(), "1".into())));
    let p = provider(base(
        json!({ "token_params": { "x": "1" }, "refresh_params": { "grant_type": "refresh_token", "y": "2" } }),
    ));
    let pairs = form(&prepare(&p, &integration(), &config(), None, &refresh).unwrap());
    assert!(pairs.contains(&("y".into(), "2".into())) && pairs.iter().all(|(n, _)| n != "x"));
    // A connection's own client replaces the integration's.
    let pairs =
        form(&prepare(&p, &integration(), &config(), Some(Client { id: "own", secret: "sec" }), &refresh).unwrap());
    assert!(pairs.contains(&("client_id".into(), "own".into())));
}

#[test]
fn missing_config_and_client_are_named() {
    let p = provider(base(json!({})));
    let e = prepare(&p, &integration(), &Map::new(), None, &CODE).err().unwrap();
    assert_eq!(
        e.to_string(),
        "the token_url of provider `acme` needs connection config `subdomain`, which the connection does not have"
    );
    let mut no_client = integration();
    no_client.credentials = AppCredentials::default();
    assert!(matches!(prepare(&p, &no_client, &config(), None, &CODE), Err(TokenError::NoClient(_))));
    let p = provider(base(json!({ "token_params": { "tenant": "${connectionConfig.region}" } })));
    let e = prepare(&p, &integration(), &config(), None, &CODE).err().unwrap();
    assert!(e.to_string().contains("token_params.tenant"), "{e}");
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn parse_json(p: &Provider, status: u16, body: Value) -> Result<Tokens, TokenError> {
    parse(p, &CODE, status, Some("application/json"), body.to_string().as_bytes(), now())
}

#[test]
fn responses_become_tokens() {
    let p = provider(base(json!({ "token_response_metadata": ["instance_url", "team.id", "n"] })));
    let t = parse_json(
        &p,
        200,
        json!({ "access_token": "at", "refresh_token": "rt", "expires_in": "3600", "token_type": "bearer",
                 "instance_url": "https://x", "team": { "id": "T1" }, "n": 5 }),
    )
    .unwrap();
    assert_eq!(t.access_token, "at");
    assert_eq!(t.refresh_token.as_deref(), Some("rt"));
    assert_eq!(t.expires_at, Some(now() + chrono::Duration::hours(1)));
    assert_eq!(t.token_type.as_deref(), Some("bearer"));
    assert_eq!(t.metadata, json!({ "instance_url": "https://x", "team.id": "T1" }).as_object().unwrap().clone());
    let t = parse_json(&p, 200, json!({ "access_token": "at", "expires_at": 1_900_000_000 })).unwrap();
    assert_eq!(t.expires_at, Some(Utc.timestamp_opt(1_900_000_000, 0).unwrap()));
    assert_eq!(parse_json(&p, 200, json!({ "access_token": "at" })).unwrap().expires_at, None);
    // Form-encoded answers are read too.
    let t =
        parse(&p, &CODE, 200, Some("application/x-www-form-urlencoded"), b"access_token=f&scope=repo", now()).unwrap();
    assert_eq!(t.access_token, "f");
    // Slack-style: the user token under another path.
    let p = provider(base(json!({ "alternate_access_token_response_path": "authed_user" })));
    let t =
        parse_json(&p, 200, json!({ "ok": true, "authed_user": { "access_token": "u", "expires_in": 60 } })).unwrap();
    assert_eq!((t.access_token.as_str(), t.expires_at), ("u", Some(now() + chrono::Duration::seconds(60))));
}

#[test]
fn refresh_metadata_is_read_from_refreshes_only() {
    let p = provider(base(json!({
        "token_response_metadata": ["instance_url"],
        "refresh_token_response_metadata": ["region"],
    })));
    let body = json!({ "access_token": "at", "instance_url": "https://x", "region": "eu" }).to_string();
    let parsed = |grant: &Grant<'_>| parse(&p, grant, 200, None, body.as_bytes(), now()).unwrap().metadata;
    assert_eq!(parsed(&CODE), json!({ "instance_url": "https://x" }).as_object().unwrap().clone());
    let refresh = Grant::RefreshToken { refresh_token: "rt" };
    assert_eq!(parsed(&refresh), json!({ "instance_url": "https://x", "region": "eu" }).as_object().unwrap().clone());
}

#[test]
fn refusals_and_garbage_are_reported_verbatim_and_classified() {
    let p = provider(base(json!({})));
    let e = parse_json(&p, 400, json!({ "error": "invalid_grant", "error_description": "Token has been revoked." }))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the provider refused the token request (HTTP 400): invalid_grant: Token has been revoked."
    );
    assert!(!e.is_transient());
    assert_eq!(e.kind(), "token_refused");
    // GitHub answers 200 with an error.
    let e = parse_json(&p, 200, json!({ "error": "bad_verification_code" })).unwrap_err();
    assert!(matches!(e, TokenError::Provider { ref error, .. } if error == "bad_verification_code"));
    let e = parse(&p, &CODE, 503, Some("text/html"), b"<h1>down</h1>", now()).unwrap_err();
    assert_eq!(e.to_string(), "the token endpoint answered HTTP 503: <h1>down</h1>");
    assert!(e.is_transient());
    let e = parse(&p, &CODE, 200, Some("application/json"), b"{\"access_token\": ", now()).unwrap_err();
    assert!(matches!(e, TokenError::Malformed(_)), "{e}");
    let e = parse_json(&p, 200, json!({ "token_type": "bearer" })).unwrap_err();
    assert_eq!(e.to_string(), "the token endpoint's answer is not usable: the response has no access_token");
    let e = parse_json(&p, 200, json!({ "access_token": "a", "expires_in": "soon" })).unwrap_err();
    assert!(matches!(e, TokenError::Malformed(_)));
}

#[test]
fn merging_keeps_a_refresh_token_the_provider_did_not_resend() {
    let old = Credentials::OAuth2 {
        access_token: "old".into(),
        refresh_token: Some("r1".into()),
        expires_at: None,
        raw: Value::Null,
        config_override: Some(json!({ "client_id": "c" })),
    };
    let p = provider(base(json!({})));
    let kept = parse_json(&p, 200, json!({ "access_token": "new" })).unwrap().merge_into(&old);
    assert!(
        matches!(&kept, Credentials::OAuth2 { access_token, refresh_token: Some(r), config_override: Some(_), .. } if access_token == "new" && r == "r1")
    );
    let rotated =
        parse_json(&p, 200, json!({ "access_token": "new", "refresh_token": "r2" })).unwrap().merge_into(&old);
    assert!(matches!(&rotated, Credentials::OAuth2 { refresh_token: Some(r), .. } if r == "r2"));
    assert!(
        !format!("{:?}", parse_json(&p, 200, json!({ "access_token": "secret-at" })).unwrap()).contains("secret-at")
    );
}
