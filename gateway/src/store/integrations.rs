//! Integrations created through the API. They are few and read on every proxied request, so all
//! of them are kept in memory and reloaded after each write (and, on PostgreSQL, after another
//! node's write).

use std::sync::Arc;

use arc_swap::ArcSwap;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{announce, BeginWrite, Change, Db, KeyRing, Sealed, StoreError};
use crate::integration::{AppCredentials, Integration, Origin};
use crate::secret::Secret;
use crate::time::{from_millis, now_millis};
use crate::with_pool;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("an integration with unique key `{0}` already exists")]
    Duplicate(String),
    #[error("integration `{0}` has connections; an integration with connections cannot be renamed")]
    RenameWithConnections(String),
    #[error("integration `{0}` does not exist")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Store(StoreError::Database(e))
    }
}

pub struct Integrations {
    db: Db,
    keys: Arc<KeyRing>,
    cache: ArcSwap<IndexMap<String, Arc<Integration>>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    unique_key: String,
    provider: String,
    display_name: Option<String>,
    credentials: Option<Vec<u8>>,
    credentials_nonce: Option<Vec<u8>>,
    credentials_key_id: Option<String>,
    integration_config: String,
    custom: String,
    forward_webhooks: bool,
    allow_base_url_override: bool,
    created_at: i64,
    updated_at: i64,
}

/// The sealed form of [`AppCredentials`].
#[derive(Serialize, Deserialize, Default)]
struct StoredCredentials {
    client_id: Option<String>,
    client_secret: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    webhook_secret: Option<String>,
    app_id: Option<String>,
    app_link: Option<String>,
    private_key: Option<String>,
}

impl From<&AppCredentials> for StoredCredentials {
    fn from(c: &AppCredentials) -> Self {
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
        StoredCredentials {
            client_id: c.client_id.clone(),
            client_secret: expose(&c.client_secret),
            scopes: c.scopes.clone(),
            webhook_secret: expose(&c.webhook_secret),
            app_id: c.app_id.clone(),
            app_link: c.app_link.clone(),
            private_key: expose(&c.private_key),
        }
    }
}

impl From<StoredCredentials> for AppCredentials {
    fn from(c: StoredCredentials) -> Self {
        AppCredentials {
            client_id: c.client_id,
            client_secret: c.client_secret.map(Secret::new),
            scopes: c.scopes,
            webhook_secret: c.webhook_secret.map(Secret::new),
            app_id: c.app_id,
            app_link: c.app_link,
            private_key: c.private_key.map(Secret::new),
        }
    }
}

const COLUMNS: &str = "unique_key, provider, display_name, credentials, credentials_nonce, credentials_key_id,
    integration_config, custom, forward_webhooks, allow_base_url_override, created_at, updated_at";

impl Integrations {
    pub(super) async fn load(db: Db, keys: Arc<KeyRing>) -> Result<Integrations, StoreError> {
        let integrations = Integrations { db, keys, cache: ArcSwap::from_pointee(IndexMap::new()) };
        integrations.reload().await?;
        Ok(integrations)
    }

    pub(super) async fn reload(&self) -> Result<(), StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM integrations ORDER BY id"));
        let rows: Vec<Row> = with_pool!(&self.db, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        let mut map = IndexMap::with_capacity(rows.len());
        for row in rows {
            let integration = self.decode(row)?;
            map.insert(integration.unique_key.clone(), Arc::new(integration));
        }
        self.cache.store(Arc::new(map));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Arc<Integration>> {
        self.cache.load().get(key).cloned()
    }

    pub fn all(&self) -> Arc<IndexMap<String, Arc<Integration>>> {
        self.cache.load_full()
    }

    pub async fn create(&self, integration: &Integration) -> Result<Arc<Integration>, WriteError> {
        if self.get(&integration.unique_key).is_some() {
            return Err(WriteError::Duplicate(integration.unique_key.clone()));
        }
        let sealed = self.seal(&integration.credentials)?;
        let inserted = with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO integrations (unique_key, provider, display_name, credentials, credentials_nonce,
                    credentials_key_id, integration_config, custom, forward_webhooks, allow_base_url_override,
                    created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
                 ON CONFLICT (unique_key) DO NOTHING",
            )
            .bind(&integration.unique_key)
            .bind(&integration.provider)
            .bind(&integration.display_name)
            .bind(sealed.as_ref().map(|s| &s.ciphertext))
            .bind(sealed.as_ref().map(|s| &s.nonce))
            .bind(sealed.as_ref().map(|s| &s.key_id))
            .bind(Value::Object(integration.integration_config.clone()).to_string())
            .bind(Value::Object(integration.custom.clone()).to_string())
            .bind(integration.forward_webhooks)
            .bind(integration.allow_base_url_override)
            .bind(now_millis())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(WriteError::Duplicate(integration.unique_key.clone()));
        }
        self.changed().await?;
        self.get(&integration.unique_key).ok_or_else(|| WriteError::NotFound(integration.unique_key.clone()))
    }

    /// Replaces integration `key` with `integration`, which may carry a new unique key.
    pub async fn update(&self, key: &str, integration: &Integration) -> Result<Arc<Integration>, WriteError> {
        let renamed = integration.unique_key != key;
        if renamed && self.get(&integration.unique_key).is_some() {
            return Err(WriteError::Duplicate(integration.unique_key.clone()));
        }
        let sealed = self.seal(&integration.credentials)?;
        let updated = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if renamed {
                let connections: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM connections WHERE provider_config_key = $1")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                if connections > 0 {
                    return Err(WriteError::RenameWithConnections(key.to_string()));
                }
            }
            let updated = sqlx::query(
                "UPDATE integrations SET unique_key = $2, display_name = $3, credentials = $4, credentials_nonce = $5,
                    credentials_key_id = $6, integration_config = $7, custom = $8, forward_webhooks = $9,
                    allow_base_url_override = $10, updated_at = $11
                 WHERE unique_key = $1",
            )
            .bind(key)
            .bind(&integration.unique_key)
            .bind(&integration.display_name)
            .bind(sealed.as_ref().map(|s| &s.ciphertext))
            .bind(sealed.as_ref().map(|s| &s.nonce))
            .bind(sealed.as_ref().map(|s| &s.key_id))
            .bind(Value::Object(integration.integration_config.clone()).to_string())
            .bind(Value::Object(integration.custom.clone()).to_string())
            .bind(integration.forward_webhooks)
            .bind(integration.allow_base_url_override)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            updated
        });
        if updated == 0 {
            return Err(WriteError::NotFound(key.to_string()));
        }
        self.changed().await?;
        self.get(&integration.unique_key).ok_or_else(|| WriteError::NotFound(integration.unique_key.clone()))
    }

    /// Deletes the integration and its connections; `false` when there was none.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let deleted = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM connections WHERE provider_config_key = $1").bind(key).execute(&mut *tx).await?;
            let deleted = sqlx::query("DELETE FROM integrations WHERE unique_key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            deleted
        });
        self.changed().await?;
        Ok(deleted > 0)
    }

    async fn changed(&self) -> Result<(), StoreError> {
        self.reload().await?;
        announce(&self.db, &Change::Integrations).await;
        Ok(())
    }

    fn seal(&self, credentials: &AppCredentials) -> Result<Option<Sealed>, StoreError> {
        if credentials.is_empty() {
            return Ok(None);
        }
        let json = serde_json::to_vec(&StoredCredentials::from(credentials))?;
        Ok(Some(self.keys.seal(&json)))
    }

    fn decode(&self, row: Row) -> Result<Integration, StoreError> {
        let credentials = match (row.credentials, row.credentials_nonce, row.credentials_key_id) {
            (Some(ciphertext), Some(nonce), Some(key_id)) => {
                let plain = self.keys.open(&Sealed { ciphertext, nonce, key_id })?;
                serde_json::from_slice::<StoredCredentials>(&plain)?.into()
            }
            _ => AppCredentials::default(),
        };
        Ok(Integration {
            unique_key: row.unique_key,
            provider: row.provider,
            display_name: row.display_name,
            credentials,
            integration_config: serde_json::from_str::<Map<String, Value>>(&row.integration_config)?,
            custom: serde_json::from_str::<Map<String, Value>>(&row.custom)?,
            forward_webhooks: row.forward_webhooks,
            allow_base_url_override: row.allow_base_url_override,
            refresh_margin_seconds: None,
            origin: Origin::Api,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
        })
    }
}
