//! Encryption at rest: AES-256-GCM with a random 96-bit nonce per value. Each ciphertext is
//! stored with the id of the key that sealed it, so that a new key can take over while values
//! sealed under older keys (listed as previous keys) are still read, and re-sealed when written.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the encryption key is not valid base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("the encryption key decodes to {0} bytes; it must be 32 bytes")]
    WrongLength(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("a value was sealed with key {0}, which is not configured; add it to the previous encryption keys")]
    UnknownKey(String),
    #[error("a value sealed with key {0} fails its integrity check: it was altered or the key is wrong")]
    Corrupt(String),
}

/// A sealed value as stored: ciphertext (with its tag), nonce, key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: String,
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Key {
        let digest = Sha256::new().chain_update(b"latchkey key id\0").chain_update(bytes).finalize();
        let id = crate::catalog::template::hex(&digest[..8]);
        Key { id, cipher: Aes256Gcm::new_from_slice(bytes).unwrap_or_else(|_| unreachable!("length checked")) }
    }
}

pub struct KeyRing {
    current: Key,
    previous: Vec<Key>,
}

impl KeyRing {
    /// The current key and any previous ones, each base64 of 32 bytes.
    pub fn from_base64(current: &str, previous: &[String]) -> Result<KeyRing, KeyError> {
        Ok(KeyRing {
            current: Key::from_bytes(&decode_key(current)?),
            previous: previous.iter().map(|k| decode_key(k).map(|b| Key::from_bytes(&b))).collect::<Result<_, _>>()?,
        })
    }

    /// A new random key, as base64.
    pub fn generate_key() -> String {
        base64::engine::general_purpose::STANDARD.encode(Aes256Gcm::generate_key(OsRng))
    }

    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    pub fn knows(&self, key_id: &str) -> bool {
        self.key(key_id).is_some()
    }

    fn key(&self, key_id: &str) -> Option<&Key> {
        std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == key_id)
    }

    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, plaintext)
            .unwrap_or_else(|_| unreachable!("AES-GCM encryption fails only for inputs over 64 GiB"));
        Sealed { ciphertext, nonce: nonce.to_vec(), key_id: self.current.id.clone() }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let key = self.key(&sealed.key_id).ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 {
            return Err(CryptoError::Corrupt(sealed.key_id.clone()));
        }
        key.cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), sealed.ciphertext.as_slice())
            .map_err(|_| CryptoError::Corrupt(sealed.key_id.clone()))
    }
}

fn decode_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(KeyError::NotBase64)?;
    if bytes.len() != 32 {
        return Err(KeyError::WrongLength(bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_rotates() {
        let old = KeyRing::generate_key();
        let new = KeyRing::generate_key();
        let ring = KeyRing::from_base64(&old, &[]).unwrap();
        let sealed = ring.seal(b"token");
        assert_ne!(sealed.ciphertext, b"token");
        assert_eq!(ring.open(&sealed).unwrap(), b"token");

        let rotated = KeyRing::from_base64(&new, &[old]).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), b"token");
        assert_ne!(rotated.seal(b"x").key_id, sealed.key_id);

        let stranger = KeyRing::from_base64(&new, &[]).unwrap();
        assert!(matches!(stranger.open(&sealed), Err(CryptoError::UnknownKey(_))));

        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(matches!(ring.open(&tampered), Err(CryptoError::Corrupt(_))));
        assert!(matches!(KeyRing::from_base64("c2hvcnQ=", &[]), Err(KeyError::WrongLength(5))));
    }
}
