//! A failed backup never harms an earlier one and never leaves a snapshot behind.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::helpers::*;

/// A repository with one good snapshot of `payload`, whose bytes are returned.
fn repo_with_one_snapshot() -> (Env, Vec<u8>) {
    let env = Env::new();
    env.init();
    let payload: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let file = env.path("payload");
    std::fs::write(&file, &payload).unwrap();
    env.backup(
        "cmd:good",
        &["--command", &format!("cat {}", file.display())],
    );
    (env, payload)
}

/// The earlier snapshot is still the only one, restores intact, and both checks pass.
fn assert_unharmed(env: &Env, payload: &[u8]) {
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "a failed backup left a snapshot: {snaps:?}");
    let out = env.cmd(&["dump", "latest"]).output().unwrap();
    assert!(out.stdout == payload, "the earlier snapshot changed");
    env.ok(&["check", "--read-data"]);
    env.restic_check();
}

#[test]
fn dump_tool_exiting_non_zero_writes_no_snapshot_and_shows_its_stderr() {
    let (env, payload) = repo_with_one_snapshot();
    let err = env.fails(
        &[
            "backup",
            "cmd:bad",
            "--command",
            "head -c 3000000 /dev/urandom; echo 'disk on fire' >&2; exit 3",
        ],
        24,
    );
    assert!(
        err.contains("exit status 3") && err.contains("disk on fire"),
        "{err}"
    );
    assert!(
        err.contains("cmd:bad"),
        "the error must name the source: {err}"
    );
    assert_unharmed(&env, &payload);
}

#[test]
fn killed_dump_tool_writes_no_snapshot() {
    let (env, payload) = repo_with_one_snapshot();
    let err = env.fails(
        &[
            "backup",
            "cmd:killed",
            "--command",
            "head -c 5000000 /dev/urandom; kill -9 $$",
        ],
        24,
    );
    assert!(err.contains("killed by signal 9"), "{err}");
    assert_unharmed(&env, &payload);
}

#[test]
fn postgres_connection_lost_mid_dump_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.psql("CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 1000) g;");
    env.backup(&db.url(), &[]);
    let want = db.checksums();

    // Hold an exclusive lock so that the next backup's pg_dump waits on it...
    let mut locker = PgDb::psql_cmd(&db.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lock_in = locker.stdin.take().unwrap();
    writeln!(
        lock_in,
        "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");

    let backup = env
        .cmd(&["backup", &db.url()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // ...then cut its connection, as a server restart or network failure would.
    let waiting = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name = 'holdfast' AND wait_event_type = 'Lock'",
        db.name
    );
    let mut terminated = false;
    for _ in 0..300 {
        if db.psql(&waiting).trim() != "0" {
            terminated = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    writeln!(lock_in, "COMMIT;").unwrap();
    drop(lock_in);
    let _ = locker.wait();
    let out = backup.wait_with_output().unwrap();
    assert!(terminated, "the backup never waited on the lock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(24), "{err}");
    assert!(err.contains("pg_dump") && err.contains(&db.name), "{err}");
    assert_eq!(env.snapshots().len(), 1);
    env.restic_check();
    let target = PgDb::not_created();
    env.ok(&["restore", "latest", &target.url(), "--create"]);
    assert_eq!(target.checksums(), want);
}

#[test]
fn storage_failure_mid_stream_writes_no_snapshot_and_the_next_backup_works() {
    let (env, payload) = repo_with_one_snapshot();
    // Make every pack directory that is still empty unwritable by putting a file in its
    // place (we run as root, so permissions would not stop the write).
    let data = std::path::Path::new(&env.repo).join("data");
    let mut blocked = Vec::new();
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if std::fs::read_dir(&p).unwrap().next().is_none() {
            std::fs::remove_dir(&p).unwrap();
            std::fs::write(&p, "not a directory").unwrap();
            blocked.push(p);
        }
    }
    assert!(blocked.len() > 200);
    let err = env.fails(
        &[
            "backup",
            "cmd:big",
            "--command",
            "head -c 40000000 /dev/urandom",
        ],
        13,
    );
    assert!(
        err.contains("storage error") && err.contains(&env.repo),
        "{err}"
    );
    for p in blocked {
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
    }
    assert_unharmed(&env, &payload);
    env.backup("cmd:big", &["--command", "head -c 40000000 /dev/urandom"]);
    assert_eq!(env.snapshots().len(), 2);
}

#[test]
fn wrong_password_missing_repository_and_bad_urls_have_their_own_errors() {
    let (env, _) = repo_with_one_snapshot();
    let err = env
        .cmd(&["snapshots"])
        .env("HOLDFAST_REPO_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&err.stderr).contains("wrong password"));

    let missing = Env::new();
    let e = missing.fails(&["snapshots"], 10);
    assert!(e.contains("holdfast init"), "{e}");

    let e = env.fails(&["backup", "mongodb://h/db"], 2);
    assert!(e.contains("postgres://"), "{e}");
    let e = env.fails(&["init"], 11);
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn unreachable_database_is_named_without_its_password() {
    let (env, payload) = repo_with_one_snapshot();
    let err = env.fails(
        &["backup", "postgres://app:pw-s3cret-9@127.0.0.1:1/shop"],
        20,
    );
    assert!(
        err.contains("127.0.0.1:1") && err.contains("postgres://app@127.0.0.1:1/shop"),
        "{err}"
    );
    assert!(!err.contains("pw-s3cret-9"), "password leaked: {err}");
    let err = env.fails(&["backup", "redis://127.0.0.1:1"], 20);
    assert!(err.contains("redis://127.0.0.1:1"), "{err}");
    assert_unharmed(&env, &payload);
}

#[test]
fn missing_dump_tool_is_named() {
    let (env, payload) = repo_with_one_snapshot();
    let db = env.path("x.db");
    sh(&format!("sqlite3 {} 'CREATE TABLE t (x)'", db.display()));
    let out = env
        .cmd(&["backup", &format!("sqlite://{}", db.display())])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(23), "{err}");
    assert!(
        err.contains("sqlite3 not found") && err.contains("Debian: sqlite3"),
        "{err}"
    );
    assert_unharmed(&env, &payload);
}

#[test]
fn database_password_never_appears_in_output_or_snapshot_metadata() {
    let env = Env::new();
    env.init();
    // That it stays off the tools' command lines is checked by the postgres driver's unit test.
    let db = PgDb::new();
    db.psql("CREATE TABLE t (x int);");
    // PostgreSQL here trusts every login, so a made-up password is accepted and reaches pg_dump.
    let url = format!(
        "postgres://postgres:tr0ub4dor-pw@127.0.0.1:5432/{}",
        db.name
    );
    let out = env.cmd(&["backup", &url, "-vv"]).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("tr0ub4dor-pw"), "password in output: {all}");
    let snaps = serde_json::to_string(&env.snapshots()).unwrap();
    assert!(
        !snaps.contains("tr0ub4dor-pw"),
        "password in snapshot metadata"
    );
}

#[test]
fn restore_tool_dying_mid_stream_reports_its_own_error() {
    let env = Env::new();
    env.init();
    env.backup("cmd:big", &["--command", "head -c 5000000 /dev/urandom"]);
    // The tool quits at once, so writing the rest of the snapshot breaks the pipe: the error
    // must be the tool's, not the broken pipe's.
    let err = env.fails(
        &[
            "restore",
            "latest",
            "cmd:",
            "--command",
            "echo 'target disk full' >&2; exit 3",
        ],
        25,
    );
    assert!(
        err.contains("target disk full") && err.contains("exit status 3"),
        "{err}"
    );
}

/// `holdfast dump SNAPSHOT | head -c 100`: the reader closing the pipe early is its choice, so
/// the dump ends quietly and successfully, as `cat` would, instead of reporting a storage error.
#[test]
fn dump_into_a_pipe_closed_early_ends_quietly() {
    let env = Env::new();
    env.init();
    // Far more than the pipe and Holdfast's own buffer hold, so writes go on after the close.
    let payload = random(8 << 20, 6);
    let file = env.path("payload");
    std::fs::write(&file, &payload).unwrap();
    env.backup(
        "cmd:big",
        &["--command", &format!("cat {}", file.display())],
    );

    let mut child = env
        .cmd(&["dump", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    assert!(head[..] == payload[..100]);
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(stderr, "");

    // A stdout that cannot be written is still an error, and says it is stdout's.
    let out = env
        .cmd(&["dump", "latest"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing the dump to stdout: No space left"),
        "{stderr}"
    );
}

/// A Redis that refuses the login fails at once with exit 21 (login refused, never retried),
/// like a wrong PostgreSQL or MariaDB password, whether the password is wrong, missing, or
/// given to a server that has none (redis-cli says `AUTH failed` and exits 0).
#[test]
fn redis_refusing_the_login_is_a_refused_login() {
    let env = Env::new();
    env.init();
    let secured = TempRedis::start(&["--requirepass", "right-password"]);
    let open = TempRedis::start(&[]);
    for (url, says) in [
        (
            format!("redis://:wrong-password@127.0.0.1:{}", secured.port),
            "WRONGPASS",
        ),
        (format!("redis://127.0.0.1:{}", secured.port), "NOAUTH"),
        (
            format!("redis://:wrong-password@127.0.0.1:{}", open.port),
            "has no password set",
        ),
    ] {
        let err = env.fails(&["backup", &url], 21);
        assert!(
            err.contains("refused the login") && err.contains(says),
            "{url}: {err}"
        );
        assert!(
            !err.contains("wrong-password"),
            "the password was shown: {err}"
        );
    }
    assert!(env.snapshots().is_empty());
    // The right password works.
    env.backup(
        &format!("redis://:right-password@127.0.0.1:{}", secured.port),
        &[],
    );
}

/// With RUST_BACKTRACE=1 in the environment, a storage that is down must not print a
/// backtrace with every retried request, and logs written to a file (not a terminal) carry no
/// colour codes: one line per event, the final error on a line of its own.
#[test]
fn storage_retries_log_one_line_each_without_backtraces_or_colour() {
    let port = free_port();
    let mut env = Env::with_repo(format!(
        "s3://bucket/backups?endpoint=http://127.0.0.1:{port}&region=us-east-1&path-style=true"
    ));
    env.extra_env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "holdfast-test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "holdfast-test".into()),
        ("RUST_BACKTRACE".into(), "1".into()),
    ];
    let stderr = env.fails(&["snapshots"], 13);
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log file:\n{stderr}"
    );
    assert!(
        !stderr.contains("Backtrace") && !stderr.contains("stack backtrace"),
        "{stderr}"
    );
    assert!(!stderr.contains("std::backtrace"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let retries = lines.iter().filter(|l| l.contains("will retry")).count();
    assert!(retries >= 1, "no retry was logged:\n{stderr}");
    assert!(lines.len() <= 12, "{} lines:\n{stderr}", lines.len());
    // Every line is one event (a timestamped log line) or the final error.
    for l in &lines[..lines.len() - 1] {
        assert!(
            l.starts_with("20") && l.contains(" WARN "),
            "not one event per line: {l}"
        );
    }
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("holdfast: error: storage error at s3://bucket/backups")
            && last.contains("Connection refused"),
        "{last}"
    );
}
