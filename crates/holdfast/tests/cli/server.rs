//! `holdfast serve` as users run it: the real binary on a loopback port, driven over HTTP with
//! reqwest, backing up and restoring the machine's real PostgreSQL, with its metadata in SQLite or
//! in a PostgreSQL database of the test's own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PgDb, unique};

pub(crate) const TOKEN: &str = "hf_test_admin_token_of_the_cli_tests_0123";
const DB_PASSWORD: &str = "pw-that-must-never-show";

/// Where a server keeps its metadata.
pub(crate) enum Meta {
    Sqlite,
    Postgres(PgDb),
}

impl Meta {
    fn postgres() -> Self {
        Meta::Postgres(PgDb::new())
    }
}

pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    data: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn start(data: &std::path::Path, meta: &Meta, extra: &[&str]) -> Self {
        Self::start_with_env(data, meta, extra, &[])
    }

    /// A server whose process has `env` in its environment too.
    pub(crate) fn start_with_env(
        data: &std::path::Path,
        meta: &Meta,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.envs(env.iter().copied());
        c.args(["serve", "--tick-ms", "100"]);
        // The tests' plans run hooks, commands and local paths on the embedded agent, as a
        // single-user installation allows; tests of the defaults pass `--strict-agent`.
        if !extra.contains(&"--strict-agent") {
            c.args(["--agent-allow-hook-scripts", "--agent-allow-commands"])
                .arg("--agent-allow-path")
                .arg(std::env::temp_dir());
        }
        if !extra.contains(&"--listen") {
            c.args(["--listen", "127.0.0.1:0"]);
        }
        c.arg("--data-dir")
            .arg(data)
            .args(extra.iter().filter(|a| **a != "--strict-agent"))
            .env("HOLDFAST_ADMIN_TOKEN", TOKEN)
            .env_remove("HOLDFAST_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Meta::Postgres(db) = meta {
            c.env("HOLDFAST_DATABASE_URL", db.url());
        }
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start:\n{}", log.lock().unwrap()));
        Self {
            child,
            url,
            data: data.to_path_buf(),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// (status, JSON body) of one API call, over one HTTP client kept by the test process
    /// (no `curl` process per call).
    pub(crate) fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[&str],
    ) -> (u16, Value) {
        static HTTP: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
        let http = HTTP.get_or_init(|| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap()
        });
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = http
            .request(method, format!("{}{path}", self.url))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for h in headers {
            let (k, v) = h.split_once(':').unwrap();
            req = req.header(k.trim(), v.trim());
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, json)
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(Some(TOKEN), method, path, body, &[])
    }

    pub(crate) fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (code, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&code),
            "{method} {path}: {code} {v}\n{}",
            self.log()
        );
        v
    }

    /// Waits until the job's state satisfies `done`; fails after 2 minutes.
    pub(crate) fn wait_job(&self, id: i64, done: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let j = self.ok("GET", &format!("/api/v1/jobs/{id}"), None);
            if done(j["state"].as_str().unwrap()) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} stuck: {j}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the process to exit; its exit code.
    pub(crate) fn terminate(&mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let log = self.log.clone();
        crate::helpers::wait_exit(&mut self.child, || {
            format!(
                "the server did not stop on SIGTERM:\n{}",
                log.lock().unwrap()
            )
        })
        .code()
        .unwrap_or(-1)
    }

    pub(crate) fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub(crate) fn restic(&self, args: &[&str]) -> String {
        let out = Command::new("restic")
            .arg("-r")
            .arg(self.data.join("repository"))
            .arg("--password-file")
            .arg(self.data.join("repository.password"))
            .args(["--no-cache", "-q"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restic {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn backup_and_restore_postgres_over_http(meta: Meta) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &meta, &[]);
    let db = PgDb::new();
    db.pgbench(1);
    db.psql("CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 500) g;");
    let before = db.checksums();

    // The default endpoint exists on first start; the source's password is write-only.
    let eps = s.ok("GET", "/api/v1/endpoints", None);
    assert_eq!(eps[0]["name"], "local");
    assert_eq!(eps[0]["password_set"], true);
    let src = s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "shop", "kind": "postgres", "url": db.url(), "password": DB_PASSWORD}),
        ),
    );
    assert_eq!(src["password_set"], true);
    let plan = s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "shop-nightly", "source": "shop", "endpoint": "local",
                     "schedule": "0 3 * * *", "timezone": "Europe/Berlin",
                     "retention": {"style": "period", "period": 7, "type": "DAYS"}}),
        ),
    );
    assert_eq!(plan["next_runs"].as_array().unwrap().len(), 5);
    assert!(
        plan["next_runs"][0]
            .as_str()
            .unwrap()
            .contains("T03:00:00+01:00"),
        "{plan}"
    );

    let job = s.ok("POST", "/api/v1/plans/shop-nightly/run", None);
    let id = job["id"].as_i64().unwrap();
    let done = s.wait_job(id, |st| st != "queued" && st != "running");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["bytes_read"].as_i64().unwrap() > 1_000_000, "{done}");
    let snap = done["snapshot_id"].as_str().unwrap().to_string();
    let log: Vec<&str> = done["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(
        log.iter().any(|l| l.starts_with("retention: kept")),
        "{log:?}"
    );

    // The restore point comes from the repository, and restic sees the same snapshot.
    let points = s.ok("GET", "/api/v1/restore-points?plan=shop-nightly", None);
    let ids: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&snap.as_str()), "{points}");
    assert_eq!(points[0]["database"].as_str(), Some(db.name.as_str()));
    assert!(s.restic(&["snapshots", "--json"]).contains(&snap));

    // Pruning the endpoint (what its prune_schedule queues) keeps everything the restore
    // point needs: the restore below reads it back afterwards.
    let ep = s.ok("GET", "/api/v1/endpoints/local", None);
    assert_eq!(ep["prune_schedule"], "0 4 * * 0", "{ep}");
    assert!(ep["next_prune"].as_str().is_some(), "{ep}");
    let p = s.ok("POST", "/api/v1/endpoints/local/prune", None);
    assert_eq!(p["kind"], "prune");
    let p = s.wait_job(p["id"].as_i64().unwrap(), |st| {
        st != "queued" && st != "running"
    });
    assert_eq!(p["state"], "succeeded", "{p}");

    // Restore into a new database through a restore job, and compare every table.
    let target = PgDb::not_created();
    let r = s.ok(
        "POST",
        "/api/v1/restores",
        Some(
            &json!({"plan": "shop-nightly", "restore_point": &snap[..12], "database": target.name}),
        ),
    );
    let r = s.wait_job(r["id"].as_i64().unwrap(), |st| {
        st != "queued" && st != "running"
    });
    assert_eq!(r["state"], "succeeded", "{r}");
    assert!(r["duration_secs"].as_f64().is_some());
    assert_eq!(target.checksums(), before);
    s.restic(&["check", "--read-data"]);

    // The password never comes back, nor shows in the log or the metadata store.
    for path in [
        "/api/v1/sources",
        "/api/v1/sources/shop",
        &format!("/api/v1/jobs/{id}"),
    ] {
        let (_, v) = s.call("GET", path, None);
        assert!(!v.to_string().contains(DB_PASSWORD), "{path}: {v}");
    }
    assert!(!s.log().contains(DB_PASSWORD));
    if let Meta::Sqlite = meta {
        let raw = std::fs::read(dir.path().join("holdfast.db")).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains(DB_PASSWORD));
    }
}

fn the_api_names_bad_fields_and_guards_concurrent_edits(meta: Meta) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &meta, &["--workers", "0"]);

    // Auth: nothing without a token except /healthz; tokens can be made and revoked.
    let (code, v) = s.call_as(None, "GET", "/api/v1/plans", None, &[]);
    assert_eq!(code, 401);
    assert!(v["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(
        s.call_as(Some("hf_wrong"), "GET", "/api/v1/plans", None, &[])
            .0,
        401
    );
    assert_eq!(s.call_as(None, "GET", "/healthz", None, &[]).0, 200);
    let t = s.ok("POST", "/api/v1/tokens", Some(&json!({"name": "ci"})));
    let token = t["token"].as_str().unwrap().to_string();
    assert_eq!(
        s.call_as(Some(&token), "GET", "/api/v1/plans", None, &[]).0,
        200
    );
    let listed = s.ok("GET", "/api/v1/tokens", None);
    assert!(
        !listed.to_string().contains(&token),
        "tokens are shown once"
    );
    assert_eq!(
        s.call("DELETE", &format!("/api/v1/tokens/{}", t["id"]), None)
            .0,
        204
    );
    assert_eq!(
        s.call_as(Some(&token), "GET", "/api/v1/plans", None, &[]).0,
        401
    );

    let (code, doc) = s.call("GET", "/api/v1/openapi.json", None);
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for p in [
        "/api/v1/plans/{name}/run",
        "/api/v1/restore-points",
        "/api/v1/jobs/{id}/cancel",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }

    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "files", "kind": "folder", "url": "file:///srv/files"})),
    );
    let field_of = |body: Value| -> (u16, Vec<String>) {
        let (code, v) = s.call("POST", "/api/v1/plans", Some(&body));
        let fields = v["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["field"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (code, fields)
    };
    let base = json!({"name": "p", "source": "files", "endpoint": "local", "schedule": "@daily"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert_eq!(
        field_of(with("schedule", json!("61 * * * *"))),
        (422, vec!["schedule".into()])
    );
    assert_eq!(
        field_of(with("timezone", json!("Mars/Olympus"))),
        (422, vec!["timezone".into()])
    );
    assert_eq!(
        field_of(with("cron", json!("x"))),
        (422, vec!["cron".into()])
    );
    assert_eq!(
        field_of(with("source", json!("nope"))),
        (422, vec!["source".into()])
    );
    assert_eq!(
        field_of(with(
            "retention",
            json!({"style": "period", "period": 0, "type": "DAYS"})
        )),
        (422, vec!["retention.period".into()])
    );
    let (code, v) = s.call(
        "PUT",
        "/api/v1/endpoints/local",
        Some(&json!({"name": "local", "kind": "local", "url": "/srv/r", "prune_schedule": "0 4 * *"})),
    );
    assert_eq!(code, 422);
    assert_eq!(v["fields"][0]["field"], "prune_schedule", "{v}");
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("schedule");
    assert_eq!(field_of(missing), (422, vec!["schedule".into()]));
    let (code, v) = s.call(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "x", "kind": "oracle", "url": "x"})),
    );
    assert_eq!(code, 422);
    assert_eq!(v["fields"][0]["field"], "kind", "{v}");
    let (code, v) = s.call(
        "POST",
        "/api/v1/plans",
        Some(&Value::String("{not json".into())),
    );
    assert_eq!(
        (code, v["fields"][0]["field"].as_str()),
        (422, Some("body"))
    );

    assert_eq!(s.call("GET", "/api/v1/plans/nope", None).0, 404);
    assert_eq!(s.call("GET", "/api/v1/jobs/999999", None).0, 404);
    assert_eq!(s.call("POST", "/api/v1/plans/nope/run", None).0, 404);

    // Optimistic concurrency: a write with a stale ETag is refused.
    let created = s.ok("POST", "/api/v1/plans", Some(&base));
    assert_eq!(created["version"], 1);
    assert_eq!(s.call("POST", "/api/v1/plans", Some(&base)).0, 409);
    let v1 = ["If-Match: \"1\""];
    let edit = with("schedule", json!("15 4 * * *"));
    let (code, v) = s.call_as(Some(TOKEN), "PUT", "/api/v1/plans/p", Some(&edit), &v1);
    assert_eq!((code, v["version"].as_i64()), (200, Some(2)), "{v}");
    let (code, v) = s.call_as(Some(TOKEN), "PUT", "/api/v1/plans/p", Some(&base), &v1);
    assert_eq!(code, 412, "{v}");
    assert_eq!(
        s.ok("GET", "/api/v1/plans/p", None)["schedule"],
        "15 4 * * *"
    );

    // Pause clears the upcoming runs; resume brings them back; a source in use stays.
    assert_eq!(
        s.ok("POST", "/api/v1/plans/p/pause", None)["next_runs"],
        json!([])
    );
    assert_eq!(
        s.ok("POST", "/api/v1/plans/p/resume", None)["next_runs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(s.call("DELETE", "/api/v1/sources/files", None).0, 409);

    // With no workers here, a run stays queued and can be cancelled.
    let j = s.ok("POST", "/api/v1/plans/p/run", None);
    let c = s.ok("POST", &format!("/api/v1/jobs/{}/cancel", j["id"]), None);
    assert_eq!(c["state"], "cancelled");
    assert_eq!(
        s.call("POST", &format!("/api/v1/jobs/{}/cancel", j["id"]), None)
            .0,
        409
    );
    let jobs = s.ok("GET", "/api/v1/jobs?plan=p&state=cancelled", None);
    assert_eq!(jobs.as_array().unwrap().len(), 1);
}

#[test]
fn backup_and_restore_postgres_over_http_sqlite_store() {
    backup_and_restore_postgres_over_http(Meta::Sqlite);
}

#[test]
fn backup_and_restore_postgres_over_http_postgres_store() {
    backup_and_restore_postgres_over_http(Meta::postgres());
}

#[test]
fn the_api_names_bad_fields_and_guards_concurrent_edits_sqlite_store() {
    the_api_names_bad_fields_and_guards_concurrent_edits(Meta::Sqlite);
}

#[test]
fn the_api_names_bad_fields_and_guards_concurrent_edits_postgres_store() {
    the_api_names_bad_fields_and_guards_concurrent_edits(Meta::postgres());
}

/// Values that are well-formed but could never work are refused with a 422 naming the field:
/// retries that would wait for ages or go on for ever, schedules that never fire, and URLs,
/// labels, commands and hook scripts too long to be used (a hook over 128 KiB cannot even be
/// started by `sh -c`).
#[test]
fn the_api_refuses_values_that_could_never_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "files", "kind": "folder", "url": "file:///srv/files"})),
    );
    let base = json!({"name": "p", "source": "files", "endpoint": "local", "schedule": "@daily"});
    let refused = |path: &str, body: &Value| -> Vec<(String, String)> {
        let (code, v) = s.call("POST", path, Some(body));
        assert_eq!(code, 422, "{body} was accepted: {v}");
        v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let text = |k: &str| f[k].as_str().unwrap().to_string();
                (text("field"), text("reason"))
            })
            .collect()
    };
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };

    let e = refused(
        "/api/v1/plans",
        &with(
            "retry",
            json!({"attempts": 5, "base_secs": u64::MAX, "cap_secs": u64::MAX}),
        ),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "retry.base_secs");
    assert!(e[0].1.contains("1 to 86400 seconds"), "{e:?}");
    let e = refused(
        "/api/v1/plans",
        &with(
            "retry",
            json!({"attempts": u32::MAX, "base_secs": 30, "cap_secs": 1800}),
        ),
    );
    assert_eq!(e[0].0, "retry.attempts", "{e:?}");
    assert!(e[0].1.contains("1 to 100"), "{e:?}");

    // The 30th of February: a plan that would never run, an endpoint never pruned.
    let e = refused("/api/v1/plans", &with("schedule", json!("0 0 30 2 *")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "schedule");
    assert!(e[0].1.contains("never fires"), "{e:?}");
    let e = refused(
        "/api/v1/endpoints",
        &json!({"name": "e", "kind": "local", "url": dir.path().join("e"),
                "password": "pw", "prune_schedule": "0 4 30 2 *"}),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "prune_schedule");
    assert!(e[0].1.contains("never fires"), "{e:?}");

    // A megabyte where a line is expected.
    let mb = "x".repeat(1 << 20);
    let e = refused(
        "/api/v1/plans",
        &with(
            "hooks",
            json!({"pre_backup_check": {"run": format!("#{mb}")}}),
        ),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "hooks.pre_backup_check.run");
    assert!(e[0].1.contains("at most 65536 bytes"), "{e:?}");
    let e = refused(
        "/api/v1/sources",
        &json!({"name": "big", "kind": "folder", "url": format!("file:///{mb}")}),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "url");
    assert!(e[0].1.contains("at most 2048 bytes"), "{e:?}");
    let e = refused(
        "/api/v1/sources",
        &json!({"name": "big", "kind": "command", "url": "cmd:big", "command": format!("#{mb}")}),
    );
    assert_eq!((e.len(), e[0].0.as_str()), (1, "command"), "{e:?}");
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let e = refused(
        "/api/v1/sources",
        &json!({"name": "big", "kind": "folder", "url": "file:///srv/files", "labels": many}),
    );
    assert_eq!(e[0].0, "labels", "{e:?}");
    assert!(e[0].1.contains("at most 32"), "{e:?}");
    let e = refused(
        "/api/v1/sources",
        &json!({"name": "big", "kind": "folder", "url": "file:///srv/files",
                "labels": {"site": "v".repeat(256)}}),
    );
    assert_eq!(e[0].0, "labels", "{e:?}");
    assert!(e[0].1.contains("`site`"), "{e:?}");
    let e = refused(
        "/api/v1/endpoints",
        &json!({"name": "e", "kind": "local", "url": format!("/{mb}"), "password": "pw"}),
    );
    assert_eq!((e.len(), e[0].0.as_str()), (1, "url"), "{e:?}");

    // Nothing was stored; the same plan with sane values is.
    assert_eq!(s.call("GET", "/api/v1/plans/p", None).0, 404);
    assert_eq!(s.call("GET", "/api/v1/endpoints/e", None).0, 404);
    assert_eq!(s.call("GET", "/api/v1/sources/big", None).0, 404);
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&with(
            "retry",
            json!({"attempts": 100, "base_secs": 86400, "cap_secs": 604800}),
        )),
    );
}

/// kill -9 the server with one job running and one queued: after a restart both complete, the
/// dead attempt leaves no restore point, and the repository checks clean.
#[test]
fn a_killed_server_loses_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::Sqlite;
    let args = ["--workers", "1", "--lease-secs", "2"];
    let mut s = Server::start(dir.path(), &meta, &args);
    let gate = dir.path().join(unique("gate"));
    // A dump that waits for the test's signal, so the kill lands mid-backup.
    let slow = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo slow-payload",
        gate.display()
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "slow", "kind": "command", "url": "cmd:slow.txt", "command": slow})),
    );
    s.ok("POST", "/api/v1/sources", Some(&json!({"name": "quick", "kind": "command", "url": "cmd:quick.txt", "command": "echo quick-payload"})));
    for (plan, src) in [("slow", "slow"), ("quick", "quick")] {
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(
                &json!({"name": plan, "source": src, "endpoint": "local", "schedule": "@yearly",
            "retry": {"attempts": 3, "base_secs": 1, "cap_secs": 2}}),
            ),
        );
    }
    let a = s.ok("POST", "/api/v1/plans/slow/run", None)["id"]
        .as_i64()
        .unwrap();
    s.wait_job(a, |st| st == "running");
    let b = s.ok("POST", "/api/v1/plans/quick/run", None)["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        s.ok("GET", &format!("/api/v1/jobs/{b}"), None)["state"],
        "queued",
        "one worker, busy"
    );

    s.kill9();
    std::fs::write(&gate, b"").unwrap();
    let s = Server::start(dir.path(), &meta, &args);
    let ja = s.wait_job(a, |st| st == "succeeded" || st == "failed");
    let jb = s.wait_job(b, |st| st == "succeeded" || st == "failed");
    assert_eq!(
        (ja["state"].as_str(), jb["state"].as_str()),
        (Some("succeeded"), Some("succeeded")),
        "{ja}\n{jb}"
    );
    assert_eq!(ja["attempt"], 2, "the killed attempt was retried: {ja}");
    let lines = ja["log"].to_string();
    assert!(lines.contains("stopped renewing its lease"), "{lines}");

    let points = s.ok("GET", "/api/v1/restore-points?plan=slow", None);
    assert_eq!(
        points.as_array().unwrap().len(),
        1,
        "no partial restore point: {points}"
    );
    assert_eq!(points[0]["id"], ja["snapshot_id"]);
    let dump = s.restic(&[
        "dump",
        ja["snapshot_id"].as_str().unwrap(),
        "/command/slow.txt",
    ]);
    assert_eq!(dump, "slow-payload\n");
    s.restic(&["check"]);
}

/// Cancelling a running backup stops its dump and saves no restore point.
#[test]
fn a_cancelled_running_backup_leaves_no_restore_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "1"]);
    // A dump that never ends on its own, writing as it goes.
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "endless", "kind": "command", "url": "cmd:endless.txt",
        "command": "while true; do echo row; sleep 0.01; done"}),
        ),
    );
    s.ok("POST", "/api/v1/plans", Some(&json!({"name": "endless", "source": "endless", "endpoint": "local", "schedule": "@yearly"})));
    let id = s.ok("POST", "/api/v1/plans/endless/run", None)["id"]
        .as_i64()
        .unwrap();
    s.wait_job(id, |st| st == "running");
    let c = s.ok("POST", &format!("/api/v1/jobs/{id}/cancel"), None);
    assert_eq!(c["cancel_requested"], true);
    let j = s.wait_job(id, |st| st != "running");
    assert_eq!(j["state"], "cancelled", "{j}");
    assert!(j["snapshot_id"].is_null());
    let points = s.ok("GET", "/api/v1/restore-points?plan=endless", None);
    assert_eq!(points, json!([]));
    s.restic(&["check"]);
}

impl Server {
    /// `holdfast apply`/`export` against this server: (exit code, stdout, stderr).
    pub(crate) fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(args)
            .env("HOLDFAST_SERVER", &self.url)
            .env("HOLDFAST_TOKEN", TOKEN)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn version(&self, path: &str) -> i64 {
        self.ok("GET", path, None)["version"].as_i64().unwrap()
    }
}

#[test]
fn apply_creates_updates_and_is_idempotent_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let repo = dir.path().join("offsite");
    let pw_file = dir.path().join("db.pass");
    std::fs::write(&pw_file, format!("{DB_PASSWORD}\n")).unwrap();
    let repo_pw = "offsite-repo-password-never-shown";
    let file = dir.path().join("holdfast.toml");
    let config = |schedule: &str| {
        format!(
            r#"
[endpoints.offsite]
kind = "local"
url = "{repo}"
password = {{ env = "OFFSITE_PW" }}
prune_schedule = "@monthly"

[sources.shop]
kind = "postgres"
url = "postgres://backup@127.0.0.1:5432/shop?sslmode=disable"
password = {{ file = "{pw}" }}
labels = {{ site = "eu" }}

[plans.shop-nightly]
source = "shop"
endpoint = "offsite"
schedule = "{schedule}"
timezone = "Europe/Berlin"
retention = {{ style = "gfs", daily = 7, weekly = 4 }}
"#,
            repo = repo.display(),
            pw = pw_file.display()
        )
    };
    let f = file.to_str().unwrap();
    let env = [("OFFSITE_PW", repo_pw)];

    // First apply creates all three, in dependency order.
    std::fs::write(&file, config("0 3 * * *")).unwrap();
    let (code, out, err) = s.cli(&["apply", "-f", f], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ endpoint offsite"), "{out}");
    assert!(out.contains("+ source shop"), "{out}");
    assert!(out.contains("+ plan shop-nightly"), "{out}");
    assert!(
        out.contains("endpoint local is on the server but not in the file; kept"),
        "{out}"
    );
    assert!(
        out.contains("3 created, 0 changed, 0 unchanged, 0 deleted"),
        "{out}"
    );
    let plan = s.ok("GET", "/api/v1/plans/shop-nightly", None);
    assert_eq!(plan["schedule"], "0 3 * * *");
    assert_eq!(plan["retention"]["daily"], 7);
    let src = s.ok("GET", "/api/v1/sources/shop", None);
    assert_eq!(src["labels"]["site"], "eu");
    assert_eq!(src["password_set"], true);
    // The endpoint's password came from the environment: restic opens the repository with it.
    let t = s.ok("POST", "/api/v1/endpoints/offsite/test", None);
    assert_eq!(t["ok"], true, "{t}");
    let restic = Command::new("restic")
        .arg("-r")
        .arg(&repo)
        .args(["--no-cache", "cat", "config"])
        .env("RESTIC_PASSWORD", repo_pw)
        .output()
        .unwrap();
    assert!(restic.status.success(), "{restic:?}");

    // Again: nothing changes, not even a version.
    let versions = |s: &Server| {
        [
            s.version("/api/v1/endpoints/offsite"),
            s.version("/api/v1/sources/shop"),
            s.version("/api/v1/plans/shop-nightly"),
        ]
    };
    let before = versions(&s);
    let (code, out, _) = s.cli(&["apply", "-f", f], &env);
    assert_eq!(code, 0);
    assert!(out.contains("0 created, 0 changed, 3 unchanged"), "{out}");
    assert_eq!(versions(&s), before);

    // A dry run shows the change and makes none; the real run makes it.
    std::fs::write(&file, config("30 4 * * *")).unwrap();
    let (code, out, _) = s.cli(&["apply", "-f", f, "--dry-run"], &env);
    assert_eq!(code, 0);
    assert!(
        out.contains(r#"~ plan shop-nightly (dry run): schedule: "0 3 * * *" → "30 4 * * *""#),
        "{out}"
    );
    assert_eq!(versions(&s), before);
    let (_, out, _) = s.cli(&["apply", "-f", f], &env);
    assert!(out.contains("0 created, 1 changed, 2 unchanged"), "{out}");
    let plan = s.ok("GET", "/api/v1/plans/shop-nightly", None);
    assert!(
        plan["next_runs"][0].as_str().unwrap().contains("T04:30:00"),
        "{plan}"
    );

    // Export: the same resources, secrets as references only.
    let (code, exported, err) = s.cli(&["export"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(exported.contains("[plans.shop-nightly]"), "{exported}");
    assert!(
        exported.contains(r#"schedule = "30 4 * * *""#),
        "{exported}"
    );
    assert!(
        exported.contains(r#"password = { env = "HOLDFAST_ENDPOINT_OFFSITE_PASSWORD" }"#),
        "{exported}"
    );
    assert!(!exported.contains(repo_pw) && !exported.contains(DB_PASSWORD));
    // Applied back with none of its variables set, it changes nothing: stored secrets stay.
    let exported_file = dir.path().join("exported.toml");
    std::fs::write(&exported_file, &exported).unwrap();
    let before = versions(&s);
    let (code, out, err) = s.cli(&["apply", "-f", exported_file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 created, 0 changed, 4 unchanged"), "{out}");
    assert!(
        out.contains("HOLDFAST_SOURCE_SHOP_PASSWORD is not set; kept the stored value"),
        "{out}"
    );
    assert_eq!(versions(&s), before);

    // Mistakes name the resource and the field, and change nothing.
    std::fs::write(
        &file,
        config("0 3 * * *").replace("Europe/Berlin", "Mars/Olympus"),
    )
    .unwrap();
    let (code, _, err) = s.cli(&["apply", "-f", f], &env);
    assert_ne!(code, 0);
    assert!(
        err.contains("plan shop-nightly") && err.contains("timezone"),
        "{err}"
    );
    let fresh = config("0 3 * * *").replace("[endpoints.offsite]", "[endpoints.other]");
    std::fs::write(
        &file,
        fresh.replace("endpoint = \"offsite\"", "endpoint = \"other\""),
    )
    .unwrap();
    let (code, _, err) = s.cli(&["apply", "-f", f], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("endpoints.other.password") && err.contains("OFFSITE_PW is not set"),
        "{err}"
    );
    let (code, _, err) = s.cli(&["apply", "-f", f], &[("HOLDFAST_TOKEN", "hf_wrong")]);
    assert_ne!(code, 0);
    assert!(err.contains("token was refused"), "{err}");
    assert_eq!(versions(&s), before);

    // --prune deletes what the file no longer names (plans first), and nothing else.
    std::fs::write(
        &file,
        format!(
            "[endpoints.offsite]\nkind = \"local\"\nurl = \"{}\"\nprune_schedule = \"@monthly\"\n",
            repo.display()
        ),
    )
    .unwrap();
    let (code, out, err) = s.cli(&["apply", "-f", f, "--prune"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("- plan shop-nightly") && out.contains("- source shop"),
        "{out}"
    );
    assert!(out.contains("- endpoint local"), "{out}");
    assert_eq!(s.call("GET", "/api/v1/plans/shop-nightly", None).0, 404);
    assert_eq!(
        s.ok("GET", "/api/v1/endpoints", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(!s.log().contains(repo_pw) && !s.log().contains(DB_PASSWORD));
}
