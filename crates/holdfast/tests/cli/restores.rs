//! Restoring over a database that exists (the UI's Overwrite, the API's `force`, the CLI's
//! `--force`) on the real PostgreSQL and MariaDB: the restore goes into a temporary database
//! that replaces the target only when the restore succeeded; a failed one leaves it as it was.

use serde_json::json;

use crate::helpers::{Env, MyDb, PgDb, unique};
use crate::server::{Meta, Server};

fn finished(st: &str) -> bool {
    st != "queued" && st != "running"
}

/// Databases whose name starts with `prefix` (left-overs of a restore).
fn pg_databases_like(prefix: &str) -> Vec<String> {
    let out = PgDb::psql_cmd("postgres")
        .arg("-c")
        .arg(format!(
            "SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%' ORDER BY 1"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn overwriting_a_postgres_database_swaps_it_in_only_after_the_restore_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let db = PgDb::new();
    db.pgbench(1);
    // A table owned by a role that will be gone when the second restore point is restored.
    let role = unique("hf_gone");
    db.psql(&format!(
        "CREATE ROLE {role}; CREATE TABLE notes (id int PRIMARY KEY, body text); \
         INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g;"
    ));
    let at_backup = db.checksums();
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "shop", "kind": "postgres", "url": db.url()})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "p", "source": "shop", "endpoint": "local", "schedule": "@daily"})),
    );
    let backup = |s: &Server| -> String {
        let id = s.ok("POST", "/api/v1/plans/p/run", None)["id"]
            .as_i64()
            .unwrap();
        let j = s.wait_job(id, finished);
        assert_eq!(j["state"], "succeeded", "{j}");
        j["snapshot_id"].as_str().unwrap().to_string()
    };
    let good = backup(&s);
    db.psql("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 10 = 0; DELETE FROM notes WHERE id > 100;");
    let changed = db.checksums();
    assert_ne!(changed, at_backup);

    // Naming no database is refused: that would be the production database.
    let (code, body) = s.call(
        "POST",
        "/api/v1/restores",
        Some(&json!({"plan": "p", "restore_point": good})),
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "database", "{body}");
    let reason = body["fields"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("force") && reason.contains("`database`"),
        "{reason}"
    );

    // Overwrite: the restored database replaces the changed one, table for table.
    let restore = |s: &Server, point: &str| {
        let r = s.ok(
            "POST",
            "/api/v1/restores",
            Some(&json!({"plan": "p", "restore_point": point, "force": true})),
        );
        s.wait_job(r["id"].as_i64().unwrap(), finished)
    };
    let r = restore(&s, &good);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(db.checksums(), at_backup);
    assert!(pg_databases_like(&format!("{}__", db.name)).is_empty());

    // A restore point that cannot be restored (its table's owner is gone) fails, and the
    // database it was to replace is untouched, with no temporary database left behind.
    db.psql(&format!("ALTER TABLE notes OWNER TO {role}"));
    let bad = backup(&s);
    db.psql(&format!(
        "ALTER TABLE notes OWNER TO postgres; DROP ROLE {role}; INSERT INTO notes VALUES (1000, 'after');"
    ));
    let before_failed = db.checksums();
    let r = restore(&s, &bad);
    assert_eq!(r["state"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains(&role), "{r}");
    assert_eq!(db.checksums(), before_failed);
    assert!(pg_databases_like(&format!("{}__", db.name)).is_empty());
}

#[test]
fn overwriting_a_mariadb_database_swaps_its_tables_and_refuses_what_cannot_move() {
    let env = Env::new();
    env.init();
    let db = MyDb::new();
    db.sql(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50)); \
         INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three'); \
         CREATE TABLE tags (id INT PRIMARY KEY, tag VARCHAR(20)); INSERT INTO tags VALUES (1, 'a');",
    );
    let at_backup = db.checksums();
    let id = env.backup(&db.url(), &[]);
    db.sql("DELETE FROM items WHERE id = 2; CREATE TABLE extra (x INT); INSERT INTO tags VALUES (2, 'b');");
    let changed = db.checksums();

    // Without --force a database that holds tables is refused, and left as it is.
    let err = env.fails(&["restore", &id[..8], &db.url()], 2);
    assert!(
        err.contains("--force") && err.contains("already holds tables"),
        "{err}"
    );
    assert_eq!(db.checksums(), changed);

    env.ok(&["restore", &id[..8], &db.url(), "--force"]);
    assert_eq!(db.checksums(), at_backup);
    let leftovers = db.sql(&format!(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '{}\\_\\_%'",
        db.name
    ));
    assert!(leftovers.trim().is_empty(), "{leftovers}");

    // A trigger cannot move between databases: the overwrite is refused, nothing changes.
    db.sql("CREATE TRIGGER items_touch BEFORE INSERT ON items FOR EACH ROW SET NEW.name = UPPER(NEW.name);");
    let with_trigger = db.checksums();
    let err = env.fails(&["restore", &id[..8], &db.url(), "--force"], 2);
    assert!(
        err.contains("triggers") && err.contains("new database"),
        "{err}"
    );
    assert_eq!(db.checksums(), with_trigger);
}
