//! What every part of a running gateway shares: the current configuration, the store, the API
//! secret key and the public URL.

use std::sync::Arc;

use crate::config::{Config, ConfigHandle};
use crate::integration::Integration;
use crate::secret::Secret;
use crate::store::Store;
use crate::webhooks::Webhooks;

pub struct App {
    pub config: Arc<ConfigHandle>,
    pub store: Arc<Store>,
    pub secret_key: Secret,
    /// The public URL, without a trailing slash.
    pub server_url: String,
    /// Webhooks to the customer: `app.webhooks.enqueue(event)`.
    pub webhooks: Arc<Webhooks>,
}

impl App {
    /// The integration under `key`: declared in the config snapshot, else created through the API.
    pub fn integration(&self, config: &Config, key: &str) -> Option<Arc<Integration>> {
        config.integrations.get(key).cloned().or_else(|| self.store.integrations.get(key))
    }

    /// Every integration: those of the config first, then those of the API.
    pub fn integrations(&self, config: &Config) -> Vec<Arc<Integration>> {
        let api = self.store.integrations.all();
        config
            .integrations
            .values()
            .cloned()
            .chain(api.values().filter(|i| !config.integrations.contains_key(&i.unique_key)).cloned())
            .collect()
    }

    /// Whether `presented` is the API secret key, compared in constant time.
    pub fn is_secret_key(&self, presented: &str) -> bool {
        let expected = self.secret_key.expose().as_bytes();
        let presented = presented.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        expected.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}
