//! Restore drills through a real `holdfast serve`: a plan's drill runs on its agent (the
//! embedded one here) against the machine's real PostgreSQL binaries, its report is kept, the
//! restore point shows it, metrics count it, and a failed drill alerts exactly once, to a
//! webhook receiver this test runs on loopback.

use serde_json::{Value, json};

use std::process::Command;

use crate::alerts::{Receiver, wait_for};
use crate::helpers::PgDb;
use crate::server::{Meta, Server, TOKEN};

/// A signed-in browser session of the UI, over plain HTTP (curl with a cookie jar).
struct Ui {
    url: String,
    jar: String,
}

impl Ui {
    fn sign_in(s: &Server, dir: &std::path::Path) -> Self {
        let jar = dir.join("ui-cookies").display().to_string();
        let ui = Self {
            url: s.url.clone(),
            jar,
        };
        let form = ui.get("/ui/login");
        let csrf = csrf_of(&form);
        let (code, _) = ui.post("/ui/login", &format!("token={TOKEN}&csrf={csrf}"));
        assert_eq!(code, "303", "sign-in");
        ui
    }

    fn get(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-s", "-b", &self.jar, "-c", &self.jar])
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (status, where it redirects).
    fn post(&self, path: &str, form: &str) -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
            ])
            .args(["-b", &self.jar, "-c", &self.jar, "-d", form])
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, to) = text.split_once(' ').unwrap_or((&text, ""));
        (code.to_string(), to.to_string())
    }
}

fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string()
}

fn finished(st: &str) -> bool {
    !matches!(st, "queued" | "running")
}

/// A backup of plan `plan` now; its restore point.
pub(crate) fn backup(s: &Server, plan: &str) -> String {
    let id = s.ok("POST", &format!("/api/v1/plans/{plan}/run"), None)["id"]
        .as_i64()
        .unwrap();
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", s.log());
    j["snapshot_id"].as_str().unwrap().to_string()
}

/// A drill of `plan` now, to its end: (the job, its report).
fn drill(s: &Server, plan: &str) -> (Value, Value) {
    let job = s.ok("POST", &format!("/api/v1/plans/{plan}/verify"), None);
    assert_eq!(job["kind"], "verify", "{job}");
    let id = job["id"].as_i64().unwrap();
    let j = s.wait_job(id, finished);
    let report = s.ok("GET", &format!("/api/v1/jobs/{id}/drill"), None);
    (j, report)
}

fn point<'a>(points: &'a Value, id: &str) -> &'a Value {
    points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no restore point {id} in {points}"))
}

#[test]
fn a_plans_drill_runs_on_its_agent_and_its_result_shows_on_the_restore_point_and_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let db = PgDb::new();
    db.pgbench(1);
    let before = db.checksums();
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "shop", "kind": "postgres", "url": db.url()})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "shop", "source": "shop", "endpoint": "local", "schedule": "@daily",
            "verify": {"schedule": "0 5 * * *", "timezone": "Europe/Berlin", "rto_target_secs": 600,
                "checks": [{"name": "all accounts", "sql": "select count(*) from pgbench_accounts", "expect": "= 100000"}]}})),
    );
    let snap = backup(&s, "shop");

    let (job, report) = drill(&s, "shop");
    assert_eq!(job["state"], "succeeded", "{job}\n{report:#}\n{}", s.log());
    assert_eq!(job["snapshot_id"], snap.as_str());
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["snapshot"], snap.as_str());
    let checks = report["checks"].as_array().unwrap();
    let find = |kind: &str, name: &str| {
        checks
            .iter()
            .find(|c| c["kind"] == kind && c["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} check {name}: {report:#}"))
    };
    assert_eq!(
        find("rows", "public.pgbench_accounts")["actual"],
        "100000 rows"
    );
    assert_eq!(find("sql", "all accounts")["passed"], true);
    assert_eq!(find("rto", "recovery time")["expected"], "at most 600 s");
    assert!(
        report["scratch"]
            .as_str()
            .unwrap()
            .contains("throwaway PostgreSQL")
    );
    // The report for audits, as text.
    let (code, text) = s.call(
        "GET",
        &format!("/api/v1/jobs/{}/drill?format=text", job["id"]),
        None,
    );
    assert_eq!(code, 200);
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("Result:    PASSED") && text.contains("all accounts"),
        "{text}"
    );

    // The restore point says it was proven, with its recovery time.
    let points = s.ok("GET", "/api/v1/restore-points?plan=shop", None);
    let v = &point(&points, &snap)["verification"];
    assert_eq!(v["passed"], true, "{points:#}");
    assert_eq!(v["job"], job["id"]);
    assert!(v["rto_secs"].as_f64().unwrap() > 0.0);
    // The plan's drills, its newest, and the next scheduled one (05:00 in Berlin).
    let drills = s.ok("GET", "/api/v1/plans/shop/drills", None);
    assert_eq!(drills.as_array().unwrap().len(), 1, "{drills}");
    let plan = s.ok("GET", "/api/v1/plans/shop", None);
    assert_eq!(plan["last_drill"]["job"], job["id"], "{plan:#}");
    let next = plan["next_drill"].as_str().unwrap();
    assert!(
        next.ends_with("T04:00:00Z") || next.ends_with("T03:00:00Z"),
        "05:00 in Berlin is 04:00 or 03:00 UTC: {next}"
    );

    let (_, metrics) = s.call("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("holdfast_verify_runs_total{plan=\"shop\",status=\"passed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("holdfast_verify_rto_seconds{plan=\"shop\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("holdfast_verify_last_success_timestamp_seconds{plan=\"shop\"}"),
        "{metrics}"
    );
    // The UI: the plan's badge and its restore point's, a drill run from the page, the report
    // to download.
    let ui = Ui::sign_in(&s, dir.path());
    let page = ui.get("/ui/plans/shop");
    assert!(page.contains("id=\"last-drill\""), "{page}");
    assert!(page.contains("verified <time"), "{page}");
    assert!(page.contains("Run drill now"), "{page}");
    let (code, to) = ui.post("/ui/plans/shop/verify", &format!("csrf={}", csrf_of(&page)));
    assert_eq!(code, "303", "{to}");
    let id: i64 = to.rsplit('/').next().unwrap().parse().unwrap();
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}");
    let job_page = ui.get(&format!("/ui/jobs/{id}"));
    assert!(job_page.contains("id=\"drill-report\""), "{job_page}");
    let text = ui.get(&format!("/ui/jobs/{id}/drill?format=text"));
    assert!(text.starts_with("Restore drill of restore point"), "{text}");
    let (code, _) = ui.post("/ui/plans/shop/verify", "csrf=forged");
    assert_eq!(code, "403");

    // Nothing was written to the source.
    assert_eq!(db.checksums(), before);
}

#[test]
fn a_failed_drill_fails_its_job_marks_the_restore_point_and_alerts_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let hook = Receiver::start();
    s.ok(
        "POST",
        "/api/v1/notifiers",
        Some(
            &json!({"name": "hook", "kind": "webhook", "url": format!("{}/holdfast", hook.url),
            "secret": "drill-hook-secret"}),
        ),
    );
    let db = PgDb::new();
    db.pgbench(10);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "shop", "kind": "postgres", "url": db.url()})),
    );
    // A check that does not hold: pgbench's balances all start at 0.
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "wrong", "source": "shop", "endpoint": "local", "schedule": "@daily",
            "alerts": {"notify": [{"notifier": "hook"}]},
            "verify": {"checks": [{"sql": "select count(*) from pgbench_accounts where abalance <> 0", "expect": "> 0"}]}})),
    );
    // A recovery time target no restore of a million rows meets.
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "slow", "source": "shop", "endpoint": "local", "schedule": "@daily",
            "alerts": {"notify": [{"notifier": "hook"}]},
            "verify": {"rto_target_secs": 1}}),
        ),
    );
    let snap = backup(&s, "wrong");
    backup(&s, "slow");

    let (job, report) = drill(&s, "wrong");
    assert_eq!(job["state"], "failed", "{job}");
    // A finding is not retried: one attempt.
    assert_eq!(job["attempt"], 1, "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("sql check"),
        "{job}"
    );
    assert_eq!(report["passed"], false);
    let points = s.ok("GET", "/api/v1/restore-points?plan=wrong", None);
    assert_eq!(
        point(&points, &snap)["verification"]["passed"],
        false,
        "{points:#}"
    );

    let (job, report) = drill(&s, "slow");
    assert_eq!(job["state"], "failed", "{job}\n{report:#}");
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["kind"], "rto");

    // One event per failed drill: a failure, and a breach of the recovery time target.
    wait_for(
        60,
        || hook.events().len() >= 2,
        || format!("{:?}\n{}", hook.events(), s.log()),
    );
    let events: Vec<Value> = hook
        .got()
        .iter()
        .map(|r| r.json())
        .filter(|j| {
            j["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("verify."))
        })
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    let failed = events
        .iter()
        .find(|e| e["event"] == "verify.failed")
        .unwrap();
    assert_eq!(failed["plan"], "wrong");
    assert_eq!(failed["snapshot_id"], snap.as_str());
    assert!(
        failed["text"].as_str().unwrap().contains("sql check"),
        "{failed}"
    );
    let breach = events
        .iter()
        .find(|e| e["event"] == "verify.rto_breach")
        .unwrap();
    assert_eq!(breach["plan"], "slow");
    assert!(
        breach["text"].as_str().unwrap().contains("target of 1 s"),
        "{breach}"
    );

    let (_, metrics) = s.call("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("holdfast_verify_runs_total{plan=\"wrong\",status=\"failed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_drill_section_that_makes_no_sense_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let data = tempfile::tempdir().unwrap();
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "files", "kind": "folder", "url": format!("file://{}", data.path().display())})),
    );
    for (verify, field, says) in [
        (
            json!({"schedule": "0 0 5 * * *"}),
            "verify.schedule",
            "5 fields",
        ),
        (
            json!({"schedule": "@daily", "timezone": "Mars/Olympus"}),
            "verify.timezone",
            "Mars/Olympus",
        ),
        (
            json!({"rto_target_secs": 0}),
            "verify.rto_target_secs",
            "never be met",
        ),
        (
            json!({"random_of_last": 0}),
            "verify.random_of_last",
            "out of range",
        ),
        (
            json!({"mode": "check", "checks": [{"sql": "select 1", "expect": "1"}]}),
            "verify.checks",
            "restores nothing",
        ),
        (
            json!({"checks": [{"sql": "select 1", "expect": "> lots"}]}),
            "verify.checks[0]",
            "not a number",
        ),
        (json!({"mode": "sometimes"}), "verify.mode", "sometimes"),
        (
            json!({"into": "nope"}),
            "verify.into",
            "no source named `nope`",
        ),
        (
            json!({"into": "files"}),
            "verify.into",
            "PostgreSQL or MariaDB server only",
        ),
        (
            json!({"mode": "check", "into": "files"}),
            "verify.into",
            "restores nothing",
        ),
    ] {
        let (code, body) = s.call(
            "POST",
            "/api/v1/plans",
            Some(&json!({"name": "p", "source": "files", "endpoint": "local", "schedule": "@daily", "verify": verify})),
        );
        assert_eq!(code, 422, "{verify}: {body}");
        let text = body.to_string();
        assert!(
            text.contains(field) && text.contains(says),
            "{verify}: {text}"
        );
    }
    // Nothing was created.
    let (code, _) = s.call("GET", "/api/v1/plans/p", None);
    assert_eq!(code, 404);
}

#[test]
fn a_plans_scratch_server_is_never_its_source_and_keeps_nothing_of_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let db = PgDb::new();
    db.pgbench(1);
    let before = db.checksums();
    let source = |name: &str, url: &str| {
        s.ok(
            "PUT",
            &format!("/api/v1/sources/{name}"),
            Some(&json!({"name": name, "kind": "postgres", "url": url})),
        );
    };
    source("shop", &db.url());
    // The same database under another name of this host, and a scratch database beside it.
    source(
        "shop-again",
        &db.url().replace("127.0.0.1:5432", "localhost"),
    );
    source("scratch", "postgres://postgres@127.0.0.1:5432/postgres");
    let plan = |into: &str| {
        json!({"name": "shop", "source": "shop", "endpoint": "local", "schedule": "@daily",
            "verify": {"into": into,
                "checks": [{"sql": "select count(*) from pgbench_accounts", "expect": "= 100000"}]}})
    };
    let (code, body) = s.call("POST", "/api/v1/plans", Some(&plan("shop-again")));
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "verify.into", "{body}");
    let reason = body["fields"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("the plan's own server and database") && reason.contains("shop-again"),
        "{reason}"
    );
    s.ok("POST", "/api/v1/plans", Some(&plan("scratch")));
    let snap = backup(&s, "shop");

    let (job, report) = drill(&s, "shop");
    assert_eq!(job["state"], "succeeded", "{job}\n{report:#}\n{}", s.log());
    assert_eq!(report["snapshot"], snap.as_str());
    let scratch = report["scratch"].as_str().unwrap();
    assert!(
        scratch.contains("scratch PostgreSQL") && scratch.contains("127.0.0.1:5432"),
        "{report:#}"
    );
    let sql = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "sql")
        .unwrap_or_else(|| panic!("no SQL check: {report:#}"));
    assert_eq!(sql["passed"], true, "{report:#}");
    // The drill's own database is gone, and the source is as it was.
    let left = PgDb::psql_cmd("postgres")
        .arg("-c")
        .arg(format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '{}_drill_%'",
            db.name
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "0");
    assert_eq!(db.checksums(), before);

    // The scratch source is in use, and once it points at the plan's own database, the next
    // drill is refused before anything runs.
    let (code, body) = s.call("DELETE", "/api/v1/sources/scratch", None);
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("verify.into"), "{body}");
    source("scratch", &db.url());
    let id = s.ok("POST", "/api/v1/plans/shop/verify", None)["id"]
        .as_i64()
        .unwrap();
    let job = s.wait_job(id, finished);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("verify.into") && error.contains("own server and database"),
        "{error}"
    );
    assert_eq!(db.checksums(), before);
}

/// Whether `pid` runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn an_agent_killed_mid_drill_cleans_up_at_its_next_start_and_the_drill_is_tried_again() {
    use crate::agents::{Agent, wait_agents};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--lease-secs", "2"]);
    let db = PgDb::new();
    db.pgbench(10);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "shop", "kind": "postgres", "url": db.url(), "labels": {"site": "db1"}})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "p", "source": "shop", "endpoint": "local", "schedule": "@daily"})),
    );
    // Where the agents' drills make their throwaway servers (outside the server's private
    // data directory, which the `postgres` user cannot pass through).
    let tmp = tempfile::tempdir().unwrap();
    let drills = tmp.path().join("drills");
    let drills_s = drills.display().to_string();
    let env = [("HOLDFAST_DRILL_DIR", drills_s.as_str())];
    let mut first = Agent::start_with_env(&s, "db1", &["site=db1"], TOKEN, &env);
    wait_agents(&s, &["db1"]);
    backup(&s, "p");
    let id = s.ok("POST", "/api/v1/plans/p/verify", None)["id"]
        .as_i64()
        .unwrap();
    // Mid-drill: its throwaway PostgreSQL runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let server_pid: u32 = loop {
        let pid = std::fs::read_dir(&drills).ok().and_then(|rd| {
            rd.flatten()
                .find_map(|e| std::fs::read_to_string(e.path().join("server")).ok())
        });
        let pid = pid.and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        if pid != 0 && running(pid) {
            break pid;
        }
        let j = s.ok("GET", &format!("/api/v1/jobs/{id}"), None);
        assert!(
            std::time::Instant::now() < deadline && !finished(j["state"].as_str().unwrap()),
            "no throwaway server appeared: {j:#}\n{}",
            first.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    first.kill9();
    assert!(
        running(server_pid),
        "the throwaway server outlives its agent"
    );

    let second = Agent::start_with_env(&s, "db1b", &["site=db1"], TOKEN, &env);
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", second.log());
    assert_eq!(j["attempt"], 2, "{j}");
    assert!(
        second
            .log()
            .contains("leftovers of an interrupted restore drill"),
        "{}",
        second.log()
    );
    crate::agents::wait_for("the killed drill's server to be gone", || {
        !running(server_pid)
    });
    let left: Vec<_> = std::fs::read_dir(&drills)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let report = s.ok("GET", &format!("/api/v1/jobs/{id}/drill"), None);
    assert_eq!(report["passed"], true, "{report:#}");
}
