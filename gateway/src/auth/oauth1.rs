//! OAuth 1.0a (RFC 5849): request signing (the `Authorization: OAuth …` header, HMAC-SHA1 over
//! the method, the URL and the parameters) and the three-legged flow: a request token, the
//! user's consent at the provider, the access token. Proxied requests of OAUTH1 connections are
//! signed the same way, one signature per request.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use sha1::Sha1;

use crate::catalog::Provider;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, RESERVED).to_string()
}

/// The secrets and identities that sign a request.
pub struct Signer<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a str,
    pub token: Option<&'a str>,
    pub token_secret: &'a str,
    /// For RSA-SHA1: the consumer's private key (PEM, PKCS#8 or PKCS#1); the consumer secret
    /// when absent, as node-oauth takes it.
    pub private_key: Option<&'a str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("provider signature method `{0}` is not supported; Latchkey signs with HMAC-SHA1, RSA-SHA1 and PLAINTEXT")]
    Method(String),
    #[error("RSA-SHA1 needs the integration's private_key as an RSA private key in PEM")]
    RsaKey,
    #[error("`{0}` is not an absolute URL")]
    Url(String),
    #[error("the signing key is not usable")]
    Key,
}

/// One request to sign: `params` are the query and form-body parameters plus any extra
/// `oauth_*` parameters (`oauth_callback`, `oauth_verifier`).
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub params: &'a [(String, String)],
    pub signature_method: &'a str,
    pub nonce: &'a str,
    pub timestamp: i64,
}

/// The `Authorization` header value.
pub fn authorization(signer: &Signer<'_>, request: &Request<'_>) -> Result<String, SignError> {
    let mut oauth: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), signer.consumer_key.into()),
        ("oauth_nonce".into(), request.nonce.into()),
        ("oauth_signature_method".into(), request.signature_method.into()),
        ("oauth_timestamp".into(), request.timestamp.to_string()),
        ("oauth_version".into(), "1.0".into()),
    ];
    if let Some(token) = signer.token {
        oauth.push(("oauth_token".into(), token.into()));
    }
    let key = format!("{}&{}", encode(signer.consumer_secret), encode(signer.token_secret));
    let base = || {
        let mut all: Vec<(String, String)> = oauth.clone();
        all.extend(request.params.iter().cloned());
        base_string(request.method, request.url, &all)
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = match request.signature_method {
        "HMAC-SHA1" => {
            let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).map_err(|_| SignError::Key)?;
            mac.update(base()?.as_bytes());
            b64.encode(mac.finalize().into_bytes())
        }
        "RSA-SHA1" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            use rsa::signature::{SignatureEncoding, Signer as _};
            let pem = signer.private_key.unwrap_or(signer.consumer_secret).trim();
            let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
                .map_err(|_| SignError::RsaKey)?;
            let signing = rsa::pkcs1v15::SigningKey::<Sha1>::new(private);
            b64.encode(signing.sign(base()?.as_bytes()).to_bytes())
        }
        "PLAINTEXT" => key,
        other => return Err(SignError::Method(other.to_string())),
    };
    oauth.push(("oauth_signature".into(), signature));
    // Extra protocol parameters (callback, verifier) travel in the header too.
    oauth.extend(request.params.iter().filter(|(k, _)| k.starts_with("oauth_")).cloned());
    oauth.sort();
    let fields: Vec<String> = oauth.iter().map(|(k, v)| format!("{}=\"{}\"", encode(k), encode(v))).collect();
    Ok(format!("OAuth {}", fields.join(", ")))
}

/// `METHOD&url&params`, each part encoded (RFC 5849 §3.4.1).
fn base_string(method: &str, url: &str, params: &[(String, String)]) -> Result<String, SignError> {
    let parsed = url::Url::parse(url).map_err(|_| SignError::Url(url.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| SignError::Url(url.to_string()))?.to_ascii_lowercase();
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let base_uri = format!("{}://{authority}{}", parsed.scheme(), parsed.path());
    let mut pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (encode(&k), encode(&v)))
        .chain(params.iter().map(|(k, v)| (encode(k), encode(v))))
        .collect();
    pairs.sort();
    let normalized: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!("{}&{}&{}", encode(&method.to_ascii_uppercase()), encode(&base_uri), encode(&normalized.join("&"))))
}

/// The entry's signature method (HMAC-SHA1 when it names none).
pub fn signature_method(provider: &Provider) -> &str {
    provider.entry.get("signature_method").and_then(Value::as_str).unwrap_or("HMAC-SHA1")
}

/// A fresh nonce and the current time, for one signature.
pub fn nonce_and_time() -> (String, i64) {
    (crate::catalog::template::hex(&rand::random::<[u8; 16]>()), chrono::Utc::now().timestamp())
}

/// What the provider's token endpoints answer: form-encoded `oauth_token` and
/// `oauth_token_secret`, and whatever else it adds.
pub struct TokenPair {
    pub token: String,
    pub secret: String,
    pub raw: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("provider `{0}` has no {1}")]
    Missing(String, &'static str),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("cannot reach {0}: {1}")]
    Network(String, String),
    #[error("the provider refused the {what} request (HTTP {status}){}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused { what: &'static str, status: u16, detail: Option<String> },
    #[error("the provider's {0} answer has no oauth_token and oauth_token_secret")]
    Malformed(&'static str),
}

/// POSTs a signed token request; `extra` are the protocol parameters of this step.
async fn token_request(
    http: &reqwest::Client,
    provider: &Provider,
    signer: &Signer<'_>,
    url: &str,
    what: &'static str,
    extra: Vec<(String, String)>,
    body: &Map<String, Value>,
) -> Result<TokenPair, FlowError> {
    let body: Vec<(String, String)> = body
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    let mut params = extra;
    params.extend(body.iter().cloned());
    let (nonce, timestamp) = nonce_and_time();
    let header = authorization(
        signer,
        &Request {
            method: "POST",
            url,
            params: &params,
            signature_method: signature_method(provider),
            nonce: &nonce,
            timestamp,
        },
    )?;
    let form = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(body.iter()).finish();
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let response = http
        .post(url)
        .header(reqwest::header::AUTHORIZATION, header)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| FlowError::Network(host.clone(), e.without_url().to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| FlowError::Network(host, e.without_url().to_string()))?;
    if !status.is_success() {
        let detail = text.trim();
        let detail = (!detail.is_empty()).then(|| detail.chars().take(300).collect());
        return Err(FlowError::Refused { what, status: status.as_u16(), detail });
    }
    let raw: Map<String, Value> = url::form_urlencoded::parse(text.trim().as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    match (raw.get("oauth_token").and_then(Value::as_str), raw.get("oauth_token_secret").and_then(Value::as_str)) {
        (Some(token), Some(secret)) if !token.is_empty() => {
            Ok(TokenPair { token: token.to_string(), secret: secret.to_string(), raw: raw.clone() })
        }
        _ => Err(FlowError::Malformed(what)),
    }
}

/// Step one: a request token, and the URL to send the user to.
pub async fn start(
    http: &reqwest::Client,
    provider: &Provider,
    consumer: (&str, &str, Option<&str>),
    callback: &str,
    scopes: &[String],
) -> Result<(String, TokenPair), FlowError> {
    let entry = |key: &'static str| {
        provider.entry.get(key).and_then(Value::as_str).ok_or_else(|| FlowError::Missing(provider.name.clone(), key))
    };
    let request_url = entry("request_url")?;
    let authorization_url = entry("authorization_url")?;
    let signer = Signer {
        consumer_key: consumer.0,
        consumer_secret: consumer.1,
        token: None,
        token_secret: "",
        private_key: consumer.2,
    };
    let request_params = provider.entry.get("request_params").and_then(Value::as_object).cloned().unwrap_or_default();
    let pair = token_request(
        http,
        provider,
        &signer,
        request_url,
        "request token",
        vec![("oauth_callback".into(), callback.into())],
        &request_params,
    )
    .await?;
    let mut url = url::Url::parse(authorization_url).map_err(|_| SignError::Url(authorization_url.to_string()))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("oauth_token", &pair.token);
        if !scopes.is_empty() {
            query.append_pair("scope", &scopes.join(provider.scope_separator.as_deref().unwrap_or(" ")));
        }
        for (k, v) in &provider.authorization_params {
            query.append_pair(k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()).as_str());
        }
    }
    Ok((url.to_string(), pair))
}

/// Step three: the access token, for the request token the user approved.
pub async fn finish(
    http: &reqwest::Client,
    provider: &Provider,
    consumer: (&str, &str, Option<&str>),
    request_token: (&str, &str),
    verifier: &str,
) -> Result<TokenPair, FlowError> {
    let token_url = match &provider.token_url {
        Some(crate::catalog::TokenUrl::One(url)) => url.as_str(),
        _ => return Err(FlowError::Missing(provider.name.clone(), "token_url")),
    };
    let signer = Signer {
        consumer_key: consumer.0,
        consumer_secret: consumer.1,
        token: Some(request_token.0),
        token_secret: request_token.1,
        private_key: consumer.2,
    };
    token_request(
        http,
        provider,
        &signer,
        token_url,
        "access token",
        vec![("oauth_verifier".into(), verifier.into())],
        &provider.token_params,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Twitter's OAuth 1.0a documentation ("Creating a signature").
    #[test]
    fn signs_the_documented_example() {
        let signer = Signer {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog",
            consumer_secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            token: Some("370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            token_secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
            private_key: None,
        };
        let params = vec![("status".to_string(), "Hello Ladies + Gentlemen, a signed OAuth request!".to_string())];
        let header = authorization(
            &signer,
            &Request {
                method: "POST",
                url: "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
                params: &params,
                signature_method: "HMAC-SHA1",
                nonce: "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
                timestamp: 1318622958,
            },
        )
        .unwrap();
        assert!(header.contains(r#"oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D""#), "{header}");
        assert!(header.starts_with("OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\""));
    }

    #[test]
    fn refuses_unknown_methods() {
        let signer =
            Signer { consumer_key: "k", consumer_secret: "s", token: None, token_secret: "", private_key: None };
        let request = Request {
            method: "GET",
            url: "https://x.test/",
            params: &[],
            signature_method: "MD5",
            nonce: "n",
            timestamp: 1,
        };
        assert_eq!(authorization(&signer, &request), Err(SignError::Method("MD5".into())));
        let rsa = Request { signature_method: "RSA-SHA1", ..request };
        assert_eq!(authorization(&signer, &rsa), Err(SignError::RsaKey));
    }

    #[test]
    fn rsa_sha1_signatures_verify_with_the_public_key() {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::signature::Verifier;
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let signer = Signer {
            consumer_key: "k",
            consumer_secret: "",
            token: Some("t"),
            token_secret: "",
            private_key: Some(&pem),
        };
        let request = Request {
            method: "GET",
            url: "https://api.example.com/items?b=2&a=1",
            params: &[],
            signature_method: "RSA-SHA1",
            nonce: "n",
            timestamp: 1,
        };
        let header = authorization(&signer, &request).unwrap();
        let signature = header.split("oauth_signature=\"").nth(1).unwrap().split('"').next().unwrap();
        let signature = percent_encoding::percent_decode_str(signature).decode_utf8().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(signature.as_bytes()).unwrap();
        let oauth = vec![
            ("oauth_consumer_key".to_string(), "k".to_string()),
            ("oauth_nonce".to_string(), "n".to_string()),
            ("oauth_signature_method".to_string(), "RSA-SHA1".to_string()),
            ("oauth_timestamp".to_string(), "1".to_string()),
            ("oauth_version".to_string(), "1.0".to_string()),
            ("oauth_token".to_string(), "t".to_string()),
        ];
        let base = base_string("GET", request.url, &oauth).unwrap();
        let verifying = rsa::pkcs1v15::VerifyingKey::<Sha1>::new(private.to_public_key());
        let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).unwrap();
        assert!(verifying.verify(base.as_bytes(), &signature).is_ok());
    }
}
