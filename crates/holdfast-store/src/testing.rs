//! For tests of this crate and its users (feature `testing`): a metadata database of the
//! test's own on each real store, a SQLite file in a temporary directory or a fresh database
//! on the machine's PostgreSQL (127.0.0.1:5432, user postgres), removed afterwards.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::Store;

/// Runs SQL with the `psql` client as `postgres` on 127.0.0.1.
pub fn psql(database: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-qAtc",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A test's own metadata database.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            url: format!("sqlite://{}", dir.path().join("holdfast.db").display()),
            pg_name: None,
            dir: Some(dir),
        }
    }

    pub fn postgres() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hf_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Self {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            pg_name: Some(name),
            dir: None,
        }
    }

    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.expect("the test store opens")
    }

    /// Runs SQL on the database behind the store's back (with `psql` or `sqlite3`), as an
    /// operator or another version of Holdfast would.
    pub fn raw_sql(&self, sql: &str) -> String {
        match (&self.pg_name, &self.dir) {
            (Some(db), _) => psql(db, sql),
            (None, Some(dir)) => {
                let out = std::process::Command::new("sqlite3")
                    .arg(dir.path().join("holdfast.db"))
                    .arg(sql)
                    .output()
                    .expect("sqlite3 runs");
                assert!(
                    out.status.success(),
                    "{sql}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            (None, None) => unreachable!("a test database is SQLite or PostgreSQL"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(n) = &self.pg_name {
            psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"),
            );
        }
    }
}

/// Runs each `async fn name(db: TestDb)` of the calling module once on SQLite and once on
/// PostgreSQL, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name($crate::testing::TestDb::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name($crate::testing::TestDb::postgres()).await })*
        }
    };
}
