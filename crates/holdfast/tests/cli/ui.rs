//! The web UI in a real headless Chromium (Debian's, driven by playwright-core through the
//! scripts in `tests/ui/`), against a real `holdfast serve` and PostgreSQL. They also take the
//! screenshots in `docs/`.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::server::{Meta, Server, TOKEN};

mod drills;
mod edit;
mod scope;

pub(crate) fn node(script: &str, args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ui")
        .join(script);
    let node_path = std::env::var("HOLDFAST_TEST_NODE_PATH").expect(
        "HOLDFAST_TEST_NODE_PATH: run the tests with scripts/test (it installs playwright-core)",
    );
    let out = Command::new("node")
        .arg(&script)
        .args(args)
        .env("NODE_PATH", node_path)
        .output()
        .expect("node is on the machine");
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .expect("the script prints what it saw"),
    )
    .unwrap()
}

/// Where screenshots go: HOLDFAST_UI_SHOTS when set (`HOLDFAST_UI_SHOTS=$PWD/docs` refreshes
/// the README's), else a directory of the test's own.
fn shots(dir: &std::path::Path) -> std::path::PathBuf {
    let d = std::env::var("HOLDFAST_UI_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.join("shots"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The path, all through the forms: endpoint (tested), PostgreSQL source, plan (a bad
/// cron first), run now, restore into a new database; the restored rows equal the originals.
#[test]
fn the_ui_creates_a_plan_backs_up_postgres_and_restores_it_into_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    let db = PgDb::new();
    db.pgbench(1);
    let want = db.checksums();
    let target = PgDb::not_created();
    let repo = dir.path().join("ui-repo");
    let shots = shots(dir.path());
    let seen = node(
        "flow.cjs",
        &[
            &s.url,
            TOKEN,
            &db.url(),
            "ui-db-password",
            repo.to_str().unwrap(),
            &target.name,
            shots.to_str().unwrap(),
        ],
    );
    assert!(seen["test"].as_str().unwrap().contains("ok"), "{seen}");
    for c in [
        "reachable",
        "authenticated",
        "writable",
        "free-space",
        "repository",
    ] {
        assert!(seen["checks"].to_string().contains(c), "{seen}");
    }
    let cron_error = seen["cronError"].as_str().unwrap();
    assert!(cron_error.contains("61"), "{seen}");
    assert!(
        seen["liveCronError"].as_str().unwrap().contains("61"),
        "{seen}"
    );
    let runs = seen["nextRuns"].as_array().unwrap();
    assert!(
        runs.iter().all(|r| r.as_str().unwrap().contains("02:30")),
        "{seen}"
    );
    assert_eq!(seen["paused"], "Resume", "{seen}");
    assert!(
        seen["pruneError"]
            .as_str()
            .unwrap()
            .contains("every sunday"),
        "{seen}"
    );
    assert!(
        seen["confirm"].as_str().unwrap().contains("Overwrite"),
        "{seen}"
    );
    let ep = s.ok("GET", "/api/v1/endpoints/disk", None);
    assert_eq!(ep["prune_schedule"], "0 5 * * 6", "{ep}");
    assert_eq!(ep["password_set"], true, "{ep}");
    let restores = s.ok("GET", "/api/v1/jobs?kind=restore", None);
    assert_eq!(
        restores.as_array().unwrap().len(),
        1,
        "one restore, not two: {restores}"
    );
    assert_eq!(seen["backup"], "succeeded");
    assert_eq!(seen["sshKeyField"], 1, "{seen}");
    assert_eq!(seen["editTest"], 1, "{seen}");
    assert!(
        seen["retention"].as_str().unwrap().contains("daily"),
        "the plan page shows its retention: {seen}"
    );
    assert_eq!(seen["copy"], "none", "{seen}");
    assert!(
        seen["holds"]
            .as_str()
            .unwrap()
            .starts_with("1 restore point, "),
        "the endpoints page says what the repository holds: {seen}"
    );
    assert_eq!(seen["restore"], "succeeded");
    assert_eq!(target.checksums(), want, "the restored rows differ");
    let plan = s.ok("GET", "/api/v1/plans/shop-nightly", None);
    assert_eq!(plan["timezone"], "Europe/Berlin", "{plan}");
    assert_eq!(plan["paused"], false, "{plan}");
    assert!(!s.log().contains("ui-db-password"));
}

#[test]
fn the_ui_signs_in_runs_a_plan_and_follows_the_job_live() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    let payload = dir.path().join("payload");
    sh(&format!(
        "head -c 3000000 /dev/urandom > {}",
        payload.display()
    ));
    let go = dir.path().join("go");
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "gen", "kind": "command", "url": "cmd:dump.bin",
                     "command": format!("cat {p}; while [ ! -e {g} ]; do sleep 0.05; done",
                                        p = payload.display(), g = go.display())}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "nightly", "source": "gen", "endpoint": "local",
                     "schedule": "0 3 * * *", "timezone": "Europe/Berlin"}),
        ),
    );

    let docs = shots(dir.path());
    let seen = node(
        "smoke.cjs",
        &[&s.url, TOKEN, go.to_str().unwrap(), docs.to_str().unwrap()],
    );
    assert_eq!(seen["status"], "no backup yet", "{seen}");
    assert_eq!(seen["progress"], "1", "{seen}");
    assert_eq!(seen["reloads"], 1, "the job page was reloaded: {seen}");
    assert!(
        seen["steps"].as_u64() >= Some(2),
        "the steps table fills in live: {seen}"
    );
    let t = seen["logTime"].as_str().unwrap_or_default();
    assert!(
        t.parse::<jiff::Timestamp>().is_err()
            && !t.contains('.')
            && t.chars().filter(|c| c.is_ascii_digit()).count() >= 12,
        "log times in the viewer's local format, to the second: {seen}"
    );

    // What the page showed is what the server recorded.
    let id: i64 = seen["jobUrl"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let job = s.ok("GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(seen["snapshot"], job["snapshot_id"], "{seen} {job}");
    assert!(
        seen["log"].as_str().unwrap().contains("restore point"),
        "{seen}"
    );
    // A form posted without this session's CSRF token (as another site would) changes nothing.
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let run = format!("{}/ui/plans/nightly/run", s.url);
    // A session of its own, signed in with the token through the form.
    let jar = dir.path().join("cookies");
    let jar = jar.to_str().unwrap();
    let login = format!("{}/ui/login", s.url);
    let form = Command::new("curl")
        .args(["-s", "-c", jar, &login])
        .output()
        .unwrap();
    let form = String::from_utf8_lossy(&form.stdout).into_owned();
    let nonce = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the sign-in form carries its own CSRF token");
    let signed_in = curl(&[
        "-b",
        jar,
        "-c",
        jar,
        "-d",
        &format!("token={TOKEN}&csrf={nonce}"),
        &login,
    ]);
    assert!(signed_in.starts_with("303"), "{signed_in}");
    assert_eq!(curl(&["-b", jar, "-d", "csrf=forged", &run]), "403 ");
    assert!(curl(&["-d", "csrf=x", &run]).ends_with("/ui/login"));
    // The cookie is a session id, never the API token itself.
    let cookie = format!("Cookie: holdfast_session={TOKEN}");
    assert!(curl(&["-H", &cookie, &format!("{}/", s.url)]).ends_with("/ui/login"));
    assert!(!std::fs::read_to_string(jar).unwrap().contains(TOKEN));
    let jobs = s.ok("GET", "/api/v1/jobs?plan=nightly", None);
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");

    for shot in ["ui-dashboard.png", "ui-job.png"] {
        assert!(
            std::fs::metadata(docs.join(shot)).unwrap().len() > 10_000,
            "{shot}"
        );
    }
}

/// Notifiers through the forms: a refused URL named beside its field (the secret not echoed),
/// create, "send a test" showing the receiver's answer, edit keeping the secrets, delete after a
/// confirmation naming it; and the dashboard's warning about a notifier that cannot deliver.
#[test]
fn the_ui_manages_notifiers_and_warns_about_one_that_cannot_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    // A receiver that answers 200 to everything, and one that refuses once it exists.
    let ok = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ok_url = format!("http://{}", ok.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for c in ok.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            sink.lock().unwrap().push(line.trim().to_string());
            let mut h = String::new();
            while r.read_line(&mut h).unwrap_or(0) > 2 {
                h.clear();
            }
            let _ = (&c)
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    // `broken` accepts the connection check at creation, then is gone: its alert cannot go out.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_url = format!("http://{}/hook", gone.local_addr().unwrap());
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "broken", "kind": "webhook", "url": gone_url})),
    );
    drop(gone);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "bad", "kind": "command", "url": "cmd:bad", "command": "exit 1"})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "bad", "source": "bad", "endpoint": "local", "schedule": "@daily",
        "retry": {"attempts": 1}, "step_retry": {"attempts": 1, "base_ms": 100, "cap_ms": 100},
        "alerts": {"notify": [{"notifier": "broken"}]}}),
        ),
    );
    let id = s.ok("POST", "/api/v1/plans/bad/run", None)["id"]
        .as_i64()
        .unwrap();
    s.wait_job(id, |st| st == "failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.ok("GET", "/api/v1/notifiers/broken", None)["last_delivery"] != "retrying" {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let closed = format!("http://127.0.0.1:{}/x", free_port());
    let docs = shots(dir.path());
    let seen = node(
        "notifiers.cjs",
        &[
            &s.url,
            TOKEN,
            &ok_url,
            &closed,
            "broken",
            docs.to_str().unwrap(),
        ],
    );
    assert_eq!(seen["warning"], 1, "{seen}");
    let row = seen["deliveryRow"].as_str().unwrap();
    assert!(
        row.contains("backup.failed") && row.contains("queued") && row.contains("cannot connect"),
        "{seen}"
    );
    assert!(
        seen["urlError"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{seen}"
    );
    assert_eq!(seen["secretEchoed"], false, "{seen}");
    let report = seen["report"].as_str().unwrap();
    assert!(
        report.contains("sent") && report.contains("HTTP 200"),
        "{seen}"
    );
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("POST /ui-hook")),
        "{:?}",
        got.lock().unwrap()
    );
    assert!(
        seen["dialog"]
            .as_str()
            .unwrap()
            .contains("Delete notifier ops-hook?"),
        "{seen}"
    );
    assert_eq!(
        (
            seen["keptAfterDismiss"].as_i64(),
            seen["afterDelete"].as_i64()
        ),
        (Some(1), Some(0)),
        "{seen}"
    );
}

/// A person signs in with a password (a wrong one first), sees as a viewer no control it may
/// not use, is refused the form it posts anyway, and signing out ends the session: the old
/// cookie opens nothing. The answers carry the browser's safety headers.
#[test]
fn a_viewer_signs_in_with_a_password_sees_only_what_it_may_do_and_signs_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "gen", "kind": "command", "url": "cmd:x", "command": "echo x"})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "nightly", "source": "gen", "endpoint": "local", "schedule": "@daily"}),
        ),
    );
    let password = "viewer passphrase of the test";
    s.ok(
        "POST",
        "/api/v1/users",
        Some(&json!({"name": "vic", "role": "viewer", "password": password})),
    );
    let admin_password = "admin passphrase of the test";
    s.ok(
        "POST",
        "/api/v1/users",
        Some(&json!({"name": "ada", "role": "admin", "password": admin_password})),
    );
    let seen = node(
        "roles.cjs",
        &[&s.url, "vic", password, "ada", admin_password],
    );
    assert!(
        seen["wrong"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{seen}"
    );
    assert_eq!(seen["runButtons"], 0, "a viewer sees no Run now: {seen}");
    assert_eq!(
        seen["endpointForms"], 0,
        "nor the new endpoint form: {seen}"
    );
    assert_eq!(seen["endpointTests"], 0, "nor Test connection: {seen}");
    assert_eq!(seen["forced"], 403, "{seen}");
    for (what, n) in [
        ("endpointEditControls", 0),
        ("sourceEditControls", 0),
        ("planEditControls", 0),
        ("planEditForms", 0),
    ] {
        assert_eq!(
            seen[what], n,
            "a viewer sees no edit or delete control: {seen}"
        );
    }
    assert_eq!(seen["confirmPage"], 403, "{seen}");
    let forged = seen["forgedEdits"].as_object().unwrap();
    assert_eq!(forged.len(), 5, "{seen}");
    assert!(forged.values().all(|v| v == 403), "{seen}");
    // …and changed nothing.
    let plan = s.ok("GET", "/api/v1/plans/nightly", None);
    assert_eq!(plan["schedule"], "@daily", "{plan}");
    assert_eq!(
        s.ok("GET", "/api/v1/sources/gen", None)["command"],
        "echo x"
    );
    s.ok("GET", "/api/v1/endpoints/local", None);
    assert!(
        seen["afterSignOut"]
            .as_str()
            .unwrap()
            .ends_with("/ui/login"),
        "{seen}"
    );
    assert_eq!(seen["httpOnly"], true, "{seen}");
    assert_eq!(seen["sameSite"], "Strict", "{seen}");
    let jobs = s.ok("GET", "/api/v1/jobs?plan=nightly", None);
    assert_eq!(
        jobs.as_array().unwrap().len(),
        0,
        "the forced run ran nothing: {jobs}"
    );

    let audit = s.ok("GET", "/api/v1/audit?actor=vic", None);
    let outcomes: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "session.sign-in")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "denied: wrong password"], "{audit}");

    let page = reqwest::blocking::get(format!("{}/ui/login", s.url)).unwrap();
    let h = page.headers();
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"),
        "{h:?}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
}
