//! Host name resolution for upstream peers. Pingora resolves names itself only by blocking the
//! worker thread (and panics when a name does not resolve), so names are resolved here, on
//! Tokio's blocking pool, and remembered for a short while.

use std::net::SocketAddr;
use std::time::Duration;

use moka::future::Cache;

pub struct Resolver {
    cache: Cache<(String, u16), SocketAddr>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver { cache: Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(30)).build() }
    }
}

impl Resolver {
    /// The first address of `host:port`.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Some(addr) = self.cache.get(&key).await {
            return Ok(addr);
        }
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address")))?;
        self.cache.insert(key, addr).await;
        Ok(addr)
    }
}
