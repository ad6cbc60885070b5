use chrono::TimeZone;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde_json::json;

use super::*;

const RSA_KEY: &str = include_str!("test-rsa.pem");
const RSA_PUBLIC: &str = include_str!("test-rsa.pub.pem");
const EC_KEY: &str = include_str!("test-ec.pem");
const EC_PUBLIC: &str = include_str!("test-ec.pub.pem");
const GHOST_ID: &str = "0123456789abcdef01234567";
const GHOST_SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn provider(signature: Value, token: Value) -> Provider {
    let entry = json!({
        "display_name": "Acme", "docs": "https://example.com", "auth_mode": "JWT",
        "signature": signature, "token": token,
    });
    let mut p: Provider = serde_json::from_value(entry.clone()).expect("a valid entry");
    p.name = "acme".into();
    p.entry = entry;
    p
}

fn ghost() -> Provider {
    provider(
        json!({"protocol": "HMAC"}),
        json!({
            "signing_key": "${credentials.privateKey.secret}",
            "expires_in_ms": 300000,
            "header": {"alg": "HS256", "kid": "${credentials.privateKey.id}"},
            "payload": {"aud": "/admin/", "sub": "${connectionConfig.user}"},
        }),
    )
}

fn ghost_fields() -> Map<String, Value> {
    split_pairs(&ghost(), json!({ "privateKey": format!("{GHOST_ID}:{GHOST_SECRET}") }).as_object().unwrap().clone())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
}

/// The claims of `token`, checked with `key` (expiry not checked: the tests sign in 2030).
fn claims(token: &str, key: &DecodingKey, alg: Algorithm) -> Value {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    decode::<Value>(token, key, &validation).expect("a valid signature").claims
}

#[test]
fn sound_entries_have_no_problem() {
    assert!(entry_problem(&ghost()).is_none());
}

#[test]
fn ghost_keys_are_split_and_sign_hs256_with_the_hex_decoded_secret() {
    let fields = ghost_fields();
    assert_eq!(fields["privateKey"], json!({"id": GHOST_ID, "secret": GHOST_SECRET}));
    let signed = sign(&ghost(), &fields, &Map::new(), now()).unwrap();
    assert_eq!(signed.expires_at, Some(now() + Duration::minutes(5)));
    let header = decode_header(&signed.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(GHOST_ID));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let secret = hex_decode(GHOST_SECRET).unwrap();
    let body = claims(&signed.token, &DecodingKey::from_secret(&secret), Algorithm::HS256);
    // `sub` reads connection config this connection does not have: left out.
    assert_eq!(body, json!({"aud": "/admin/", "iat": now().timestamp(), "exp": now().timestamp() + 300}));
    // The secret as text is not the key.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    assert!(decode::<Value>(&signed.token, &DecodingKey::from_secret(GHOST_SECRET.as_bytes()), &validation).is_err());
}

#[test]
fn hmac_secrets_decode_as_base64_or_raw_text() {
    for (encoding, given, key) in
        [("base64", "c2VjcmV0LWJ5dGVz", b"secret-bytes".to_vec()), ("utf8", "plain secret", b"plain secret".to_vec())]
    {
        let p = provider(
            json!({"protocol": "HMAC", "hmac_secret_encoding": encoding}),
            json!({"signing_key": "${credentials.secret}", "header": {"alg": "HS512"}, "payload": {"iss": "me"}}),
        );
        let fields = json!({"secret": given}).as_object().unwrap().clone();
        let signed = sign(&p, &fields, &Map::new(), now()).unwrap();
        assert_eq!(signed.expires_at, None, "no expires_in_ms, no expiry");
        let body = claims(&signed.token, &DecodingKey::from_secret(&key), Algorithm::HS512);
        assert_eq!(body, json!({"iss": "me", "iat": now().timestamp()}));
    }
}

#[test]
fn rsa_keys_sign_rs256_even_with_their_line_breaks_lost() {
    let p = provider(
        json!({"protocol": "RSA"}),
        json!({
            "signing_key": "${credentials.privateKey}",
            "expires_in_ms": 60000,
            "header": {"alg": "RS256", "kid": "${credentials.keyId}"},
            "payload": {"iss": "${credentials.account}", "scope": ["${connectionConfig.scopes}", "${connectionConfig.none}"]},
        }),
    );
    let flattened = RSA_KEY.replace('\n', " ");
    for key in [RSA_KEY.to_string(), flattened, RSA_KEY.replace('\n', "\\n")] {
        let fields = json!({"privateKey": key, "account": "acct-1"}).as_object().unwrap().clone();
        let config = json!({"scopes": "read, write"}).as_object().unwrap().clone();
        let signed = sign(&p, &fields, &config, now()).unwrap();
        assert_eq!(decode_header(&signed.token).unwrap().kid, None, "an unresolved header key is left out");
        let public = DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
        let body = claims(&signed.token, &public, Algorithm::RS256);
        assert_eq!(body["iss"], "acct-1");
        assert_eq!(body["scope"], json!(["read", "write"]), "arrays drop gaps and split on commas");
        assert_eq!(body["exp"], now().timestamp() + 60);
    }
}

#[test]
fn ec_keys_sign_es256() {
    let p = provider(
        json!({"protocol": "EC"}),
        json!({"signing_key": "${credentials.privateKey}", "header": {"alg": "ES256", "typ": "JWT"}, "payload": {"aud": "appstoreconnect-v1"}}),
    );
    let fields = json!({"privateKey": EC_KEY}).as_object().unwrap().clone();
    let signed = sign(&p, &fields, &Map::new(), now()).unwrap();
    let body = claims(&signed.token, &DecodingKey::from_ec_pem(EC_PUBLIC.as_bytes()).unwrap(), Algorithm::ES256);
    assert_eq!(body["aud"], "appstoreconnect-v1");
}

#[test]
fn wrong_keys_name_the_field_and_never_show_the_key() {
    let mut fields = ghost_fields();
    fields["privateKey"]["secret"] = json!("not-hex-zz-secret");
    let e = sign(&ghost(), &fields, &Map::new(), now()).unwrap_err();
    assert_eq!(e.field(), Some("privateKey.secret"));
    assert_eq!(e.to_string(), "`privateKey.secret` is not a hex string");

    fields.remove("privateKey");
    let e = sign(&ghost(), &fields, &Map::new(), now()).unwrap_err();
    assert_eq!(e.to_string(), "`privateKey.secret` is required to sign the token");

    let rsa = provider(
        json!({"protocol": "RSA"}),
        json!({"signing_key": "${credentials.privateKey}", "header": {"alg": "RS256"}}),
    );
    let garbage = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----";
    for key in [garbage, EC_KEY] {
        let fields = json!({"privateKey": key}).as_object().unwrap().clone();
        let e = sign(&rsa, &fields, &Map::new(), now()).unwrap_err();
        assert_eq!(e.to_string(), "`privateKey` is not an RSA private key in PEM");
        assert!(!e.to_string().contains("c2VjcmV0"));
    }
}

#[test]
fn algorithms_must_belong_to_the_protocol() {
    for (protocol, alg) in [("HMAC", "RS256"), ("RSA", "HS256"), ("EC", "ES512"), ("HMAC", "none")] {
        let p =
            provider(json!({"protocol": protocol}), json!({"signing_key": "${credentials.k}", "header": {"alg": alg}}));
        let fields = json!({"k": "00"}).as_object().unwrap().clone();
        let e = sign(&p, &fields, &Map::new(), now()).unwrap_err();
        assert!(matches!(e, JwtError::UnsupportedAlg { .. }), "{protocol} {alg}: {e}");
        assert_eq!(e.field(), None);
        assert!(entry_problem(&p).is_some(), "`latchkey check` reports it too");
    }
}

#[test]
fn pem_is_rebuilt_from_base64_of_pem() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(RSA_KEY);
    assert_eq!(pem(&b64).unwrap(), RSA_KEY.as_bytes());
    assert_eq!(pem("not a key"), None);
}
