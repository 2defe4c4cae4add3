//! Secrets at rest and API tokens.
//!
//! Database passwords, storage keys and repository passwords are sealed with XChaCha20-Poly1305
//! under the server key, a 32-byte key kept outside the metadata database (a file in the data
//! directory, mode 0600, or one the operator provides: every replica needs the same). The
//! resource's kind and name are the associated data, so a sealed value cannot be moved to
//! another resource. API tokens are random and stored only as their SHA-256.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const PREFIX: &str = "v1:";

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot decrypt the stored secrets of {0}: the server key differs from the one they were saved with \
     (every replica needs the same --server-key-file); set them again to replace them"
)]
pub struct OpenError(pub String);

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let nonce = random_bytes::<24>();
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption of a short message cannot fail");
        format!("{PREFIX}{}{}", hex::encode(nonce), hex::encode(ct))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let err = || OpenError(context.to_string());
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|r| r.len() > 24)
            .ok_or_else(err)?;
        self.cipher
            .decrypt(
                XNonce::from_slice(&raw[..24]),
                Payload {
                    msg: &raw[24..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| err())
    }
}

/// Reads the server key from `path`, creating it (mode 0600) when missing.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let bytes = hex::decode(s.trim()).ok().filter(|b| b.len() == 32);
            let bytes = bytes.ok_or_else(|| {
                std::io::Error::other(format!(
                    "server key file {} must hold 64 hex digits (32 bytes)",
                    path.display()
                ))
            })?;
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>();
            write_private(path, &format!("{}\n", hex::encode(key)))?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// Writes a file only its owner can read, failing if it exists.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// A new API token: `hf_` and 64 hex digits.
pub fn new_token() -> String {
    format!("hf_{}", hex::encode(random_bytes::<32>()))
}

/// A new repository password for the default endpoint.
pub fn new_password() -> String {
    hex::encode(random_bytes::<24>())
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal("source/shop", b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(s.open("source/shop", &sealed).unwrap(), b"hunter2");
        assert!(s.open("source/other", &sealed).is_err());
        assert!(Sealer::new(&[8; 32]).open("source/shop", &sealed).is_err());
        assert_ne!(sealed, s.seal("source/shop", b"hunter2"), "fresh nonce");
    }
}
