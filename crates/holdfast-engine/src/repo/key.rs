//! Repository key files as restic makes them: the master key sealed with a key derived from
//! the password by scrypt with parameters inside restic's own bounds (its key files are
//! calibrated to at most 60 MiB and about half a second), instead of rustic_core's
//! N = 2^17, r = 8, whose 128 MiB every open of the repository then pays.

use rustic_core::Id;
use rustic_core::repofile::{KeyFile, MasterKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::writer::pack::Crypto;

/// scrypt's cost as log2(N): 2^15 blocks of 128 * R bytes, 32 MiB.
pub const LOG_N: u8 = 15;
pub const R: u32 = 8;
/// Sequential passes: the work of N = 2^17 at a quarter of its memory.
pub const P: u32 = 4;

/// A new key file for `key`, unlocked by `password`.
pub fn generate(key: &MasterKey, password: &str) -> Result<KeyFile> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::writer(what, e.to_string());
    let mut salt = vec![0u8; 64];
    getrandom::fill(&mut salt).map_err(|e| failed("drawing the key's salt", &e))?;
    let params =
        scrypt::Params::new(LOG_N, R, P).map_err(|e| failed("choosing scrypt's parameters", &e))?;
    let mut derived = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut derived)
        .map_err(|e| failed("deriving the key from the password", &e))?;
    // The derived bytes are a master key's layout: AES key, then Poly1305's k and r.
    let mut wrapping = MasterKey::new();
    wrapping.encrypt.copy_from_slice(&derived[..32]);
    wrapping.mac.k.copy_from_slice(&derived[32..48]);
    wrapping.mac.r.copy_from_slice(&derived[48..]);
    derived.fill(0);
    let plain = serde_json::to_vec(key).map_err(|e| failed("encoding the master key", &e))?;
    let data = Crypto::new(&wrapping).seal(&plain)?;
    Ok(KeyFile {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty()),
        username: nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name),
        created: Some(rustic_core::jiff::Zoned::now()),
        kdf: "scrypt".into(),
        n: 1 << LOG_N,
        r: R,
        p: P,
        data,
        salt,
    })
}

/// The bytes of `file` and its name under `keys/`: the SHA-256 of the bytes, as restic
/// names key files.
pub fn encode(file: &KeyFile) -> Result<(Id, Vec<u8>)> {
    let bytes = serde_json::to_vec(file)
        .map_err(|e| Error::writer("encoding the key file", e.to_string()))?;
    Ok((Id::new(Sha256::digest(&bytes).into()), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_unlocks_with_its_password_only() {
        let file = generate(&MasterKey::new(), "correct horse").unwrap();
        assert_eq!(
            (file.n, file.r, file.p, file.kdf.as_str()),
            (32768, 8, 4, "scrypt")
        );
        assert!(file.key_from_password(&"correct horse").is_ok());
        assert!(file.key_from_password(&"correct horse ").is_err());
    }
}
