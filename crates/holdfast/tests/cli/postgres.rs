use crate::helpers::*;

/// Tables with the awkward types and objects a real database has.
const AWKWARD: &str = r#"
CREATE TABLE "Odd Table" (
    id serial PRIMARY KEY,
    b bytea, j json, jb jsonb, arr int[], t text, n numeric, ts timestamptz, u text
);
INSERT INTO "Odd Table" (b, j, jb, arr, t, n, ts, u) VALUES
    ('\x00ff10'::bytea, '{"a": [1, 2]}', '{"k": {"nested": true}}', '{1,2,NULL}', repeat('long text ', 100000),
     12345.6789, '2024-03-31 01:30:00+00', 'Grüße, 日本語, emoji 🎉, tab	and "quotes"'),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('', '[]', '[]', '{}', '', 0, 'infinity', E'line\nbreak \\ backslash');
CREATE SCHEMA "we/ird";
CREATE TABLE "we/ird"."ta""ble" (x int REFERENCES "Odd Table"(id));
INSERT INTO "we/ird"."ta""ble" VALUES (1), (2);
CREATE SEQUENCE free_seq;
SELECT setval('free_seq', 42);
CREATE VIEW odd_view AS SELECT id, t FROM "Odd Table";
CREATE INDEX odd_jb ON "Odd Table" USING gin (jb);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := NEW.n + 1; RETURN NEW; END $$;
CREATE TRIGGER odd_bump BEFORE INSERT ON "Odd Table" FOR EACH ROW EXECUTE FUNCTION bump();
SELECT lo_from_bytea(0, '\xdeadbeef'::bytea);
CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (v text); INSERT INTO "a.b".c VALUES ('schema a.b, table c');
CREATE SCHEMA a; CREATE TABLE a."b.c" (v text); INSERT INTO a."b.c" VALUES ('schema a, table b.c');
"#;

#[test]
fn per_table_backup_restores_every_table_and_each_backup_keeps_its_own_state() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    db.psql(AWKWARD);
    let first_state = db.checksums();
    let first = env.backup(&db.url(), &["--tag", "env=test"]);

    // A night's changes: the second backup must hold them, the first must not.
    db.psql(
        "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 10 = 0; \
         INSERT INTO \"Odd Table\" (t) VALUES ('new row'); SELECT nextval('free_seq');",
    );
    let second_state = db.checksums();
    assert_ne!(first_state, second_state);
    let second = env.backup(&db.url(), &[]);
    assert_ne!(first, second);

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    let tags: Vec<&str> = snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for want in [
        "holdfast",
        "source=postgres",
        "layout=per-table",
        "env=test",
        "server=15.",
    ] {
        assert!(
            tags.iter().any(|t| t.starts_with(want)),
            "{want} missing in {tags:?}"
        );
    }
    assert!(
        tags.iter().any(|t| t.starts_with("tool=pg_dump")),
        "{tags:?}"
    );

    for (id, want) in [(&first, &first_state), (&second, &second_state)] {
        let target = PgDb::not_created();
        env.ok(&[
            "restore",
            &id[..10],
            &target.url(),
            "--create",
            "--jobs",
            "3",
        ]);
        assert_eq!(&target.checksums(), want, "restore of {id}");
        // Indexes, constraints and triggers come back too (post-data).
        let objs = target.psql(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'odd_jb'; \
             SELECT count(*) FROM pg_trigger WHERE tgname = 'odd_bump'; \
             SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
        );
        assert_eq!(objs.split_whitespace().collect::<Vec<_>>(), ["1", "1", "1"]);
    }
}

#[test]
fn per_table_snapshot_restores_with_only_restic_and_psql() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    db.psql(AWKWARD);
    let want = db.checksums();
    let id = env.backup(&db.url(), &[]);

    // restic lists the snapshot and its files: one per table, between pre- and post-data.
    let listed = String::from_utf8(env.restic(&["snapshots", "--json"]).stdout).unwrap();
    assert!(listed.contains(&id), "{listed}");
    let ls = String::from_utf8(env.restic(&["ls", &id]).stdout).unwrap();
    let mut files: Vec<&str> = ls.lines().filter(|l| l.ends_with(".sql")).collect();
    files.sort();
    assert!(
        files.first().unwrap().ends_with("/0-pre-data.sql"),
        "{files:?}"
    );
    assert!(
        files.last().unwrap().ends_with("/9-post-data.sql"),
        "{files:?}"
    );
    for t in [
        "public.pgbench_accounts.sql",
        "public.Odd%20Table.sql",
        "we%2Fird.ta%22ble.sql",
    ] {
        assert!(files.iter().any(|f| f.ends_with(t)), "{t} not in {files:?}");
    }

    // The user's recovery path without Holdfast: restic dump each file in order into psql.
    let target = PgDb::new();
    let mut sql = Vec::new();
    for f in &files {
        sql.extend(env.restic(&["dump", &id, f]).stdout);
    }
    pipe(&mut PgDb::psql_cmd(&target.name), &sql);
    assert_eq!(target.checksums(), want);

    // `holdfast dump` gives the same plain SQL.
    let dumped = env.cmd(&["dump", &id]).output().unwrap();
    assert!(dumped.status.success());
    assert_eq!(dumped.stdout, sql);
}

#[test]
fn single_stream_snapshot_is_byte_identical_to_pg_dump_and_to_restic_dump() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    db.psql(AWKWARD);
    let id = env.backup(&db.url(), &["--single-stream"]);
    let direct = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "--format=plain"])
        .arg(&db.name)
        .output()
        .unwrap();
    assert!(direct.status.success());
    let via_restic = env
        .restic(&["dump", &id, &format!("/{0}/{0}.sql", db.name)])
        .stdout;
    let via_holdfast = env.cmd(&["dump", "latest"]).output().unwrap().stdout;
    assert!(
        via_restic == via_holdfast,
        "restic dump differs from holdfast dump"
    );
    // pg_dump 15.19+ writes a random key into `\restrict` lines; everything else is identical.
    let unrestricted = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(str::to_string)
            .collect()
    };
    assert!(
        unrestricted(&via_restic) == unrestricted(&direct.stdout),
        "restic dump differs from pg_dump output"
    );

    let target = PgDb::not_created();
    env.ok(&["restore", "latest", &target.url(), "--create"]);
    assert_eq!(target.checksums(), db.checksums());
}

#[test]
fn all_databases_with_globals_restore_into_a_fresh_server() {
    // Own clusters: the shared server's databases come and go as other tests run.
    let source = TempCluster::start();
    source.psql(
        "postgres",
        "CREATE ROLE app_owner LOGIN; CREATE DATABASE shop OWNER app_owner; CREATE DATABASE \"we ird\";",
    );
    source.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders VALUES (1, 'one'), (2, 'two'); \
         ALTER TABLE orders OWNER TO app_owner;",
    );
    source.psql(
        "we ird",
        "CREATE TABLE t AS SELECT generate_series(1, 500) AS x;",
    );

    let env = Env::new();
    env.init();
    let id = env.backup(&source.url("postgres"), &["--all-databases"]);
    let ls = String::from_utf8(env.restic(&["ls", &id]).stdout).unwrap();
    assert!(ls.contains("/all-databases/0-globals.sql"), "{ls}");
    assert!(
        ls.contains("/all-databases/shop/1-data/public.orders.sql"),
        "{ls}"
    );
    assert!(
        ls.contains("/all-databases/we%20ird/1-data/public.t.sql"),
        "{ls}"
    );

    let target = TempCluster::start();
    env.ok(&["restore", &id, &target.url("postgres")]);
    let q = |db: &str, sql: &str| target.psql(db, sql).trim().to_string();
    assert_eq!(
        q(
            "shop",
            "SELECT string_agg(id || note, ',' ORDER BY id) FROM orders"
        ),
        "1one,2two"
    );
    assert_eq!(
        q(
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"
        ),
        "app_owner"
    );
    assert_eq!(q("we ird", "SELECT count(*) FROM t"), "500");
    assert_eq!(
        q(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'app_owner'"
        ),
        "1"
    );
}

#[test]
fn restore_into_a_missing_database_without_create_says_so() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.psql("CREATE TABLE t (x int);");
    env.backup(&db.url(), &[]);
    let target = PgDb::not_created();
    let err = env.fails(&["restore", "latest", &target.url()], 22);
    assert!(
        err.contains(&target.name) && err.contains("--create"),
        "{err}"
    );
}

#[test]
fn unchanged_tables_add_almost_nothing_to_the_next_backup() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    db.psql(
        "CREATE TABLE noise AS SELECT md5(random()::text) AS h FROM generate_series(1, 100000);",
    );
    env.backup(&db.url(), &[]);
    db.psql(
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now());",
    );
    let snaps_before = env.snapshots();
    env.backup(&db.url(), &[]);
    let snaps = env.snapshots();
    let first = snaps_before[0]["added_bytes"].as_u64().unwrap();
    let added = snaps[1]["added_bytes"].as_u64().unwrap();
    assert!(first > 1_000_000, "first backup added {first} bytes");
    assert!(
        added * 50 < first,
        "second backup added {added} of {first} bytes"
    );
}

#[test]
fn restore_tool_failure_shows_the_tools_own_error() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    // A table owned by a role that is gone by restore time: psql stops at the dump's
    // `ALTER TABLE ... OWNER TO` near its top while the rows are still coming, so the pipe
    // breaks; the message must be psql's, not the broken pipe's.
    let role = crate::helpers::unique("hf_gone");
    db.psql(&format!(
        "CREATE ROLE {role}; CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 100000) g; \
         ALTER TABLE t OWNER TO {role};"
    ));
    env.backup(&db.url(), &["--single-stream"]);
    db.psql(&format!(
        "ALTER TABLE t OWNER TO postgres; DROP ROLE {role};"
    ));
    let target = PgDb::not_created();
    let err = env.fails(&["restore", "latest", &target.url(), "--create"], 25);
    assert!(
        err.contains(&role) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("storage error"), "{err}");
    // Restoring over the database itself is refused before anything is loaded.
    let err = env.fails(&["restore", "latest", &db.url()], 2);
    assert!(err.contains("--force"), "{err}");
}
