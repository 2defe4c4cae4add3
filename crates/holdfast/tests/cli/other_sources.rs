use std::process::{Command, Stdio};

use crate::helpers::*;

#[test]
fn sqlite_backup_is_consistent_while_a_writer_is_active() {
    let env = Env::new();
    env.init();
    let db = env.path("app.db");
    let dbs = db.display().to_string();
    sh(&format!(
        "sqlite3 {dbs} \"PRAGMA journal_mode=WAL; CREATE TABLE pairs (txn INTEGER, side TEXT); \
         CREATE TABLE static (k TEXT PRIMARY KEY, v BLOB); \
         INSERT INTO static VALUES ('a', x'00ff'), ('b', 'Grüße');\""
    ));
    // A writer adding rows in two-row transactions for as long as the backup runs.
    let script = (0..3000)
        .map(|i| format!("BEGIN; INSERT INTO pairs VALUES ({i}, 'a'); INSERT INTO pairs VALUES ({i}, 'b'); COMMIT;\n"))
        .collect::<String>();
    let mut writer = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(b"PRAGMA busy_timeout=5000;\n");
        let _ = stdin.write_all(script.as_bytes());
    });
    env.backup(&format!("sqlite://{dbs}"), &[]);
    feeder.join().unwrap();
    assert!(writer.wait().unwrap().success());

    let restored = env.path("restored.db");
    env.ok(&[
        "restore",
        "latest",
        &format!("sqlite://{}", restored.display()),
    ]);
    let q = |sql: &str| sh(&format!("sqlite3 {} \"{sql}\"", restored.display()));
    assert_eq!(q("PRAGMA integrity_check").trim(), "ok");
    // Consistent: every transaction is there whole or not at all.
    assert_eq!(
        q("SELECT count(*) FROM (SELECT txn FROM pairs GROUP BY txn HAVING count(*) <> 2)").trim(),
        "0"
    );
    assert_eq!(
        q("SELECT k, hex(v) FROM static ORDER BY k"),
        sh(&format!(
            "sqlite3 {dbs} \"SELECT k, hex(v) FROM static ORDER BY k\""
        ))
    );
    // Restoring over an existing file is refused.
    let err = env.fails(
        &[
            "restore",
            "latest",
            &format!("sqlite://{}", restored.display()),
        ],
        2,
    );
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
}

#[test]
fn redis_rdb_loads_into_a_fresh_server() {
    let env = Env::new();
    env.init();
    // Keys unique to this test on the shared server.
    let prefix = unique("hf");
    for i in 0..200 {
        sh(&format!(
            "redis-cli -h 127.0.0.1 SET {prefix}:{i} 'value {i} Grüße' >/dev/null"
        ));
    }
    sh(&format!(
        "redis-cli -h 127.0.0.1 RPUSH {prefix}:list a b c >/dev/null"
    ));
    env.backup("redis://127.0.0.1:6379", &[]);
    let dir = env.path("redis-restore");
    env.ok(&["restore", "latest", &format!("file://{}", dir.display())]);
    assert!(dir.join("dump.rdb").is_file());

    // Load it into a fresh redis-server on a port of its own.
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(["--dbfilename", "dump.rdb"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let cli = |args: &str| sh(&format!("redis-cli -h 127.0.0.1 -p {port} {args}"));
    let mut ready = false;
    for _ in 0..100 {
        // redis answers LOADING until the file is read; wait for a real PING reply.
        if Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
        {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "restored redis-server did not start");
    assert_eq!(cli(&format!("GET {prefix}:7")).trim(), "value 7 Grüße");
    assert_eq!(
        cli(&format!("LRANGE {prefix}:list 0 -1"))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let keys = cli(&format!("--scan --pattern '{prefix}:*'"));
    assert_eq!(keys.lines().count(), 201);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn folder_round_trip_keeps_content_modes_links_and_times() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), "hello").unwrap();
    std::fs::write(
        src.join("sub/data.bin"),
        (0..200_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(src.join("sub/deeper/empty"), "").unwrap();
    std::os::unix::fs::symlink("../a.txt", src.join("sub/link")).unwrap();
    sh(&format!(
        "chmod 0750 {0}/sub && chmod 0600 {0}/a.txt && touch -h -d '2020-02-29 12:34:56' {0}/a.txt {0}/sub/link",
        src.display()
    ));
    let want = tree_listing(&src);
    env.backup(&format!("file://{}", src.display()), &[]);
    let dst = env.path("dst");
    env.ok(&["restore", "latest", &format!("file://{}", dst.display())]);
    assert_eq!(tree_listing(&dst), want);
    // Restoring into a non-empty directory needs --force.
    let err = env.fails(
        &["restore", "latest", &format!("file://{}", dst.display())],
        2,
    );
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn any_command_backs_up_and_restores_through_stdio() {
    let env = Env::new();
    env.init();
    let data = env.path("payload");
    std::fs::write(
        &data,
        (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    env.backup(
        "cmd:payload.bin",
        &["--command", &format!("cat {}", data.display())],
    );
    let out = env.path("restored");
    env.ok(&[
        "restore",
        "latest",
        "cmd:",
        "--command",
        &format!("cat > {}", out.display()),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&data).unwrap());
}

#[test]
fn damaged_sqlite_database_fails_the_backup_instead_of_saving_a_partial_dump() {
    let env = Env::new();
    env.init();
    let db = env.path("damaged.db");
    sh(&format!(
        "sqlite3 {} \"CREATE TABLE t (x); WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 2000) \
         INSERT INTO t SELECT randomblob(1000) FROM r;\"",
        db.display()
    ));
    // Overwrite one page in the middle of the table.
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[8192..12288].fill(0xff);
    std::fs::write(&db, bytes).unwrap();
    let err = env.fails(&["backup", &format!("sqlite://{}", db.display())], 24);
    assert!(
        err.contains("damaged") && err.contains("integrity_check"),
        "{err}"
    );
    assert!(env.snapshots().is_empty());
}
