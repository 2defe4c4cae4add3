//! Endpoints whose agents reach storage through the server (`agent_access: server`): real
//! agents back up and restore through the server's repository proxy on every storage kind,
//! with no storage credential in their tickets; an agent that misbehaves with its capability
//! (raw HTTP, as an attacker on a database host would) is refused, and everything it tried
//! shows in the audit log, the events and the metrics; retention judges restore points by
//! when the server received them, so an agent with a lying clock cannot choose what is kept.
//! The repositories are checked afterwards with direct credentials by Holdfast and by the
//! stock restic.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::agents::{Agent, finished, log_of, wait_agents};
use crate::helpers::*;
use crate::server::{Meta, Server, TOKEN};
use crate::storage::{ftp_env, s3_env, sftp_env, swift_env, webdav_env};

const DB_PASSWORD: &str = "proxy-db-pw-that-must-never-show";
const S3_SECRET: &str = "s3-secret-that-stays-on-the-server";

/// The API body of an endpoint on the repository `env` reaches with its direct credentials.
fn endpoint(name: &str, kind: &str, env: &Env) -> Value {
    let var = |k: &str| {
        env.extra_env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let mut e = json!({"name": name, "kind": kind, "url": env.repo, "password": PASSWORD,
                       "prune_schedule": "off"});
    match kind {
        "s3" => {
            e["access_key_id"] = json!(var("AWS_ACCESS_KEY_ID"));
            e["secret_access_key"] = json!(var("AWS_SECRET_ACCESS_KEY"));
        }
        "sftp" => {
            let key = var("HOLDFAST_SSH_KEY_FILE").unwrap();
            e["ssh_key"] = json!(std::fs::read_to_string(key).unwrap());
        }
        "ftp" | "webdav" => e["storage_password"] = json!(var("HOLDFAST_STORAGE_PASSWORD")),
        "swift" => {
            e["user"] = json!(var("ST_USER"));
            e["storage_password"] = json!(var("ST_KEY"));
        }
        _ => {}
    }
    e
}

/// An S3 repository whose secret key is one that can be searched for (moto takes any key).
fn s3_with_secret() -> Env {
    let mut env = s3_env();
    for (k, v) in &mut env.extra_env {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = S3_SECRET.into();
        }
    }
    env
}

fn run(s: &Server, plan: &str) -> Value {
    let id = s.ok("POST", &format!("/api/v1/plans/{plan}/run"), None)["id"]
        .as_i64()
        .unwrap();
    s.wait_job(id, finished)
}

/// A remote agent backs up PostgreSQL three times into S3 and restores it, all through the
/// server: its ticket holds no storage credential, the server applies the plan's retention,
/// and the repository is sound when read with the real credentials.
#[test]
fn a_remote_agent_backs_up_and_restores_through_the_server_without_storage_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let env = s3_with_secret();
    let ep = s.ok(
        "POST",
        "/api/v1/endpoints",
        Some(&endpoint("vault", "s3", &env)),
    );
    assert_eq!(
        ep["agent_access"], "server",
        "the default for a new endpoint"
    );
    let db = PgDb::new();
    db.pgbench(1);
    let before = db.checksums();
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "db", "kind": "postgres", "url": db.url(),
                     "password": DB_PASSWORD, "labels": {"site": "db1"}})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "nightly", "source": "db", "endpoint": "vault", "schedule": "@daily",
                     "retention": {"style": "gfs", "last": 2}}),
        ),
    );
    let agent = Agent::start(&s, "db1", &["site=db1"], TOKEN);
    wait_agents(&s, &["db1"]);

    let jobs: Vec<Value> = (0..3).map(|_| run(&s, "nightly")).collect();
    for j in &jobs {
        assert_eq!(j["state"], "succeeded", "{j}\n{}", agent.log());
        assert!(log_of(j).contains("through the server"), "{}", log_of(j));
    }
    let last = &jobs[2];
    assert!(
        log_of(last).contains(
            "retention: kept 2 restore point(s), forgot 1 (by the server, by the time it received each)"
        ),
        "{}",
        log_of(last)
    );
    // What the repository holds, read with the real credentials: the two newest backups.
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    let made: Vec<String> = jobs
        .iter()
        .map(|j| j["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, made[1..], "retention kept the two newest");
    let second = &env.snapshots()[0];
    assert!(
        second["added_bytes"].as_u64().unwrap() < 200_000,
        "the unchanged database was stored again: {second}"
    );
    let rp = s.ok("GET", "/api/v1/restore-points?plan=nightly", None);
    assert_eq!(rp.as_array().unwrap().len(), 2, "{rp}");

    // A restore through the server (read-only capability) gives the same rows.
    let target = PgDb::not_created();
    let r = s.ok(
        "POST",
        "/api/v1/restores",
        Some(
            &json!({"plan": "nightly", "restore_point": made[2], "database": target.name,
                     "create": true}),
        ),
    );
    let r = s.wait_job(r["id"].as_i64().unwrap(), finished);
    assert_eq!(r["state"], "succeeded", "{r}\n{}", agent.log());
    assert!(log_of(&r).contains("through the server"), "{}", log_of(&r));
    assert_eq!(target.checksums(), before);

    env.ok(&["check", "--read-data"]);
    env.restic_check();
    // The storage secret never left the server; the database password shows nowhere.
    for text in [agent.log(), s.log(), last.to_string(), r.to_string()] {
        assert!(!text.contains(S3_SECRET), "{text}");
        assert!(!text.contains(DB_PASSWORD), "{text}");
    }
}

/// Backups and restores through the proxy on every storage kind: a folder of 6 MB, twice
/// (the second stores next to nothing), restored byte for byte into another folder, and the
/// repository clean for Holdfast and restic with direct credentials.
#[test]
fn every_storage_kind_works_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &[]);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("big.bin"), random(6_000_000, 20)).unwrap();
    std::fs::write(files.path().join("small.txt"), b"hello").unwrap();
    let want = tree_listing(files.path());
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "files", "kind": "folder",
                     "url": format!("file://{}", files.path().display())})),
    );
    let kinds: Vec<(&str, Env, bool)> = vec![
        ("local", Env::new(), true),
        ("s3", s3_env(), true),
        ("sftp", sftp_env(), true),
        ("swift", swift_env(), true),
        ("webdav", webdav_env(), false),
        ("ftp", ftp_env(), false),
    ];
    for (kind, env, restic_reads) in &kinds {
        let name = format!("via-{kind}");
        let ep = s.ok(
            "POST",
            "/api/v1/endpoints",
            Some(&endpoint(&name, kind, env)),
        );
        assert_eq!(ep["agent_access"], "server");
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(&json!({"name": name, "source": "files", "endpoint": name, "schedule": "@daily"})),
        );
        let a = run(&s, &name);
        let b = run(&s, &name);
        for j in [&a, &b] {
            assert_eq!(j["state"], "succeeded", "{kind}: {j}\n{}", s.log());
            assert!(log_of(j).contains("through the server"), "{kind}: {j}");
        }
        let snaps = env.snapshots();
        assert_eq!(snaps.len(), 2, "{kind}: {snaps:?}");
        assert!(
            snaps[1]["added_bytes"].as_u64().unwrap() < 100_000,
            "{kind}: the same bytes were stored again: {}",
            snaps[1]
        );

        let into = tempfile::tempdir().unwrap();
        let target = format!("{name}-copy");
        s.ok(
            "POST",
            "/api/v1/sources",
            Some(&json!({"name": target, "kind": "folder",
                         "url": format!("file://{}", into.path().display())})),
        );
        let r = s.ok(
            "POST",
            "/api/v1/restores",
            Some(
                &json!({"plan": name, "restore_point": b["snapshot_id"], "target_source": target}),
            ),
        );
        let r = s.wait_job(r["id"].as_i64().unwrap(), finished);
        assert_eq!(r["state"], "succeeded", "{kind}: {r}\n{}", s.log());
        assert!(log_of(&r).contains("through the server"), "{kind}: {r}");
        assert_eq!(
            tree_listing(into.path()),
            want,
            "{kind}: restored files differ"
        );

        env.ok(&["check", "--read-data"]);
        if *restic_reads {
            env.restic_check();
        }
    }
}

/// Raw HTTP against the proxy, with a capability as the server hands it out.
struct Spy {
    http: reqwest::blocking::Client,
    base: String,
    user: String,
    capability: String,
}

impl Spy {
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Option<(&str, &str)>,
    ) -> (u16, Vec<u8>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().unwrap();
        (resp.status().as_u16(), resp.bytes().unwrap().to_vec())
    }

    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
        let (code, b) = self.send(method, path, body, Some((&self.user, &self.capability)));
        (code, String::from_utf8_lossy(&b).to_string())
    }

    /// A refused request: 403, and the reason first in the answer.
    fn refused(&self, method: &str, path: &str, body: Option<Vec<u8>>, reason: &str) {
        let (code, text) = self.call(method, path, body);
        assert_eq!(code, 403, "{method} {path}: {text}");
        assert!(
            text.starts_with(&format!("{reason}: ")),
            "{method} {path}: {text}"
        );
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let (code, b) = self.send("GET", path, None, Some((&self.user, &self.capability)));
        assert_eq!(code, 200, "GET {path}: {}", String::from_utf8_lossy(&b));
        b
    }

    fn names(&self, tpe: &str) -> Vec<String> {
        serde_json::from_slice(&self.get(&format!("/proxy/{tpe}/"))).unwrap()
    }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A snapshot file made with the stock restic straight into the repository, then taken out
/// again: the bytes of a well-formed snapshot (encrypted with the repository's key) that the
/// repository does not hold. `args` go to `restic backup`.
fn forged_snapshot(env: &Env, spy: &Spy, args: &[&str]) -> (String, Vec<u8>) {
    let file = env.path("forged.txt");
    std::fs::write(&file, format!("forged {args:?}")).unwrap();
    let file = file.display().to_string();
    let mut a = vec!["backup", &file, "--json"];
    a.extend_from_slice(args);
    let out = String::from_utf8(env.restic(&a).stdout).unwrap();
    let short = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["snapshot_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("restic made no snapshot: {out}"));
    // restic 0.14 names it by a short id.
    let id = spy
        .names("snapshots")
        .into_iter()
        .find(|n| n.starts_with(&short))
        .unwrap();
    let bytes = spy.get(&format!("/proxy/snapshots/{id}"));
    assert_eq!(sha256(&bytes), id);
    env.restic(&["forget", &id]);
    (id, bytes)
}

/// An agent that turns against the repository with the capability of a job it claimed: it
/// may read and add new, well-formed files, nothing else; each attempt is refused with its
/// reason and shows in the audit log, the events and the metrics; once the job ends the
/// capability is worth nothing. The ticket itself carries no storage credential (while a
/// `direct` endpoint's does).
#[test]
fn an_agent_can_add_backups_but_never_delete_overwrite_or_forge_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--lease-secs", "60"]);
    let env = s3_with_secret();
    s.ok(
        "POST",
        "/api/v1/endpoints",
        Some(&endpoint("vault", "s3", &env)),
    );
    let open_env = s3_env();
    let mut open = endpoint("open", "s3", &open_env);
    open["agent_access"] = json!("direct");
    open["secret_access_key"] = json!("direct-secret-the-agent-gets");
    s.ok("POST", "/api/v1/endpoints", Some(&open));
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "app", "kind": "command", "url": "cmd:app.txt",
                     "command": "echo app", "labels": {"site": "spy"}}),
        ),
    );
    for (plan, ep) in [("app", "vault"), ("app-open", "open")] {
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(&json!({"name": plan, "source": "app", "endpoint": ep, "schedule": "@daily"})),
        );
    }

    // The spy enrols and claims like an agent, and keeps what it is given.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let enrolment = s.ok(
        "POST",
        "/api/v1/enrolments",
        Some(&json!({"agent": "spy", "labels": {"site": "spy"}})),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let hello = json!({"name": "spy", "labels": {"site": "spy"}, "version": env!("CARGO_PKG_VERSION"),
                       "hostname": "spy-host", "slots": 1});
    let post = |token: &str, path: &str, body: &Value| {
        let resp = http
            .post(format!("{}/api/v1{path}", s.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap();
        let code = resp.status().as_u16();
        (code, resp.text().unwrap())
    };
    let (code, enrolled) = post(&enrolment, "/agents/enrol", &hello);
    assert!(code < 300, "{enrolled}");
    let credential: Value = serde_json::from_str(&enrolled).unwrap();
    let credential = credential["credential"].as_str().unwrap().to_string();
    let (code, text) = post(&credential, "/agents", &hello);
    assert!(code < 300, "{text}");
    let claim = |plan: &str| {
        let job = s.ok("POST", &format!("/api/v1/plans/{plan}/run"), None)["id"]
            .as_i64()
            .unwrap();
        let (code, raw) = post(&credential, "/agents/spy/claim?wait=20", &json!({}));
        assert_eq!(code, 200, "{raw}");
        (job, raw)
    };

    // A `direct` endpoint's ticket carries its storage secret: the check below can fail.
    let (open_job, raw) = claim("app-open");
    assert!(raw.contains("direct-secret-the-agent-gets"), "{raw}");
    let (code, text) = post(
        &credential,
        &format!("/agents/spy/jobs/{open_job}/finish"),
        &json!({"outcome": "failed", "reason": "spy", "bytes_read": 0, "bytes_written": 0}),
    );
    assert!(code < 300, "{text}");

    // A backup the repository already holds (made directly, as an earlier agent would).
    env.init();
    env.ok(&[
        "backup",
        "cmd:app.txt",
        "--command",
        "echo precious",
        "--tag",
        "plan=app",
    ]);
    let precious = env.snapshots()[0]["id"].as_str().unwrap().to_string();

    let (job, raw) = claim("app");
    let ticket: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(ticket["job"], job);
    let repo = &ticket["repository"];
    for secret in [S3_SECRET, "holdfast-test"] {
        assert!(
            !raw.contains(secret),
            "a storage credential in the ticket: {raw}"
        );
    }
    for field in [
        "access_key_id",
        "secret_access_key",
        "user",
        "storage_password",
        "ssh_key",
    ] {
        assert!(repo[field].is_null(), "{field} in the ticket: {repo}");
    }
    let proxy = &repo["proxy"];
    assert_eq!(proxy["access"], "backup", "{repo}");
    let spy = Spy {
        http: http.clone(),
        base: s.url.clone(),
        user: proxy["user"].as_str().unwrap().to_string(),
        capability: proxy["capability"].as_str().unwrap().to_string(),
    };

    // What a backup needs works: the config, the lists, reads, and a new file named by its
    // content.
    assert!(!spy.get("/proxy/config").is_empty());
    let snaps = spy.names("snapshots");
    assert_eq!(snaps, std::slice::from_ref(&precious));
    let packs = spy.names("data");
    let indexes = spy.names("index");
    let keys = spy.names("keys");
    assert!(!packs.is_empty() && !indexes.is_empty() && !keys.is_empty());
    let (code, _) = spy.call("HEAD", &format!("/proxy/data/{}", packs[0]), None);
    assert_eq!(code, 200);
    let garbage = random(4096, 7);
    let garbage_id = sha256(&garbage);
    let (code, text) = spy.call(
        "POST",
        &format!("/proxy/data/{garbage_id}"),
        Some(garbage.clone()),
    );
    assert_eq!(
        code, 200,
        "a new file named by its content is added: {text}"
    );

    // Everything else is refused, with its reason.
    for (tpe, name) in [
        ("snapshots", &precious),
        ("data", &packs[0]),
        ("index", &indexes[0]),
        ("keys", &keys[0]),
        ("data", &garbage_id),
    ] {
        spy.refused("DELETE", &format!("/proxy/{tpe}/{name}"), None, "delete");
    }
    let snapshot = spy.get(&format!("/proxy/snapshots/{precious}"));
    spy.refused(
        "POST",
        &format!("/proxy/snapshots/{precious}"),
        Some(snapshot.clone()),
        "exists",
    );
    spy.refused(
        "POST",
        &format!("/proxy/data/{}", packs[0]),
        Some(garbage.clone()),
        "content-hash",
    );
    let key = spy.get(&format!("/proxy/keys/{}", keys[0]));
    let mut other_key = key.clone();
    other_key.push(b' ');
    spy.refused(
        "POST",
        &format!("/proxy/keys/{}", sha256(&other_key)),
        Some(other_key),
        "read-only",
    );
    spy.refused("POST", "/proxy/config", Some(b"x".to_vec()), "read-only");
    spy.refused("POST", "/proxy/?create=true", None, "create");
    let lock = b"{}".to_vec();
    spy.refused(
        "POST",
        &format!("/proxy/locks/{}", sha256(&lock)),
        Some(lock),
        "locks",
    );
    // A snapshot of another plan, and one of this plan dated a year ahead.
    let (other_id, other) = forged_snapshot(
        &env,
        &spy,
        &[
            "--tag",
            "holdfast",
            "--tag",
            "plan=shop",
            "--tag",
            "source=command",
        ],
    );
    spy.refused(
        "POST",
        &format!("/proxy/snapshots/{other_id}"),
        Some(other),
        "snapshot-plan",
    );
    let (ahead_id, ahead) = forged_snapshot(
        &env,
        &spy,
        &[
            "--tag",
            "plan=app",
            "--tag",
            "source=command",
            "--time",
            "2099-01-01 00:00:00",
        ],
    );
    spy.refused(
        "POST",
        &format!("/proxy/snapshots/{ahead_id}"),
        Some(ahead),
        "snapshot-time",
    );
    // No capability, or a made-up one.
    let (code, _) = spy.send("GET", "/proxy/config", None, None);
    assert_eq!(code, 401);
    let mut tampered = spy.capability.clone();
    tampered.replace_range(10..14, "AAAA");
    let (code, text) = spy.send("GET", "/proxy/config", None, Some((&spy.user, &tampered)));
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&text));

    // The job ends: its capability no longer opens anything.
    let (code, text) = post(
        &credential,
        &format!("/agents/spy/jobs/{job}/finish"),
        &json!({"outcome": "failed", "reason": "spy", "bytes_read": 0, "bytes_written": 0}),
    );
    assert!(code < 300, "{text}");
    spy.refused("GET", "/proxy/config", None, "expired");
    spy.refused("GET", "/proxy/snapshots/", None, "expired");

    // Nothing was lost: the same restore points, and a repository that checks clean, pruned
    // by the server (its embedded agent: the endpoint's agents cannot).
    assert_eq!(
        env.snapshots()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [precious.as_str()]
    );
    let p = s.ok("POST", "/api/v1/endpoints/vault/prune", None);
    let p = s.wait_job(p["id"].as_i64().unwrap(), finished);
    assert_eq!(p["state"], "succeeded", "{p}\n{}", s.log());
    env.ok(&["check", "--read-data"]);
    env.restic_check();
    // The server's prune keeps unused packs for a grace period (a backup elsewhere may be
    // writing them); one without it removes the garbage.
    env.ok(&["prune", "--instant"]);
    let left = String::from_utf8(env.restic(&["list", "packs"]).stdout).unwrap();
    assert!(!left.contains(&garbage_id), "prune left the garbage");
    assert_eq!(
        env.ok(&["dump", &precious[..8]]).trim(),
        "precious",
        "the earlier backup reads as it was"
    );

    // Every refusal is in the audit log, with the reason; one security event per reason for
    // this job; a counter per reason.
    let audit = s.ok(
        "GET",
        "/api/v1/audit?resource=endpoints/vault/&limit=1000",
        None,
    );
    let outcomes: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("proxy."))
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["actor"].as_str().unwrap()
            )
        })
        .collect();
    let count = |what: &str| outcomes.iter().filter(|o| o.starts_with(what)).count();
    assert_eq!(
        count("proxy.delete 403: delete agent spy"),
        5,
        "{outcomes:#?}"
    );
    assert_eq!(count("proxy.post 403: exists"), 1, "{outcomes:#?}");
    assert_eq!(count("proxy.post 403: snapshot-plan"), 1, "{outcomes:#?}");
    assert_eq!(count("proxy.post 403: snapshot-time"), 1, "{outcomes:#?}");
    assert_eq!(count("proxy.get 403: expired"), 2, "{outcomes:#?}");
    let events = s.ok("GET", "/api/v1/events?limit=200", None);
    let violations: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "security.violation")
        .collect();
    let deletes = violations
        .iter()
        .filter(|e| e["job"] == job && e["error"].as_str().unwrap().contains("deleted"))
        .count();
    assert_eq!(
        deletes, 1,
        "five refused deletes, one event: {violations:#?}"
    );
    assert!(
        violations
            .iter()
            .any(|e| e["agent"] == "spy" && e["plan"] == "app" && e["endpoint"] == "vault"),
        "{violations:#?}"
    );
    let (_, metrics) = s.call("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("holdfast_proxy_denied_total{reason=\"delete\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("holdfast_proxy_denied_total{reason=\"expired\"} 2"));
    assert!(!s.log().contains(S3_SECRET));
}

/// An agent whose clock is four minutes slow (within what the proxy accepts) backs up after
/// an honest one: by the times written into the snapshots its newer backup would look older
/// and `keep last 1` would drop it; the server keeps it, because it judges by when it
/// received each one.
#[test]
fn retention_through_the_server_goes_by_when_it_received_each_backup() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--workers", "0"]);
    let env = Env::new();
    s.ok(
        "POST",
        "/api/v1/endpoints",
        Some(&endpoint("vault", "local", &env)),
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "app", "kind": "command", "url": "cmd:app.txt",
                     "command": "date +%s%N", "labels": {"site": "a"}}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "app", "source": "app", "endpoint": "vault", "schedule": "@daily",
                     "retention": {"style": "gfs", "last": 1}}),
        ),
    );
    let mut honest = Agent::start(&s, "honest", &["site=a"], TOKEN);
    wait_agents(&s, &["honest"]);
    let first = run(&s, "app");
    assert_eq!(first["state"], "succeeded", "{first}\n{}", honest.log());
    honest.kill9();

    let lib = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime is installed by scripts/services");
    let liar = Agent::start_with_env(
        &s,
        "liar",
        &["site=a"],
        TOKEN,
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME", "-4m"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_NO_CACHE", "1"),
        ],
    );
    wait_agents(&s, &["liar"]);
    let second = run(&s, "app");
    assert_eq!(second["state"], "succeeded", "{second}\n{}", liar.log());
    assert!(
        log_of(&second).contains("started on agent liar"),
        "{second}"
    );

    // The liar's snapshot claims to be older than the honest one (the test can fail)...
    let ids = |j: &Value| j["snapshot_id"].as_str().unwrap().to_string();
    let restic_times: Vec<(String, String)> = serde_json::from_slice::<Vec<Value>>(
        &env.restic(&["snapshots", "--json", "--no-lock"]).stdout,
    )
    .unwrap()
    .iter()
    .map(|x| {
        (
            x["id"].as_str().unwrap().to_string(),
            x["time"].as_str().unwrap().to_string(),
        )
    })
    .collect();
    // ...but only the liar's newer backup is kept.
    assert_eq!(
        restic_times
            .iter()
            .map(|(i, _)| i.clone())
            .collect::<Vec<_>>(),
        [ids(&second)],
        "kept by received time"
    );
    assert!(
        log_of(&second).contains("kept 1 restore point(s), forgot 1"),
        "{}",
        log_of(&second)
    );
    let claimed = restic_times[0].1.parse::<jiff::Timestamp>().unwrap();
    let honest_started = first["started_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert!(
        claimed < honest_started,
        "the liar's clock did not lie: {claimed} vs the honest backup at {honest_started}"
    );
}

/// The data packs of a local repository, by name.
fn packs_in(repo: &std::path::Path) -> std::collections::BTreeSet<String> {
    walk(&repo.join("data"))
}

fn walk(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.insert(e.file_name().to_string_lossy().to_string());
        }
    }
    out
}

/// The packs some index of the repository names, those marked for deletion included.
fn indexed_packs(env: &Env) -> std::collections::BTreeSet<String> {
    let list = String::from_utf8(env.restic(&["list", "index"]).stdout).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for id in list.split_whitespace() {
        let index: Value =
            serde_json::from_slice(&env.restic(&["cat", "index", id]).stdout).unwrap();
        for key in ["packs", "packs_to_delete"] {
            for p in index[key].as_array().into_iter().flatten() {
                out.insert(p["id"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

/// An agent killed mid-backup through the proxy: no restore point, the next attempt (on
/// another agent) saves one, and the packs the dead attempt left are garbage a prune
/// removes.
#[test]
fn an_agent_killed_mid_backup_through_the_server_leaves_only_garbage_a_prune_removes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &Meta::Sqlite, &["--lease-secs", "2"]);
    let env = Env::new();
    let repo = std::path::PathBuf::from(&env.repo);
    s.ok(
        "POST",
        "/api/v1/endpoints",
        Some(&endpoint("vault", "local", &env)),
    );
    let payload = dir.path().join("payload");
    let go = dir.path().join("go");
    std::fs::write(&payload, random(60_000_000, 3)).unwrap();
    let command = held_dump(&payload, &go);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "gen", "kind": "command", "url": "cmd:dump.bin",
                     "command": command, "labels": {"site": "db1"}}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "p", "source": "gen", "endpoint": "vault", "schedule": "@daily",
                     "retry": {"attempts": 3, "base_secs": 1, "cap_secs": 1}}),
        ),
    );
    let mut first = Agent::start(&s, "db1", &["site=db1"], TOKEN);
    wait_agents(&s, &["db1"]);
    let id = s.ok("POST", "/api/v1/plans/p/run", None)["id"]
        .as_i64()
        .unwrap();
    crate::agents::wait_for("packs of the first attempt", || {
        repo.join("data").exists() && packs_in(&repo).len() >= 2
    });
    first.kill9();
    let left = packs_in(&repo);
    assert!(
        env.snapshots().is_empty(),
        "a killed backup left a restore point"
    );
    let orphans: Vec<String> = left.difference(&indexed_packs(&env)).cloned().collect();
    assert!(
        !orphans.is_empty(),
        "the dead attempt left no unindexed pack"
    );

    std::fs::write(&go, "").unwrap();
    let second = Agent::start(&s, "db1b", &["site=db1"], TOKEN);
    let j = s.wait_job(id, finished);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", second.log());
    assert_eq!(j["attempt"], 2, "{j}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let mut want = std::fs::read(&payload).unwrap();
    want.extend_from_slice(b"tail\n");
    let id8 = &snaps[0]["id"].as_str().unwrap()[..8];
    assert!(
        env.cmd(&["dump", id8]).output().unwrap().stdout == want,
        "the saved backup differs"
    );

    // The server's prune runs (on its embedded agent); it keeps young unused packs for its
    // grace period, so the orphans go with a prune without one.
    let p = s.ok("POST", "/api/v1/endpoints/vault/prune", None);
    let p = s.wait_job(p["id"].as_i64().unwrap(), finished);
    assert_eq!(p["state"], "succeeded", "{p}\n{}", s.log());
    env.ok(&["prune", "--instant"]);
    let now = packs_in(&repo);
    for o in &orphans {
        assert!(!now.contains(o), "orphan {o} is still there");
    }
    assert!(
        now.difference(&indexed_packs(&env)).next().is_none(),
        "packs no index names"
    );
    env.ok(&["check", "--read-data"]);
    env.restic_check();
}
