//! The client for the gateway's own calls to other servers: token endpoints, credential checks,
//! webhooks and functions' requests.

use std::time::Duration;

/// A client that never follows redirects: a redirected request would carry a code, a client
/// secret or a signed payload to wherever the redirect points. `timeout` bounds a whole call;
/// `None` leaves it to the caller (functions run under their own wall-time limit).
pub fn client(purpose: &str, timeout: Option<Duration>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("Latchkey/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().unwrap_or_else(|e| {
        tracing::error!("cannot build the HTTP client for {purpose}: {e}; using the defaults");
        reqwest::Client::new()
    })
}
