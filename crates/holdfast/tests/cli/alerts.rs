//! Alerts as a user meets them: a real `holdfast serve` whose backups fail and recover, with its
//! notifications caught by a webhook receiver this test runs on loopback (it checks the HMAC
//! signature with the shared secret), by a real SMTP server (aiosmtpd, from PyPI, with a login),
//! and its metrics scraped by a real Prometheus. Slack, Discord, Teams, Telegram, ntfy, Gotify
//! and PagerDuty cannot be reached from here: their bodies are checked against each service's
//! documented shape in the server's unit tests (`notify::message`), and one of them (Slack) is
//! posted to the local receiver here.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PgDb, free_port};
use crate::server::{Meta, Server};

const HOOK_SECRET: &str = "hook-secret-never-in-a-body";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// The status it answered.
    answered: u16,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// An HTTP receiver on loopback that records every request and answers `status`.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (g, st) = (got.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // A connection that sends nothing is the notifier's reachability check.
                let Some(path) = line.split_whitespace().nth(1).map(str::to_string) else {
                    continue;
                };
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let answered = st.load(Ordering::SeqCst);
                g.lock().unwrap().push(Received {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into(),
                    answered,
                });
                let _ = write!(
                    conn,
                    "HTTP/1.1 {answered} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Self { url, got, status }
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The `event` of every request answered with 200, in order.
    pub(crate) fn events(&self) -> Vec<String> {
        self.got()
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.json()["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

/// Polls `cond` until it holds; fails with `why()` after `secs`.
pub(crate) fn wait_for(secs: u64, cond: impl Fn() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command source whose dump fails until `flag` exists, and a plan of it with `alerts`.
fn flaky_plan(s: &Server, name: &str, flag: &Path, alerts: Value) {
    let cmd = format!(
        "if [ -e {} ]; then echo fine; else echo broken >&2; exit 3; fi",
        flag.display()
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": name, "kind": "command", "url": format!("cmd:{name}.txt"), "command": cmd})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": name, "source": name, "endpoint": "local", "schedule": "@yearly",
            "retry": {"attempts": 1}, "step_retry": {"attempts": 1, "base_ms": 100, "cap_ms": 100},
            "alerts": alerts}),
        ),
    );
}

fn run(s: &Server, plan: &str) -> Value {
    let id = s.ok("POST", &format!("/api/v1/plans/{plan}/run"), None)["id"]
        .as_i64()
        .unwrap();
    s.wait_job(id, |st| matches!(st, "succeeded" | "failed" | "cancelled"))
}

fn hmac_hex(secret: &str, msg: &[u8]) -> String {
    // openssl's command line, so that the check does not share the server's code.
    let mut c = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(msg).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Two failures in a row send exactly one alert (the second is within `repeat`), the next
/// success exactly one recovery; every request is signed, and no secret is in any body.
#[test]
fn a_failing_plan_alerts_once_and_recovers_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let hook = Receiver::start();
    let chat = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(
            &json!({"name": "hook", "kind": "webhook", "url": format!("{}/holdfast", hook.url),
            "secret": HOOK_SECRET, "headers": {"Authorization": "Bearer receiver-token"}}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "team-chat", "kind": "slack",
            "url": format!("{}/services/T000/B000/slack-url-secret", chat.url), "group_secs": 0})),
    );
    let view = s.ok("GET", "/api/v1/notifiers/hook", None).to_string();
    assert!(
        !view.contains(HOOK_SECRET)
            && !view.contains("receiver-token")
            && !view.contains("/holdfast"),
        "{view}"
    );
    let flag = dir.path().join("healthy");
    flaky_plan(
        &s,
        "orders",
        &flag,
        json!({"notify": [{"notifier": "hook"}, {"notifier": "team-chat"}]}),
    );

    assert_eq!(run(&s, "orders")["state"], "failed");
    assert_eq!(run(&s, "orders")["state"], "failed");
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(run(&s, "orders")["state"], "succeeded");

    wait_for(
        60,
        || hook.events().contains(&"backup.recovered".to_string()),
        || format!("no recovery: {:?}\n{}", hook.got(), s.log()),
    );
    assert_eq!(
        hook.events(),
        ["backup.failed", "backup.recovered"],
        "{:?}",
        hook.got()
    );
    let events = s.ok("GET", "/api/v1/events", None);
    let failed: Vec<bool> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "backup.failed")
        .map(|e| e["alert"].as_bool().unwrap())
        .collect();
    assert_eq!(
        failed,
        [false, true],
        "newest first: the second failure was held back: {events}"
    );

    for r in hook.got() {
        let ts = &r.headers["x-holdfast-timestamp"];
        let expected = format!(
            "sha256={}",
            hmac_hex(HOOK_SECRET, format!("{ts}.{}", r.body).as_bytes())
        );
        assert_eq!(
            r.headers["x-holdfast-signature"], expected,
            "signature of {r:?}"
        );
        assert_eq!(r.headers["authorization"], "Bearer receiver-token");
        assert!(
            r.headers["idempotency-key"].starts_with("holdfast-"),
            "{r:?}"
        );
        assert_eq!(r.path, "/holdfast");
        assert!(
            !r.body.contains(HOOK_SECRET) && !r.body.contains("receiver-token"),
            "{}",
            r.body
        );
    }
    let failed = &hook.got()[0].json();
    assert_eq!(
        (
            failed["plan"].as_str(),
            failed["consecutive_failures"].as_i64()
        ),
        (Some("orders"), Some(1))
    );
    assert!(
        failed["error"].as_str().unwrap().contains("exit status 3"),
        "{failed}"
    );

    // Slack's incoming-webhook shape: `text` and mrkdwn section blocks.
    wait_for(
        30,
        || chat.got().len() >= 2,
        || format!("slack: {:?}", chat.got()),
    );
    let slack: Vec<Value> = chat.got().iter().map(Received::json).collect();
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert_eq!(slack[0]["text"], "Backup failed: plan `orders`");
    assert_eq!(slack[0]["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(slack[1]["text"], "Backup recovered: plan `orders`");
    let deliveries = s.ok("GET", "/api/v1/notifiers/team-chat/deliveries", None);
    assert_eq!(
        deliveries[0]["tries"][0]["status"], "HTTP 200",
        "{deliveries}"
    );
    assert!(
        !deliveries.to_string().contains("slack-url-secret"),
        "{deliveries}"
    );
    let test = s.ok("POST", "/api/v1/notifiers/hook/test", None);
    assert_eq!(
        (test["ok"].as_bool(), test["status"].as_str()),
        (Some(true), Some("HTTP 200")),
        "{test}"
    );
}

/// A notifier whose receiver cannot be reached, or that is malformed, is refused naming the
/// field; one that is named by a plan cannot be deleted.
#[test]
fn bad_notifiers_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let closed = free_port();
    let cases = [
        (
            json!({"name": "a", "kind": "webhook", "url": format!("http://127.0.0.1:{closed}/x")}),
            "url",
            "cannot connect",
        ),
        (
            json!({"name": "b", "kind": "webhook", "url": "not a url"}),
            "url",
            "not a URL",
        ),
        (
            json!({"name": "c", "kind": "pager", "url": "https://x"}),
            "kind",
            "unknown variant",
        ),
        (
            json!({"name": "d", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": closed, "smtp_security": "none",
            "from": "h@example.com", "to": ["ops@example.com"]}),
            "smtp_host",
            "SMTP server",
        ),
        (
            json!({"name": "e", "kind": "email", "smtp_host": "127.0.0.1", "from": "nobody", "to": ["ops@example.com"]}),
            "from",
            "not an email address",
        ),
        (
            json!({"name": "f", "kind": "telegram", "chat_id": "1"}),
            "token",
            "bot token",
        ),
        (
            json!({"name": "g", "kind": "webhook", "url": "https://x", "max_per_hour": 99999999}),
            "max_per_hour",
            "out of range",
        ),
    ];
    for (body, field, words) in cases {
        let (code, v) = s.call("POST", "/api/v1/notifiers", Some(&body));
        assert_eq!(code, 422, "{body}: {v}");
        let hit = v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["field"] == field && f["reason"].as_str().unwrap().contains(words));
        assert!(hit, "{body}: expected `{field}` ({words}): {v}");
    }
    let hook = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "hook", "kind": "webhook", "url": hook.url})),
    );
    let (code, v) = s.call(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "x", "kind": "command", "url": "cmd:x", "command": "true"})),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = s.call(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "x", "source": "x", "endpoint": "local",
        "schedule": "@daily", "alerts": {"notify": [{"notifier": "nobody"}], "repeat": "often"}})),
    );
    assert_eq!(code, 422, "{v}");
    let fields: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["alerts.repeat", "alerts.notify[0].notifier"],
        "{v}"
    );
    let (code, v) = s.call(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "x", "source": "x", "endpoint": "local",
        "schedule": "@daily", "alerts": {"notify": [{"notifier": "nobody"}]}})),
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["fields"][0]["field"], "alerts.notify[0].notifier", "{v}");
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "x", "source": "x", "endpoint": "local",
        "schedule": "@daily", "alerts": {"notify": [{"notifier": "hook"}]}})),
    );
    let (code, v) = s.call("DELETE", "/api/v1/notifiers/hook", None);
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("plan(s) x"), "{v}");
}

/// Without any agent, a scheduled backup never starts: the plan gets `backup.missed` after its
/// `missed_after`, and `backup.stale` once it is older than its `max_age` without a success.
/// Both come from the server alone.
#[test]
fn a_plan_nobody_runs_is_missed_and_then_stale() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let hook = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "hook", "kind": "webhook", "url": hook.url, "default": true})),
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "far", "kind": "command", "url": "cmd:far", "command": "echo x",
        "labels": {"site": "far-away"}}),
        ),
    );
    s.ok("POST", "/api/v1/plans", Some(&json!({"name": "lonely", "source": "far", "endpoint": "local",
        "schedule": "* * * * *", "alerts": {"missed_after": "2s", "max_age": "3s", "repeat": "1h"}})));
    wait_for(
        20,
        || hook.events().contains(&"backup.stale".to_string()),
        || format!("no stale: {:?}\n{}", hook.got(), s.log()),
    );
    // The first fire is at the next minute boundary.
    wait_for(
        75,
        || hook.events().contains(&"backup.missed".to_string()),
        || format!("no missed: {:?}\n{}", hook.got(), s.log()),
    );
    let got = hook.got();
    let stale: Vec<&Received> = got
        .iter()
        .filter(|r| r.json()["event"] == "backup.stale")
        .collect();
    assert_eq!(stale.len(), 1, "one stale alert within `repeat`: {got:?}");
    assert!(
        stale[0].json()["text"]
            .as_str()
            .unwrap()
            .contains("no successful backup since it was created"),
        "{:?}",
        stale[0]
    );
    let missed = got
        .iter()
        .find(|r| r.json()["event"] == "backup.missed")
        .unwrap()
        .json();
    assert_eq!(missed["plan"], "lonely");
    assert!(
        missed["text"].as_str().unwrap().contains("has not started"),
        "{missed}"
    );
    let metrics = metrics_text(&s.url, Some(crate::server::TOKEN));
    assert!(
        metrics.contains("holdfast_plan_missed{plan=\"lonely\"} 1"),
        "{metrics}"
    );
}

/// A source that suddenly dumps almost nothing raises `backup.size_anomaly`.
#[test]
fn a_dump_that_shrinks_to_nothing_is_an_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let hook = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "hook", "kind": "webhook", "url": hook.url, "default": true})),
    );
    let data = dir.path().join("dump.txt");
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "shop", "kind": "command", "url": "cmd:shop.sql",
        "command": format!("cat {}", data.display())}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "shop", "source": "shop", "endpoint": "local", "schedule": "@yearly"}),
        ),
    );
    for i in 0..3 {
        std::fs::write(&data, format!("{i}").repeat(200_000)).unwrap();
        assert_eq!(run(&s, "shop")["state"], "succeeded");
    }
    std::fs::write(&data, b"-- empty\n").unwrap();
    let last = run(&s, "shop");
    assert_eq!(last["state"], "succeeded");
    wait_for(
        30,
        || hook.events().contains(&"backup.size_anomaly".to_string()),
        || format!("{:?}\n{}", hook.got(), s.log()),
    );
    let a = hook
        .got()
        .into_iter()
        .map(|r| r.json())
        .find(|j| j["event"] == "backup.size_anomaly")
        .unwrap();
    assert_eq!(
        (a["bytes_read"].as_i64(), a["median_bytes_read"].as_i64()),
        (Some(9), Some(200_000)),
        "{a}"
    );
    assert_eq!(a["job"], last["id"]);
    assert_eq!(
        hook.events()
            .iter()
            .filter(|e| *e == "backup.size_anomaly")
            .count(),
        1,
        "{:?}",
        hook.events()
    );
}

/// The receiver is down when the alert is due: it is retried, and after a `kill -9` of the
/// server and a restart it arrives exactly once, with the same idempotency key.
#[test]
fn a_pending_alert_survives_a_killed_server_and_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let hook = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "hook", "kind": "webhook", "url": hook.url, "default": true})),
    );
    hook.status.store(503, Ordering::SeqCst);
    let flag = dir.path().join("healthy");
    flaky_plan(&s, "billing", &flag, json!({}));
    assert_eq!(run(&s, "billing")["state"], "failed");
    wait_for(
        30,
        || !hook.got().is_empty(),
        || format!("no attempt: {}", s.log()),
    );
    let d = s.ok("GET", "/api/v1/notifiers/hook/deliveries", None);
    assert_eq!(
        (d[0]["state"].as_str(), d[0]["tries"][0]["status"].as_str()),
        (Some("queued"), Some("HTTP 503")),
        "{d}"
    );
    s.kill9();
    hook.status.store(200, Ordering::SeqCst);
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    wait_for(
        60,
        || hook.events() == ["backup.failed"],
        || format!("{:?}\n{}", hook.got(), s.log()),
    );
    wait_for(
        30,
        || s.ok("GET", "/api/v1/notifiers/hook/deliveries", None)[0]["state"] == "sent",
        || s.log(),
    );
    let keys: Vec<String> = hook
        .got()
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "one delivery, retried: {keys:?}"
    );
    assert_eq!(hook.events().len(), 1);
    let events = s.ok("GET", "/api/v1/events", None);
    assert_eq!(
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "backup.failed")
            .count(),
        1,
        "{events}"
    );
}

/// Two replicas on one PostgreSQL store: each event is delivered once.
#[test]
fn two_replicas_deliver_each_alert_once() {
    let db = PgDb::new();
    let meta = Meta::Postgres(db);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = a.path().join("shared.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let key_arg = key.to_str().unwrap();
    let r1 = Server::start(a.path(), &meta, &["--server-key-file", key_arg]);
    let r2 = Server::start(
        b.path(),
        &meta,
        &["--server-key-file", key_arg, "--workers", "0"],
    );
    let hook = Receiver::start();
    r2.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "hook", "kind": "webhook", "url": hook.url, "default": true})),
    );
    let flag = a.path().join("never-created");
    let plans: Vec<String> = (0..4).map(|i| format!("plan-{i}")).collect();
    for p in &plans {
        flaky_plan(&r1, p, &flag, json!({}));
    }
    for p in &plans {
        assert_eq!(run(&r2, p)["state"], "failed");
    }
    wait_for(
        60,
        || hook.events().len() >= plans.len(),
        || format!("{:?}\n{}\n{}", hook.got(), r1.log(), r2.log()),
    );
    wait_for(
        30,
        || {
            let d = r1.ok("GET", "/api/v1/notifiers/hook/deliveries", None);
            d.as_array().unwrap().iter().all(|x| x["state"] == "sent")
        },
        || r1.log(),
    );
    let mut seen: Vec<String> = hook
        .got()
        .iter()
        .map(|r| r.json()["plan"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut want = plans.clone();
    want.sort();
    assert_eq!(
        seen,
        want,
        "each plan's failure exactly once: {:?}",
        hook.got()
    );
}

/// An email alert over a real SMTP server with a login: a wrong password is refused when the
/// notifier is created; with the SMTP server down the alert waits, and arrives once when it is
/// back, to every recipient, with no secret in it.
#[test]
fn email_alerts_wait_out_an_smtp_outage_and_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let maildir = dir.path().join("mail");
    std::fs::create_dir(&maildir).unwrap();
    let mut smtp = Smtp::start(port, &maildir);
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let mut email = json!({"name": "ops-mail", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
        "smtp_security": "none", "username": "alerts", "password": "wrong-password",
        "from": "Holdfast <holdfast@example.com>", "to": ["ops@example.com", "dba@example.com"], "group_secs": 0});
    let (code, v) = s.call("POST", "/api/v1/notifiers", Some(&email));
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["fields"][0]["field"], "password", "{v}");
    assert!(!v.to_string().contains("wrong-password"), "{v}");
    email["password"] = json!(SMTP_PASSWORD);
    s.ok("POST", "/api/v1/notifiers", Some(&email));
    let flag = dir.path().join("healthy");
    flaky_plan(
        &s,
        "crm",
        &flag,
        json!({"notify": [{"notifier": "ops-mail"}]}),
    );

    smtp.stop();
    assert_eq!(run(&s, "crm")["state"], "failed");
    wait_for(
        30,
        || {
            let d = s.ok("GET", "/api/v1/notifiers/ops-mail/deliveries", None);
            d[0]["attempts"].as_i64().unwrap_or(0) >= 1
        },
        || s.log(),
    );
    let d = s.ok("GET", "/api/v1/notifiers/ops-mail/deliveries", None);
    assert_eq!(d[0]["state"], "queued", "waits for a retry: {d}");
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("SMTP server 127.0.0.1:{port}")),
        "{d}"
    );
    let n = s.ok("GET", "/api/v1/notifiers/ops-mail", None);
    assert_eq!(n["last_delivery"], "retrying", "{n}");

    let _smtp = Smtp::start(port, &maildir);
    wait_for(
        60,
        || mails(&maildir).len() == 1,
        || format!("{:?}\n{}", mails(&maildir), s.log()),
    );
    wait_for(
        30,
        || s.ok("GET", "/api/v1/notifiers/ops-mail/deliveries", None)[0]["state"] == "sent",
        || s.log(),
    );
    let mail = &mails(&maildir)[0];
    assert!(
        mail.contains("Subject: [Holdfast] Backup failed: plan `crm`"),
        "{mail}"
    );
    assert!(
        mail.starts_with("X-Rcpt: ops@example.com,dba@example.com\n"),
        "{mail}"
    );
    assert!(mail.contains("exit status 3"), "{mail}");
    for secret in [SMTP_PASSWORD, "wrong-password", crate::helpers::PASSWORD] {
        assert!(!mail.contains(secret), "{secret} in {mail}");
    }
    assert_eq!(mails(&maildir).len(), 1);
}

const SMTP_PASSWORD: &str = "smtp-password-of-the-test";

/// aiosmtpd with a login (`alerts` / [`SMTP_PASSWORD`]), writing each message into `maildir`
/// with its envelope recipients on a first line.
struct Smtp(Child);

impl Smtp {
    fn start(port: u16, maildir: &Path) -> Self {
        let script = r#"
import os, sys, time, uuid
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
class Handler:
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(sys.argv[2], uuid.uuid4().hex)
        with open(path + ".tmp", "wb") as f:
            f.write(("X-Rcpt: " + ",".join(envelope.rcpt_tos) + "\n").encode() + envelope.content)
        os.rename(path + ".tmp", path + ".eml")
        return "250 OK"
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"alerts" and data.password == sys.argv[3].encode()
    return AuthResult(success=ok, handled=False)
c = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]), authenticator=auth, auth_require_tls=False)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;
        let mut child = Command::new("python3")
            .args([
                "-c",
                script,
                &port.to_string(),
                maildir.to_str().unwrap(),
                SMTP_PASSWORD,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/services installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "aiosmtpd did not start (scripts/services installs it)"
        );
        Self(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Each message in `dir`: its recipients line, its decoded subject and its decoded body (by
/// Python's `email` package, whatever transfer encoding the sender chose).
fn mails(dir: &Path) -> Vec<String> {
    const DECODE: &str = "import email, email.header, sys
raw = open(sys.argv[1], 'rb').read()
first, rest = raw.split(b'\\n', 1)
m = email.message_from_bytes(rest)
sys.stdout.write(first.decode() + '\\nSubject: ' + str(email.header.make_header(email.header.decode_header(m['Subject']))) + '\\n\\n' + m.get_payload(decode=True).decode())";
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| {
            let o = Command::new("python3")
                .args(["-c", DECODE])
                .arg(e.path())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    out.sort();
    out
}

fn metrics_text(base: &str, token: Option<&str>) -> String {
    let mut req = reqwest::blocking::Client::new().get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().unwrap().text().unwrap()
}

/// A real Prometheus scrapes `--metrics-listen` and reports the plan's last success as the
/// job's finish time; the main address wants a token; OpenMetrics when asked for.
#[test]
fn prometheus_scrapes_the_last_successful_backup() {
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let s = Server::start(
        dir.path(),
        &Meta::Sqlite,
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
    );
    s.ok("POST", "/api/v1/sources", Some(&json!({"name": "small", "kind": "command", "url": "cmd:small", "command": "echo data"})));
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "small", "source": "small", "endpoint": "local", "schedule": "@daily"}),
        ),
    );
    let job = run(&s, "small");
    assert_eq!(job["state"], "succeeded");
    let finished: jiff::Timestamp = job["finished_at"].as_str().unwrap().parse().unwrap();

    let unauth = reqwest::blocking::get(format!("{}/metrics", s.url)).unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
    let text = metrics_text(&s.url, Some(crate::server::TOKEN));
    assert!(
        text.contains("holdfast_backup_runs_total{plan=\"small\",status=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("holdfast_backup_runs_total{plan=\"small\",status=\"failed\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("holdfast_plan_restore_points{plan=\"small\"} 1"),
        "{text}"
    );
    let open = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{mport}/metrics"))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = open.text().unwrap();
    assert!(
        open.ends_with("# EOF\n") && open.contains("# TYPE holdfast_backup_runs counter"),
        "{open}"
    );

    let pport = free_port();
    let pdir = dir.path().join("prometheus");
    std::fs::create_dir(&pdir).unwrap();
    std::fs::write(
        pdir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: holdfast\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/services installs Debian's package)");
    let query = |q: &str| -> Value {
        reqwest::blocking::Client::new()
            .get(format!(
                "http://127.0.0.1:{pport}/api/v1/query?query={}",
                query_escape(q)
            ))
            .send()
            .ok()
            .and_then(|r| r.json().ok())
            .unwrap_or(Value::Null)
    };
    let q = "holdfast_plan_last_success_timestamp_seconds{plan=\"small\"}";
    wait_for(
        60,
        || {
            query(q)["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
        || format!("{}", query(q)),
    );
    let got: f64 = query(q)["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let want = finished.as_millisecond() as f64 / 1000.0;
    assert!(
        (got - want).abs() < 0.002,
        "prometheus says {got}, the job finished at {want}"
    );
    let up = query("up{job=\"holdfast\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let _ = prom.kill();
    let _ = prom.wait();
}

/// Percent-encodes a PromQL query for a URL's query string.
fn query_escape(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Notifiers in the declarative file: secrets (the URL, the signing secret, header values) as
/// references; export gives references back, and applying the export changes nothing.
#[test]
fn notifiers_round_trip_through_apply_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let hook = Receiver::start();
    let file = dir.path().join("holdfast.toml");
    std::fs::write(
        &file,
        r#"
[sources.app]
kind = "command"
url = "cmd:app.txt"
command = "echo app"

[notifiers.hook]
kind = "webhook"
url = { env = "HOOK_URL" }
secret = { env = "HOOK_SECRET" }
headers = { Authorization = { env = "HOOK_AUTH" } }
default = true

[plans.app]
source = "app"
endpoint = "local"
schedule = "@daily"
alerts = { notify = [{ notifier = "hook", events = ["backup.failed", "backup.recovered"] }], after_failures = 2 }
"#,
    )
    .unwrap();
    let url = format!("{}/in", hook.url);
    let env = [
        ("HOOK_URL", url.as_str()),
        ("HOOK_SECRET", HOOK_SECRET),
        ("HOOK_AUTH", "Bearer from-env"),
    ];
    let f = file.to_str().unwrap();
    let (code, out, err) = s.cli(&["apply", "-f", f, "--dry-run"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "+ notifier hook (dry run)\n+ plan app (dry run) (not checked by the server: its source `app` is new too)"
        ),
        "{out}"
    );
    let (code, out, err) = s.cli(&["apply", "-f", f], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("+ notifier hook") && out.contains("+ plan app"),
        "{out}"
    );
    let n = s.ok("GET", "/api/v1/notifiers/hook", None);
    assert_eq!(
        (n["url_set"].as_bool(), n["secret_set"].as_bool()),
        (Some(true), Some(true)),
        "{n}"
    );
    assert_eq!(n["headers"], json!(["Authorization"]));
    let plan = s.ok("GET", "/api/v1/plans/app", None);
    assert_eq!(plan["alerts"]["after_failures"], 2, "{plan}");

    let (code, exported, err) = s.cli(&["export"], &[]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "[notifiers.hook]",
        r#"url = { env = "HOLDFAST_NOTIFIER_HOOK_URL" }"#,
        r#"secret = { env = "HOLDFAST_NOTIFIER_HOOK_SECRET" }"#,
        r#"headers = { Authorization = { env = "HOLDFAST_NOTIFIER_HOOK_HEADER_AUTHORIZATION" } }"#,
    ] {
        assert!(exported.contains(want), "{want} in\n{exported}");
    }
    for secret in [HOOK_SECRET, "from-env", "/in"] {
        assert!(!exported.contains(secret), "{secret} in\n{exported}");
    }
    let again = dir.path().join("exported.toml");
    std::fs::write(&again, &exported).unwrap();
    let (code, out, err) = s.cli(&["apply", "-f", again.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 created, 0 changed"), "{out}");
    assert!(out.contains("kept the stored headers"), "{out}");
    let test = s.ok("POST", "/api/v1/notifiers/hook/test", None);
    assert_eq!(test["ok"], true, "{test}");
    let got = hook.got();
    assert_eq!(
        got.last().unwrap().headers["authorization"],
        "Bearer from-env",
        "{got:?}"
    );
}

/// A cron job's CLI backup pings its heartbeat at the start and the end (`/fail` when it
/// fails, with the same exit code as without the ping) and posts the failure, signed, to a
/// webhook.
#[test]
fn cli_backups_ping_their_heartbeat_and_post_failures() {
    let env = crate::helpers::Env::new();
    let hc = Receiver::start();
    let hook = Receiver::start();
    let beat = format!("{}/ping/check-uuid", hc.url);
    let ok = env
        .cmd(&[
            "backup",
            "cmd:app.txt",
            "--command",
            "echo app-data",
            "--init",
            "--plan",
            "nightly",
        ])
        .env("HOLDFAST_HEARTBEAT_URL", &beat)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let paths: Vec<String> = hc.got().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/ping/check-uuid/start", "/ping/check-uuid"],
        "{:?}",
        hc.got()
    );
    assert!(
        hc.got()[1]
            .body
            .contains("Backup succeeded: plan `nightly`"),
        "{:?}",
        hc.got()
    );

    let plain = env.run(&["backup", "cmd:app.txt", "--command", "exit 7"]);
    let failed = env
        .cmd(&[
            "backup",
            "cmd:app.txt",
            "--command",
            "exit 7",
            "--notify-webhook",
            &hook.url,
        ])
        .env("HOLDFAST_HEARTBEAT_URL", &beat)
        .env("HOLDFAST_NOTIFY_WEBHOOK_SECRET", HOOK_SECRET)
        .output()
        .unwrap();
    assert_eq!(
        failed.status.code(),
        plain.status.code(),
        "the pings do not change the exit code"
    );
    assert_ne!(failed.status.code(), Some(0));
    let paths: Vec<String> = hc.got().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        &paths[2..],
        ["/ping/check-uuid/start", "/ping/check-uuid/fail"],
        "{:?}",
        hc.got()
    );
    assert!(
        hc.got()[3].body.contains("exit status 7"),
        "{:?}",
        hc.got()[3]
    );
    let posted = &hook.got()[0];
    assert_eq!(posted.json()["event"], "backup.failed", "{posted:?}");
    let ts = &posted.headers["x-holdfast-timestamp"];
    let sig = format!(
        "sha256={}",
        hmac_hex(HOOK_SECRET, format!("{ts}.{}", posted.body).as_bytes())
    );
    assert_eq!(posted.headers["x-holdfast-signature"], sig);

    // An unreachable heartbeat is a warning; the backup still succeeds.
    let closed = format!("http://127.0.0.1:{}/x", free_port());
    let out = env
        .cmd(&["backup", "cmd:app.txt", "--command", "echo again"])
        .env("HOLDFAST_HEARTBEAT_URL", &closed)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: could not ping the heartbeat URL"),
        "{err}"
    );
    assert!(!err.contains("/x"), "the URL is a credential: {err}");
}

/// Two plans failing together reach a chat notifier as one message; a notifier with a rate
/// limit of one message an hour holds the next one back (queued, not dropped, no attempt).
#[test]
fn alerts_close_together_go_out_as_one_and_a_rate_limit_holds_back_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "2"]);
    let chat = Receiver::start();
    let limited = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "chat", "kind": "discord",
        "url": format!("{}/api/webhooks/1/discord-token", chat.url), "group_secs": 3})),
    );
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(&json!({"name": "limited", "kind": "webhook",
        "url": limited.url, "max_per_hour": 1})),
    );
    let flag = dir.path().join("never");
    for p in ["alpha", "beta"] {
        flaky_plan(
            &s,
            p,
            &flag,
            json!({"notify": [{"notifier": "chat"}, {"notifier": "limited"}]}),
        );
    }
    for p in ["alpha", "beta"] {
        assert_eq!(run(&s, p)["state"], "failed");
    }
    wait_for(
        30,
        || !chat.got().is_empty() && !limited.got().is_empty(),
        || format!("{:?}\n{}", chat.got(), s.log()),
    );
    let d = s.ok("GET", "/api/v1/notifiers/chat/deliveries", None);
    wait_for(
        30,
        || {
            s.ok("GET", "/api/v1/notifiers/chat/deliveries", None)
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["state"] == "sent")
        },
        || format!("{d}"),
    );
    assert_eq!(
        chat.got().len(),
        1,
        "one message for both: {:?}",
        chat.got()
    );
    let body = chat.got()[0].json();
    assert_eq!(body["embeds"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["content"], "Holdfast: 2 events (2 problems)", "{body}");
    assert_eq!(
        body["allowed_mentions"]["parse"],
        json!([]),
        "no @everyone from an error text"
    );

    let l = s.ok("GET", "/api/v1/notifiers/limited/deliveries", None);
    let states: Vec<(&str, i64)> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["state"].as_str().unwrap(),
                x["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("queued", 0), ("sent", 1)],
        "newest first: the second waits for the hour: {l}"
    );
    assert_eq!(limited.got().len(), 1);
    let metrics = metrics_text(&s.url, Some(crate::server::TOKEN));
    assert!(
        metrics.contains("holdfast_notification_pending{notifier=\"limited\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "holdfast_notification_deliveries_total{notifier=\"chat\",status=\"sent\"} 2"
        ),
        "{metrics}"
    );
}
