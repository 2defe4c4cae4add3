//! `holdfast agent` as users run it: real agent processes next to a real server on loopback,
//! backing up and restoring the machine's PostgreSQL, with the plan's hooks as shell scripts
//! that write what they saw to a trace file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::PgDb;
use crate::server::{Meta, Server, TOKEN};

const DB_PASSWORD: &str = "agent-pw-that-must-never-show";

pub(crate) struct Agent {
    child: Child,
    /// Holds its credential file.
    state: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// The thread reading its stderr into `log`.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    pub(crate) fn start(s: &Server, name: &str, labels: &[&str], token: &str) -> Self {
        Self::start_with_env(s, name, labels, token, &[])
    }

    /// An agent whose process has `env` in its environment too.
    pub(crate) fn start_with_env(
        s: &Server,
        name: &str,
        labels: &[&str],
        token: &str,
        env: &[(&str, &str)],
    ) -> Self {
        // The admin's token is no agent's: enrol with a token made for this agent.
        let enrolment;
        let token = if token == TOKEN {
            let bound: serde_json::Map<String, Value> = labels
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_string(), json!(v))
                })
                .collect();
            enrolment = s.ok(
                "POST",
                "/api/v1/enrolments",
                Some(&json!({"agent": name, "labels": bound})),
            )["token"]
                .as_str()
                .unwrap()
                .to_string();
            enrolment.as_str()
        } else {
            token
        };
        let state = tempfile::tempdir().unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.envs(env.iter().copied());
        c.args([
            "agent",
            "--server",
            &s.url,
            "--name",
            name,
            "--poll-secs",
            "1",
            "--allow-hook-scripts",
            "--allow-commands",
        ])
        .arg("--allow-path")
        .arg(std::env::temp_dir())
        .arg("--credential-file")
        .arg(state.path().join("agent.credential"));
        for l in labels {
            c.args(["--label", l]);
        }
        c.env("HOLDFAST_TOKEN", token)
            .env_remove("HOLDFAST_TOKEN_FILE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self {
            child,
            state,
            log,
            reader: Some(reader),
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The credential its enrolment gave it.
    fn credential(&self) -> String {
        std::fs::read_to_string(self.state.path().join("agent.credential"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub(crate) fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Waits for the agent to exit on its own; its exit code.
    fn wait_exit(&mut self) -> i32 {
        let log = self.log.clone();
        let code = crate::helpers::wait_exit(&mut self.child, || {
            format!("agent did not exit:\n{}", log.lock().unwrap())
        })
        .code()
        .unwrap_or(-1);
        // Its last lines are read to the end of its stderr before anyone looks at them.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        code
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_agents(s: &Server, names: &[&str]) {
    wait_for("the agents to register", || {
        let a = s.ok("GET", "/api/v1/agents", None);
        names.iter().all(|n| {
            a.as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == *n && x["online"] == true)
        })
    });
}

/// A hook that appends `STEP attempt=N ...` to `trace` and says hello in the job log.
fn tracer(trace: &Path) -> String {
    format!(
        "echo \"$HOLDFAST_STEP attempt=$HOLDFAST_ATTEMPT db=$HOLDFAST_SOURCE_DATABASE snap=$HOLDFAST_SNAPSHOT_ID pw=${{HOLDFAST_SOURCE_PASSWORD:+set}} work=$HOLDFAST_WORK_DIR\" >> {}; echo hook-says-hello; test -d \"$HOLDFAST_WORK_DIR\"",
        trace.display()
    )
}

fn trace_steps(trace: &Path) -> Vec<String> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            format!("{} {}", w.next().unwrap(), w.next().unwrap())
        })
        .collect()
}

pub(crate) fn finished(st: &str) -> bool {
    st != "queued" && st != "running"
}

fn steps_of(job: &Value) -> Vec<String> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let d = s["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!(
                "{}:{}:{}{d}",
                s["attempt"],
                s["step"].as_str().unwrap(),
                s["state"].as_str().unwrap()
            )
        })
        .collect()
}

pub(crate) fn log_of(job: &Value) -> String {
    job["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn agents_take_the_jobs_their_labels_select_and_run_the_hooks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let east = Agent::start(&s, "east", &["site=east"], TOKEN);
    let west = Agent::start(&s, "west", &["site=west", "disk=ssd"], TOKEN);
    wait_agents(&s, &["east", "west"]);

    let db = PgDb::new();
    db.pgbench(1);
    let before = db.checksums();
    for (name, site) in [("east-db", "east"), ("west-db", "west")] {
        s.ok(
            "POST",
            "/api/v1/sources",
            Some(&json!({"name": name, "kind": "postgres", "url": db.url(),
                         "password": DB_PASSWORD, "labels": {"site": site}})),
        );
    }
    let trace = dir.path().join("trace");
    let hook = json!({"run": tracer(&trace), "timeout_secs": 60});
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "east-plan", "source": "east-db", "endpoint": "local",
                     "schedule": "@daily",
                     "hooks": {"pre_backup_lock": hook, "pre_backup_check": hook,
                               "backup_cleanup": hook, "post_backup_unlock": hook,
                               "pre_restore_lock": hook, "restore_cleanup": hook,
                               "post_restore_unlock": hook}}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "west-plan", "source": "west-db", "endpoint": "local", "schedule": "@daily"})),
    );

    let e = s.ok("POST", "/api/v1/plans/east-plan/run", None);
    let w = s.ok("POST", "/api/v1/plans/west-plan/run", None);
    let e = s.wait_job(e["id"].as_i64().unwrap(), finished);
    let w = s.wait_job(w["id"].as_i64().unwrap(), finished);
    assert_eq!(e["state"], "succeeded", "{e}\n{}", east.log());
    assert_eq!(w["state"], "succeeded", "{w}\n{}", west.log());
    // The labels decided who ran what.
    assert_eq!(e["worker"], Value::Null, "the lease is released at the end");
    assert!(log_of(&e).contains("started on agent east"), "{e}");
    assert!(log_of(&w).contains("started on agent west"), "{w}");

    // The hooks ran in the OSB order, with the job's context, and spoke into the job log.
    let snap = e["snapshot_id"].as_str().unwrap();
    assert_eq!(
        trace_steps(&trace),
        [
            "pre-backup-lock attempt=1",
            "pre-backup-check attempt=1",
            "backup-cleanup attempt=1",
            "post-backup-unlock attempt=1"
        ]
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.contains(&format!("db={}", db.name)), "{text}");
    assert!(text.contains("pw=set"), "{text}");
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .contains(&format!("snap={snap}")),
        "cleanup sees the new restore point: {text}"
    );
    assert!(
        log_of(&e).contains("[pre-backup-lock] hook-says-hello"),
        "{e}"
    );
    assert_eq!(
        steps_of(&e),
        [
            "1:pre-backup-lock:succeeded",
            "1:pre-backup-check:succeeded",
            "1:backup:succeeded",
            "1:backup-cleanup:succeeded",
            "1:post-backup-unlock:succeeded",
            "1:released:succeeded"
        ]
    );
    // Each attempt's work directory is private and gone afterwards.
    let work = text.lines().next().unwrap().split("work=").nth(1).unwrap();
    assert!(!Path::new(work).exists(), "{work} left behind");

    // The server shows the agents with their labels and version.
    let agents = s.ok("GET", "/api/v1/agents", None);
    let west_view = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "west")
        .unwrap();
    assert_eq!(west_view["labels"], json!({"site": "west", "disk": "ssd"}));
    assert_eq!(west_view["version"], env!("CARGO_PKG_VERSION"));
    assert!(west_view["last_seen"].as_str().is_some());

    // A restore runs on the agent the target's labels select, with the restore lifecycle.
    std::fs::remove_file(&trace).unwrap();
    let target = PgDb::not_created();
    let r = s.ok(
        "POST",
        "/api/v1/restores",
        Some(&json!({"plan": "east-plan", "restore_point": snap, "database": target.name})),
    );
    let r = s.wait_job(r["id"].as_i64().unwrap(), finished);
    assert_eq!(r["state"], "succeeded", "{r}\n{}", east.log());
    assert!(log_of(&r).contains("started on agent east"), "{r}");
    assert_eq!(target.checksums(), before);
    assert!(r["bytes_written"].as_i64().unwrap() > 1_000_000, "{r}");
    assert!(r["duration_secs"].as_f64().is_some(), "{r}");
    assert_eq!(
        trace_steps(&trace),
        [
            "pre-restore-lock attempt=1",
            "restore-cleanup attempt=1",
            "post-restore-unlock attempt=1"
        ]
    );
    assert!(
        std::fs::read_to_string(&trace)
            .unwrap()
            .contains(&format!("db={}", target.name))
    );

    // The database password travels to the agents but shows nowhere.
    for l in [
        east.log(),
        west.log(),
        s.log(),
        e.to_string(),
        r.to_string(),
    ] {
        assert!(!l.contains(DB_PASSWORD));
    }
    let (_, doc) = s.call("GET", "/api/v1/openapi.json", None);
    assert!(doc["paths"].get("/api/v1/agents/{name}/claim").is_some());
}

#[test]
fn cleanup_and_unlock_run_after_a_failure_a_timeout_and_a_cancel_and_steps_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    // A remote agent runs a source on its own host (127.0.0.1) only when labels send it there.
    let agent = Agent::start(&s, "solo", &["host=solo"], TOKEN);
    wait_agents(&s, &["solo"]);
    let db = PgDb::new();
    db.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000);");
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "db", "kind": "postgres", "url": db.url(), "labels": {"host": "solo"}}),
        ),
    );
    let trace = dir.path().join("trace");
    let t = json!({"run": tracer(&trace)});
    let plan = |name: &str, check: Value, retry: Value| {
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(
                &json!({"name": name, "source": "db", "endpoint": "local", "schedule": "@daily",
                         "retry": {"attempts": 1},
                         "step_retry": retry,
                         "hooks": {"pre_backup_lock": t, "pre_backup_check": check,
                                   "backup_cleanup": t, "post_backup_unlock": t}}),
            ),
        );
    };
    let run = |name: &str| -> i64 {
        std::fs::remove_file(&trace).ok();
        s.ok("POST", &format!("/api/v1/plans/{name}/run"), None)["id"]
            .as_i64()
            .unwrap()
    };
    let locked_and_released = [
        "pre-backup-lock attempt=1",
        "backup-cleanup attempt=1",
        "post-backup-unlock attempt=1",
    ];

    // A check that says "do not retry" fails the job at once; cleanup and unlock still run.
    plan(
        "refuses",
        json!({"run": "echo nope >&2; exit 99"}),
        json!({}),
    );
    let j = s.wait_job(run("refuses"), finished);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("pre-backup-check hook exited with status 99"),
        "{j}"
    );
    assert_eq!(trace_steps(&trace), locked_and_released);
    assert!(log_of(&j).contains("[pre-backup-check] nope"), "{j}");
    let checks: Vec<String> = steps_of(&j)
        .into_iter()
        .filter(|x| x.contains("pre-backup-check"))
        .collect();
    assert_eq!(checks.len(), 1, "one try, no retries: {j}");
    assert!(
        checks[0].starts_with("1:pre-backup-check:failed"),
        "{checks:?}"
    );

    // A flaky check is retried with backoff within the attempt and then passes.
    let count = dir.path().join("count");
    let flaky = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
        c = count.display()
    );
    plan(
        "flaky",
        json!({"run": flaky}),
        json!({"attempts": 3, "base_ms": 50, "cap_ms": 200}),
    );
    let j = s.wait_job(run("flaky"), finished);
    assert_eq!(j["state"], "succeeded", "{j}");
    let checks: Vec<String> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["step"] == "pre-backup-check")
        .map(|x| format!("{}:{}", x["try_no"], x["state"].as_str().unwrap()))
        .collect();
    assert_eq!(checks, ["1:failed", "2:failed", "3:succeeded"], "{j}");
    assert!(log_of(&j).contains("trying again in"), "{j}");

    // A hook that hangs is killed at its timeout; cleanup and unlock run.
    plan(
        "hangs",
        json!({"run": "sleep 30", "timeout_secs": 1}),
        json!({"attempts": 1}),
    );
    let j = s.wait_job(run("hangs"), finished);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("timed out after 1 s"),
        "{j}"
    );
    assert_eq!(trace_steps(&trace), locked_and_released);

    // Cancelled while a hook runs: the hook is killed, cleanup and unlock run, no restore point.
    let started = dir.path().join("started");
    plan(
        "cancelled",
        json!({"run": format!("touch {}; sleep 60", started.display())}),
        json!({}),
    );
    let id = run("cancelled");
    wait_for("the check hook to start", || started.exists());
    s.ok("POST", &format!("/api/v1/jobs/{id}/cancel"), None);
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "cancelled", "{j}\n{}", agent.log());
    assert_eq!(j["snapshot_id"], Value::Null);
    assert_eq!(trace_steps(&trace), locked_and_released);
    let points = s.ok("GET", "/api/v1/restore-points?plan=cancelled", None);
    assert_eq!(points.as_array().unwrap().len(), 0, "{points}");
}

#[test]
fn a_job_whose_agent_is_killed_is_cleaned_up_and_finished_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &Meta::Sqlite,
        &["--workers", "0", "--lease-secs", "2"],
    );
    let mut first = Agent::start(&s, "first", &["site=x"], TOKEN);
    wait_agents(&s, &["first"]);
    let db = PgDb::new();
    db.pgbench(1);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "db", "kind": "postgres", "url": db.url(), "labels": {"site": "x"}})),
    );
    let trace = dir.path().join("trace");
    let t = json!({"run": tracer(&trace)});
    let in_check = dir.path().join("in-check");
    let check = format!(
        "{}; if [ \"$HOLDFAST_ATTEMPT\" = 1 ]; then touch {}; sleep 20; fi",
        tracer(&trace),
        in_check.display()
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "p", "source": "db", "endpoint": "local", "schedule": "@daily",
                     "retry": {"attempts": 3, "base_secs": 1, "cap_secs": 1},
                     "hooks": {"pre_backup_lock": t, "pre_backup_check": {"run": check},
                               "backup_cleanup": t, "post_backup_unlock": t}}),
        ),
    );
    let id = s.ok("POST", "/api/v1/plans/p/run", None)["id"]
        .as_i64()
        .unwrap();
    wait_for("the first attempt to reach its check", || in_check.exists());
    first.kill9();

    // Another agent takes the job over once the lease expires: it first runs the dead
    // attempt's cleanup and unlock, then a whole new attempt.
    let second = Agent::start(&s, "second", &["site=x"], TOKEN);
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", second.log());
    assert_eq!(j["attempt"], 2, "{j}");
    assert_eq!(
        trace_steps(&trace),
        [
            "pre-backup-lock attempt=1",
            "pre-backup-check attempt=1",
            "backup-cleanup attempt=1",
            "post-backup-unlock attempt=1",
            "pre-backup-lock attempt=2",
            "pre-backup-check attempt=2",
            "backup-cleanup attempt=2",
            "post-backup-unlock attempt=2",
        ]
    );
    let steps = steps_of(&j);
    assert!(
        steps.contains(&"1:released:succeeded".to_string()),
        "{steps:?}"
    );
    assert!(
        log_of(&j).contains("agent first stopped renewing its lease"),
        "{j}"
    );

    // One restore point, and the repository is clean for restic.
    let points = s.ok("GET", "/api/v1/restore-points?plan=p", None);
    assert_eq!(points.as_array().unwrap().len(), 1, "{points}");
    assert_eq!(points[0]["id"], j["snapshot_id"]);
    s.restic(&["check"]);
}

#[test]
fn an_agent_with_a_wrong_or_revoked_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let mut wrong = Agent::start(&s, "wrong", &[], "hf_not_a_token");
    assert_ne!(wrong.wait_exit(), 0);
    assert!(
        wrong.log().contains("refused the agent's credential"),
        "{}",
        wrong.log()
    );
    let agents = s.ok("GET", "/api/v1/agents", None);
    assert_eq!(agents.as_array().unwrap().len(), 0, "{agents}");

    // A user's API token is no agent's credential.
    let t = s.ok("POST", "/api/v1/tokens", Some(&json!({"name": "agent"})));
    let mut user = Agent::start(&s, "user-token", &[], t["token"].as_str().unwrap());
    assert_ne!(user.wait_exit(), 0);
    assert!(user.log().contains("enrol"), "{}", user.log());

    let mut agent = Agent::start(&s, "revoked", &[], TOKEN);
    wait_agents(&s, &["revoked"]);
    let credential = agent.credential();
    assert!(credential.starts_with("hf_agent_"), "{credential}");
    s.ok("POST", "/api/v1/agents/revoked/revoke", None);
    assert_ne!(agent.wait_exit(), 0);
    assert!(
        agent.log().contains("refused the agent's credential"),
        "{}",
        agent.log()
    );
}

/// kill -9 the server while an agent's backup runs, and start it again on the same address:
/// the agent keeps the dump going, holds its report while the server is away, and delivers it
/// when the server is back. The job succeeds in its first attempt.
#[test]
fn an_agent_finishes_its_backup_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--workers",
        "0",
        "--lease-secs",
        "60",
        "--listen",
        listen.as_str(),
    ];
    let mut s = Server::start(dir.path(), &Meta::Sqlite, &args);
    let agent = Agent::start(&s, "steady", &[], TOKEN);
    wait_agents(&s, &["steady"]);
    let gate = dir.path().join("gate");
    let started = dir.path().join("started");
    let slow = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo payload-across-restart",
        started.display(),
        gate.display()
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "slow", "kind": "command", "url": "cmd:slow.txt", "command": slow})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "slow", "source": "slow", "endpoint": "local", "schedule": "@yearly"}),
        ),
    );
    let id = s.ok("POST", "/api/v1/plans/slow/run", None)["id"]
        .as_i64()
        .unwrap();
    wait_for("the dump to start on the agent", || started.exists());
    s.kill9();
    // The dump ends while the server is down: the agent has a result and nobody to tell.
    std::fs::write(&gate, b"").unwrap();
    wait_for("the agent to find the server gone", || {
        agent.log().contains("trying again in")
    });
    let s = Server::start(dir.path(), &Meta::Sqlite, &args);
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", agent.log());
    assert_eq!(j["attempt"], 1, "{j}\n{}", agent.log());
    let dump = s.restic(&[
        "dump",
        j["snapshot_id"].as_str().unwrap(),
        "/command/slow.txt",
    ]);
    assert_eq!(dump, "payload-across-restart\n");
}

/// Datamung's pattern: a pre hook makes another connection (here: a second database standing
/// in for a temporary replica) and hands it to the dump through `$HOLDFAST_ENV_FILE`. And
/// hooks that replace the built-in driver: the backup hook's stdout is the backup, the restore
/// hook reads it back. Runs on the server's embedded agent.
#[test]
fn a_pre_hook_can_hand_over_a_connection_and_hooks_can_replace_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "1"]);
    let primary = PgDb::new();
    primary.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);");
    let replica = PgDb::new();
    replica.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 42);");
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "primary", "kind": "postgres", "url": primary.url()})),
    );
    let hand_over = format!(
        "echo \"HOLDFAST_SOURCE_URL={}\" > \"$HOLDFAST_ENV_FILE\"",
        replica.url()
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "handoff", "source": "primary", "endpoint": "local", "schedule": "@daily",
                     "hooks": {"pre_backup_lock": {"run": hand_over}}})),
    );
    let j = s.ok("POST", "/api/v1/plans/handoff/run", None);
    let j = s.wait_job(j["id"].as_i64().unwrap(), finished);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(
        log_of(&j).contains("a hook handed over another connection"),
        "{j}"
    );
    let target = PgDb::not_created();
    let r = s.ok(
        "POST",
        "/api/v1/restores",
        Some(
            &json!({"plan": "handoff", "restore_point": j["snapshot_id"], "database": target.name}),
        ),
    );
    let r = s.wait_job(r["id"].as_i64().unwrap(), finished);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(
        target.checksums(),
        replica.checksums(),
        "the dump read the replica"
    );
    assert_ne!(target.checksums(), primary.checksums());

    let out = dir.path().join("restored.txt");
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "custom", "source": "primary", "endpoint": "local", "schedule": "@daily",
                     "hooks": {"backup": {"run": "echo \"custom dump of job $HOLDFAST_JOB_ID\""},
                               "restore": {"run": format!("cat > {}", out.display())}}})),
    );
    let j = s.ok("POST", "/api/v1/plans/custom/run", None);
    let id = j["id"].as_i64().unwrap();
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}");
    let r = s.ok(
        "POST",
        "/api/v1/restores",
        Some(&json!({"plan": "custom", "restore_point": j["snapshot_id"]})),
    );
    let r = s.wait_job(r["id"].as_i64().unwrap(), finished);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("custom dump of job {id}\n")
    );
    let agents = s.ok("GET", "/api/v1/agents", None);
    assert_eq!(
        agents.as_array().unwrap().len(),
        1,
        "the embedded agent: {agents}"
    );
}

/// Secrets of Holdfast's own, as an operator exports them for the server and the agents.
const HOLDFASTS_SECRETS: [(&str, &str); 8] = [
    ("HOLDFAST_REPO_PASSWORD", "repo-password-never-in-a-child"),
    (
        "HOLDFAST_STORAGE_PASSWORD",
        "storage-password-never-in-a-child",
    ),
    (
        "HOLDFAST_SOURCE_PASSWORD",
        "source-password-never-in-a-child",
    ),
    ("AWS_ACCESS_KEY_ID", "AKIANEVERINACHILD"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-never-in-a-child"),
    ("ST_KEY", "swift-key-never-in-a-child"),
    ("OS_PASSWORD", "keystone-password-never-in-a-child"),
    ("RESTIC_PASSWORD", "restic-password-never-in-a-child"),
];

/// The foundation issue's leak: hooks and dump tools inherited the agent's environment, API
/// token and storage keys included. Each child now starts from a cleared environment with the
/// basics and what Holdfast sets for it on purpose. Checked on the server's embedded agent and
/// on a remote `holdfast agent`, each with every secret above (and its API token) in its
/// environment: a hook and a dump tool write their environment to a file, the test reads it.
#[test]
fn hooks_and_dump_tools_see_none_of_holdfasts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &Meta::Sqlite,
        &["--agent-label", "site=near"],
        &HOLDFASTS_SECRETS,
    );
    let token = s.ok(
        "POST",
        "/api/v1/enrolments",
        Some(&json!({"labels": {"site": "far"}})),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let remote = Agent::start_with_env(&s, "remote", &["site=far"], &token, &HOLDFASTS_SECRETS);
    wait_agents(&s, &["remote"]);
    let credential = remote.credential();
    for name in ["near", "far"] {
        let labels = json!({ "site": name });
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let dump = format!("env > {}/dump.env; echo payload", out.display());
        s.ok(
            "POST",
            "/api/v1/sources",
            Some(
                &json!({"name": name, "kind": "command", "url": format!("cmd:{name}.txt"),
                         "command": dump, "labels": labels}),
            ),
        );
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(&json!({"name": name, "source": name, "endpoint": "local", "schedule": "@yearly",
                "hooks": {"pre_backup_lock": {"run": format!("env > {}/hook.env", out.display())}}})),
        );
        let id = s.ok("POST", &format!("/api/v1/plans/{name}/run"), None)["id"]
            .as_i64()
            .unwrap();
        let j = s.wait_job(id, finished);
        assert_eq!(j["state"], "succeeded", "{j}\n{}", remote.log());
        let ran_on = if name == "far" { "remote" } else { "embedded" };
        assert_eq!(
            j["steps"][0]["agent"] == "remote",
            name == "far",
            "{name} runs on the {ran_on} agent: {j}"
        );
        for file in ["hook.env", "dump.env"] {
            let env = std::fs::read_to_string(out.join(file)).unwrap();
            for (k, v) in HOLDFASTS_SECRETS.iter().copied().chain([
                ("HOLDFAST_ADMIN_TOKEN", TOKEN),
                ("HOLDFAST_TOKEN", token.as_str()),
                ("the agent's credential", credential.as_str()),
            ]) {
                assert!(
                    !env.contains(v) && !env.contains(&format!("{k}=")),
                    "{name}/{file} sees {k}:\n{env}"
                );
            }
            assert!(env.contains("PATH="), "{name}/{file} keeps PATH:\n{env}");
        }
        let hook = std::fs::read_to_string(out.join("hook.env")).unwrap();
        assert!(
            hook.contains(&format!("HOLDFAST_JOB_ID={id}\n")) && hook.contains("HOLDFAST_PLAN="),
            "the hook still gets the job's context:\n{hook}"
        );
    }
}

/// A source whose URL means "this machine" (127.0.0.1, a local path) and that has no labels
/// runs on the server's own embedded agent only: a remote agent added later would read its own
/// machine's database instead. With labels it goes where they say. Agents that are gone can be
/// removed, but not while they run a job.
#[test]
fn unlabelled_sources_on_this_host_stay_on_the_embedded_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let remote = Agent::start(&s, "remote", &[], TOKEN);
    wait_agents(&s, &["remote"]);
    let db = PgDb::new();
    db.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);");
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "local-db", "kind": "postgres", "url": db.url()})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "p", "source": "local-db", "endpoint": "local", "schedule": "@yearly"}),
        ),
    );
    let job = s.ok("POST", "/api/v1/plans/p/run", None);
    let id = job["id"].as_i64().unwrap();
    let queued_at: jiff::Timestamp = job["created_at"].as_str().unwrap().parse().unwrap();
    // The remote agent polls (and is seen) every second: once it has been seen 3 s after the
    // job was queued, it has walked the queue with the job in it more than once.
    wait_for("the remote agent to poll with the job queued", || {
        s.ok("GET", "/api/v1/agents", None)
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["name"] == "remote"
                    && a["last_seen"]
                        .as_str()
                        .unwrap()
                        .parse::<jiff::Timestamp>()
                        .unwrap()
                        > queued_at + jiff::SignedDuration::from_secs(3)
            })
    });
    let j = s.ok("GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(j["state"], "queued", "{j}\n{}", remote.log());
    // The remote agent is idle: it may be removed.
    let (code, body) = s.call("DELETE", "/api/v1/agents/remote", None);
    assert_eq!(code, 204, "{body}");
    let (code, body) = s.call("DELETE", "/api/v1/agents/remote", None);
    assert_eq!(code, 404, "{body}");
    drop(remote);

    // The same server with its embedded agent runs it.
    s.terminate();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "1"]);
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}");
    let agents = s.ok("GET", "/api/v1/agents", None);
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");
    assert_eq!(j["steps"][0]["agent"], agents[0]["name"], "{j}");
}

/// The embedded agent of a server started without the agent flags runs no inline hook, no
/// `cmd:` source and no local path, whatever the store holds: a hook written straight into
/// the metadata database (as a compromised server could) is refused before anything runs,
/// and the job's error names the flag that would allow it.
#[test]
fn the_agent_refuses_what_its_own_flags_do_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let s = Server::start(&data, &Meta::Sqlite, &["--strict-agent"]);
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("a.txt"), "a").unwrap();
    let marker = dir.path().join("hook-ran");
    let cases = [
        (
            "folder",
            json!({"name": "folder", "kind": "folder", "url": format!("file://{}", files.display())}),
            "--allow-path",
        ),
        (
            "cmd",
            json!({"name": "cmd", "kind": "command", "url": "cmd:x", "command": "echo x"}),
            "--allow-commands",
        ),
    ];
    for (name, source, flag) in &cases {
        s.ok("POST", "/api/v1/sources", Some(source));
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(
                &json!({"name": name, "source": name, "endpoint": "local", "schedule": "@yearly"}),
            ),
        );
        let id = s.ok("POST", &format!("/api/v1/plans/{name}/run"), None)["id"]
            .as_i64()
            .unwrap();
        let j = s.wait_job(id, finished);
        assert_eq!(j["state"], "failed", "{j}");
        let error = j["error"].as_str().unwrap();
        assert!(
            error.contains("refused by agent") && error.contains(flag),
            "{j}"
        );
        assert_eq!(j["attempt"], 1, "a refusal is not retried: {j}");
    }
    // A hook the API would only take from an admin, written behind the server's back.
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "pg", "kind": "postgres", "url": "postgres://postgres@127.0.0.1:5432/postgres"})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "hooked", "source": "pg", "endpoint": "local", "schedule": "@yearly"}),
        ),
    );
    let hook = format!("touch {}", marker.display());
    let spec = json!({"name": "hooked", "source": "pg", "endpoint": "local", "schedule": "@yearly",
                      "hooks": {"pre_backup_lock": {"run": hook}}});
    let out = Command::new("sqlite3")
        .arg(data.join("holdfast.db"))
        .arg(format!(
            "UPDATE plans SET spec = '{}' WHERE name = 'hooked'",
            spec.to_string().replace('\'', "''")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = s.ok("POST", "/api/v1/plans/hooked/run", None)["id"]
        .as_i64()
        .unwrap();
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("--allow-hook-scripts"),
        "{j}"
    );
    assert!(!marker.exists(), "the hook ran");
}
