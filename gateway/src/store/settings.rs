//! Latchkey's own settings, sealed like credentials.

use super::{KeyRing, Sealed, StoreError};
use crate::store::Db;
use crate::with_pool;

/// A stored setting: the sealed value, its nonce and key id.
type SealedRow = (Vec<u8>, Option<Vec<u8>>, Option<String>);

/// The stored value of `name`, opened.
pub async fn get(db: &Db, keys: &KeyRing, name: &str) -> Result<Option<String>, StoreError> {
    let row: Option<SealedRow> = with_pool!(db, pool => {
        sqlx::query_as("SELECT value, nonce, key_id FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?
    });
    let Some((ciphertext, Some(nonce), Some(key_id))) = row else { return Ok(None) };
    let plain = keys.open(&Sealed { ciphertext, nonce, key_id })?;
    Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
}

/// Stores `value` under `name` unless a value is there already; returns the value that is
/// stored afterwards, so that nodes starting at once agree on one.
pub async fn get_or_insert(db: &Db, keys: &KeyRing, name: &str, value: &str) -> Result<String, StoreError> {
    let sealed = keys.seal(value.as_bytes());
    with_pool!(db, pool => {
        sqlx::query("INSERT INTO settings (name, value, nonce, key_id) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .bind(&sealed.key_id)
            .execute(pool)
            .await?;
    });
    Ok(get(db, keys, name).await?.unwrap_or_else(|| value.to_string()))
}
