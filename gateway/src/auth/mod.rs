//! Auth: the requests that obtain and renew credentials. [`token`] is the OAuth 2 token
//! endpoint call every grant goes through (authorization code, refresh token, client
//! credentials); [`refresh`] keeps credentials fresh, one refresh per connection across nodes.

pub mod refresh;
pub mod token;
