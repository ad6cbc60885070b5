//! Auth: the requests that obtain and renew credentials. [`token`] is the OAuth 2 token
//! endpoint call every grant goes through (authorization code, refresh token, client
//! credentials).

pub mod token;
