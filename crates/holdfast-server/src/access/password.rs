//! Passwords, hashed with argon2id (OWASP's parameters: 19 MiB, 2 passes), and the sign-in
//! check with its brute-force brake.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password an account may have.
pub const MIN_LEN: usize = 12;

/// Failed sign-ins in a row after which an account is locked for [`LOCK_MS`].
pub const LOCK_AFTER: i64 = 5;
pub const LOCK_MS: i64 = 15 * 60 * 1000;

fn argon() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters"),
    )
}

/// The PHC string of `password` (salted).
pub fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(&crate::secrets::random_bytes::<16>())
        .expect("16 bytes make a valid salt");
    argon()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Whether `password` matches `phc`. A stored hash that does not read matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| argon().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// At most this many password checks run at once (each takes 19 MiB and most of a core):
/// a burst of sign-ins waits its turn instead of starving the server's other work.
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// [`verify`] on a blocking thread, a few at a time.
pub async fn verify_async(password: &str, phc: Option<&str>) -> bool {
    let _permit = CHECKS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let (pw, phc) = (password.to_string(), phc.map(str::to_string));
    tokio::task::spawn_blocking(move || match phc {
        Some(h) => verify(&pw, &h),
        None => {
            verify_nothing(&pw);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// Spends the same work as [`verify`] for an account that does not exist (or has no
/// password), so that the answer's timing does not tell which names exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let h = DUMMY.get_or_init(|| hash("holdfast-no-such-account"));
    let _ = verify(password, h);
}

/// Why `password` cannot be an account's password, if it cannot.
pub fn weak(password: &str) -> Option<String> {
    (password.chars().count() < MIN_LEN).then(|| {
        format!("at least {MIN_LEN} characters (a passphrase of a few words is easy to type)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_password_only() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterx", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(h, hash("correct horse battery"), "salted");
    }
}
