//! `holdfast serve` starting and stopping as an operator runs it: a port already taken, a
//! SIGTERM in the middle of a backup, and what the data directory lets others read.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::{Meta, Server, TOKEN};

/// Runs `holdfast serve` with `args` and the admin token `token`, expecting it to give up:
/// its exit code and stderr.
fn serve_gives_up(data: &std::path::Path, args: &[&str], token: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("HOLDFAST_ADMIN_TOKEN", token)
        .env_remove("HOLDFAST_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status =
        crate::helpers::wait_exit(&mut child, || format!("serve {args:?} did not give up"));
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    (status.code(), stderr)
}

#[test]
fn serve_on_a_taken_port_exits_with_its_own_code_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_gives_up(dir.path(), &["--listen", &addr], TOKEN);
    assert_eq!(code, Some(30), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("in use") && stderr.contains("--listen"),
        "the message names the address and what to do: {stderr}"
    );
}

/// HOLDFAST_ADMIN_TOKEN is never silently ignored: a weak one is refused, one that is not the
/// server's (on a later start) is refused with what to do, and a lost admin token is recovered
/// on the host with `holdfast admin reset-token`, which a running server honours at once.
#[test]
fn the_admin_token_is_refused_when_weak_or_foreign_and_can_be_reset_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let listen = ["--listen", "127.0.0.1:0"];
    let (code, stderr) = serve_gives_up(dir.path(), &listen, "short-token");
    assert_eq!(code, Some(35), "{stderr}");
    assert!(stderr.contains("at least 32"), "{stderr}");

    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    s.ok("GET", "/api/v1/plans", None);
    let other = "hf_some_other_token_that_is_long_enough_0000";
    let (code, stderr) = serve_gives_up(dir.path(), &listen, other);
    assert_eq!(code, Some(35), "{stderr}");
    assert!(
        stderr.contains("not a live token") && stderr.contains("holdfast admin reset-token"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["admin", "reset-token", "--data-dir"])
        .arg(dir.path())
        .env_remove("HOLDFAST_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(new.len() >= 32, "{new}");
    assert_eq!(
        s.call_as(Some(TOKEN), "GET", "/api/v1/plans", None, &[]).0,
        401
    );
    assert_eq!(
        s.call_as(Some(&new), "GET", "/api/v1/plans", None, &[]).0,
        200
    );
}

/// A `kill` (systemd's stop, a container's) while a backup runs: the embedded agent stops
/// claiming, lets the job go on for the grace period, stops it (cleanup and unlock hooks run)
/// and hands it back; the server exits 0 with nothing left running. The next start runs the
/// job's next attempt to the end.
#[test]
fn sigterm_during_a_backup_hands_the_job_back_and_the_next_start_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--shutdown-grace-secs", "1"];
    let mut s = Server::start(dir.path(), &Meta::Sqlite, &args);
    let started = dir.path().join("started");
    let unlocked = dir.path().join("unlocked");
    // The first attempt hangs; the next one dumps at once.
    let dump = format!(
        "if [ -e {0} ]; then echo payload-after-restart; else touch {0}; sleep 600; fi",
        started.display()
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "slow", "kind": "command", "url": "cmd:slow.txt", "command": dump})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "slow", "source": "slow", "endpoint": "local", "schedule": "@yearly",
            "retry": {"attempts": 3, "base_secs": 1, "cap_secs": 2},
            "hooks": {"post_backup_unlock": {"run": format!("echo x >> {}", unlocked.display())}}}),
        ),
    );
    let id = s.ok("POST", "/api/v1/plans/slow/run", None)["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "the dump did not start:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = s.terminate();
    let log = s.log();
    assert_eq!(code, 0, "a stopped server exits 0:\n{log}");
    assert!(
        log.contains("handing running jobs back"),
        "it says what it does:\n{log}"
    );
    // Nothing is left running, and nothing holds a lease.
    let row = Command::new("sqlite3")
        .arg(dir.path().join("holdfast.db"))
        .arg(format!(
            "SELECT state, attempt, COALESCE(lease_owner, '-') FROM jobs WHERE id = {id}"
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&row.stdout).trim(),
        "queued|2|-",
        "the job is back in the queue for its next attempt:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&unlocked).unwrap(),
        "x\n",
        "the unlock hook ran before the server stopped"
    );

    let s = Server::start(dir.path(), &Meta::Sqlite, &args);
    let j = s.wait_job(id, |st| st != "queued" && st != "running");
    assert_eq!(
        (j["state"].as_str(), j["attempt"].as_i64()),
        (Some("succeeded"), Some(2)),
        "{j}"
    );
    let lines: Vec<&str> = j["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shut down before the job ended")),
        "{lines:#?}"
    );
    let dump = s.restic(&[
        "dump",
        j["snapshot_id"].as_str().unwrap(),
        "/command/slow.txt",
    ]);
    assert_eq!(dump, "payload-after-restart\n");
}

#[test]
fn the_data_directory_and_metadata_are_private_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &Meta::Sqlite, &[]);
    s.ok("GET", "/api/v1/plans", None);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in [
        "holdfast.db",
        "holdfast.db-wal",
        "server.key",
        "repository.password",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

/// The embedded agent keeps its name across restarts (it was `host:PID`, so every restart left
/// another offline agent behind).
#[test]
fn the_embedded_agent_keeps_its_name_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let names = |s: &Server| -> Vec<String> {
        s.ok("GET", "/api/v1/agents", None)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    let wait_registered = |s: &Server| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = names(s);
            if !n.is_empty() {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "no agent registered:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let first = wait_registered(&s);
    assert_eq!(s.terminate(), 0);
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    wait_registered(&s);
    assert_eq!(names(&s), first, "one agent, the same name");
}
