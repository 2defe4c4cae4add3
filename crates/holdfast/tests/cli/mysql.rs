use crate::helpers::*;

const FIXTURE: &str = r#"
CREATE TABLE items (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    data LONGBLOB,
    doc JSON,
    price DECIMAL(12, 4),
    seen DATETIME(6) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO items (name, data, doc, price, seen) VALUES
    ('Grüße 🎉 日本語', UNHEX('00FF10DEADBEEF'), '{"a": [1, 2, null]}', 12.3456, '2024-03-31 01:30:00.123456'),
    (NULL, NULL, NULL, NULL, NULL),
    ('tab	and "quotes" and \\ backslash', REPEAT(UNHEX('00'), 100000), '[]', -1, NULL);
INSERT INTO items (name, data) SELECT CONCAT('row ', seq), RANDOM_BYTES(64) FROM seq_1_to_20000;
CREATE TABLE audit (item_id INT, at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW INSERT INTO audit (item_id) VALUES (NEW.id);
CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
CREATE PROCEDURE count_items(OUT n INT) SELECT COUNT(*) INTO n FROM items;
"#;

#[test]
fn mariadb_round_trip_keeps_blobs_utf8mb4_triggers_and_routines() {
    let env = Env::new();
    env.init();
    let db = MyDb::new();
    db.sql(FIXTURE);
    let want = db.checksums();
    assert!(want["routines"].contains("double_it") && want["triggers"].contains("items_audit"));
    let id = env.backup(&db.url(), &[]);

    let snaps = env.snapshots();
    let tags = snaps[0]["tags"].to_string();
    assert!(
        tags.contains("source=mysql") && tags.contains("server=10.11"),
        "{tags}"
    );

    let target = MyDb::not_created();
    env.ok(&["restore", &id[..8], &target.url(), "--create"]);
    assert_eq!(target.checksums(), want);
    // The trigger works in the restored database.
    target.sql("INSERT INTO items (name) VALUES ('after restore')");
    assert_eq!(
        target
            .sql("SELECT COUNT(*) FROM audit WHERE item_id > 20003")
            .trim(),
        "1"
    );

    // restic returns the same bytes as holdfast.
    let via_restic = env
        .restic(&["dump", &id, &format!("/{0}/{0}.sql", db.name)])
        .stdout;
    let via_holdfast = env.cmd(&["dump", &id]).output().unwrap().stdout;
    assert!(!via_restic.is_empty() && via_restic == via_holdfast);
}

#[test]
fn mariadb_wrong_password_and_missing_database_are_named() {
    let env = Env::new();
    env.init();
    // root has no password here, so any user with a password is refused.
    let err = env.fails(
        &[
            "backup",
            "mysql://nobody:hunter2secret@127.0.0.1:3306/mysql",
        ],
        21,
    );
    assert!(err.contains("mysql://nobody@127.0.0.1:3306/mysql"), "{err}");
    assert!(!err.contains("hunter2secret"), "password leaked: {err}");
    // A password from the environment (kept out of the command line) is used.
    let out = env
        .cmd(&["backup", "mysql://root@127.0.0.1:3306/mysql"])
        .env("HOLDFAST_SOURCE_PASSWORD", "wrong-env-pw")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(21),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = env.fails(&["backup", "mysql://root@127.0.0.1:3306/no_such_db_hf"], 22);
    assert!(
        err.contains("no_such_db_hf") && err.contains("does not exist"),
        "{err}"
    );
    assert!(env.snapshots().is_empty());
}
