//! Users and tokens scoped to plans by label: a team sees and acts on its own plans, their
//! jobs and restore points, and nothing server-wide.

use serde_json::{Value, json};

use super::*;

async fn two_teams(app: &App) {
    app.ok(
        "POST",
        "/api/v1/sources",
        Some(json!({"name": "pay-db", "kind": "postgres", "url": "postgres://app@db1:5432/pay"})),
    )
    .await;
    app.ok(
        "POST",
        "/api/v1/sources",
        Some(json!({"name": "ops-db", "kind": "postgres", "url": "postgres://app@db2:5432/ops"})),
    )
    .await;
    for (plan, source, team) in [
        ("pay-nightly", "pay-db", "payments"),
        ("pay-hourly", "pay-db", "payments"),
        ("ops-nightly", "ops-db", "ops"),
    ] {
        app.ok(
            "POST",
            "/api/v1/plans",
            Some(json!({"name": plan, "source": source, "endpoint": "local",
                        "schedule": "@daily", "labels": {"team": team}})),
        )
        .await;
    }
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x[key].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// A scoped operator: its plans in lists, the others absent (404), its jobs only, plans it
/// makes must carry its labels; endpoints, sources and notifiers it reads but cannot change;
/// no audit, no metrics, no access; and a token can only narrow a scope.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_scoped_to_a_team_sees_and_acts_on_that_teams_plans_only() {
    let app = App::spawn().await;
    two_teams(&app).await;
    let ops_job = app.ok("POST", "/api/v1/plans/ops-nightly/run", None).await["id"].clone();
    let pay_job = app.ok("POST", "/api/v1/plans/pay-nightly/run", None).await["id"].clone();
    app.ok(
        "POST",
        "/api/v1/users",
        Some(
            json!({"name": "pat", "role": "operator", "password": "a long enough passphrase",
                    "scope": {"team": "payments"}}),
        ),
    )
    .await;
    let pat = app
        .ok(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "pat's", "user": "pat"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();

    let who = app.call_as(&pat, "GET", "/api/v1/whoami", None).await.1;
    assert_eq!(who["scope"], json!({"team": "payments"}), "{who}");
    assert_eq!(
        who["permissions"],
        json!(["read", "run", "configure", "overwrite"]),
        "{who}"
    );

    let (code, plans) = app.call_as(&pat, "GET", "/api/v1/plans", None).await;
    assert_eq!(code, 200);
    let seen: Vec<String> = {
        let mut v: Vec<String> = plans
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(seen, ["pay-hourly", "pay-nightly"], "{plans}");
    for (method, path) in [
        ("GET", "/api/v1/plans/ops-nightly"),
        ("POST", "/api/v1/plans/ops-nightly/run"),
        ("POST", "/api/v1/plans/ops-nightly/pause"),
        ("DELETE", "/api/v1/plans/ops-nightly"),
        ("GET", "/api/v1/restore-points?plan=ops-nightly"),
    ] {
        let (code, body) = app.call_as(&pat, method, path, None).await;
        assert_eq!(code, 404, "{method} {path}: {body}");
    }
    let ops_job_path = format!("/api/v1/jobs/{ops_job}");
    for (method, path) in [
        ("GET", ops_job_path.clone()),
        ("GET", format!("{ops_job_path}/log")),
        ("POST", format!("{ops_job_path}/cancel")),
    ] {
        let (code, body) = app.call_as(&pat, method, &path, None).await;
        assert_eq!(code, 404, "{method} {path}: {body}");
    }
    // Percent-encoded, the names are what the handlers decode them to: still out of scope.
    let encoded_job: String = ops_job
        .to_string()
        .chars()
        .map(|c| format!("%{:02X}", c as u32))
        .collect();
    for (method, path) in [
        ("POST", "/api/v1/plans/%6Fps-nightly/run".to_string()),
        ("GET", "/api/v1/plans/ops%2Dnightly".to_string()),
        ("GET", format!("/api/v1/jobs/{encoded_job}")),
        ("POST", format!("/api/v1/jobs/{encoded_job}/cancel")),
    ] {
        let (code, body) = app.call_as(&pat, method, &path, None).await;
        assert_eq!(code, 404, "{method} {path}: {body}");
    }
    let (code, _) = app
        .call_as(&pat, "GET", &format!("/api/v1/jobs/{pay_job}"), None)
        .await;
    assert_eq!(code, 200);
    let jobs = app.call_as(&pat, "GET", "/api/v1/jobs", None).await.1;
    assert_eq!(names(&jobs, "plan"), ["pay-nightly"], "{jobs}");
    let all_jobs = app.ok("GET", "/api/v1/jobs", None).await;
    assert_eq!(all_jobs.as_array().unwrap().len(), 2, "{all_jobs}");

    // Its own plans it changes and runs; a new plan must carry its labels.
    let (code, body) = app
        .call_as(&pat, "POST", "/api/v1/plans/pay-hourly/pause", None)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/plans",
            Some(
                json!({"name": "pay-weekly", "source": "pay-db", "endpoint": "local",
                        "schedule": "@weekly"}),
            ),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.to_string().contains("team=payments"), "{body}");
    let (code, body) = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/plans",
            Some(
                json!({"name": "pay-weekly", "source": "pay-db", "endpoint": "local",
                        "schedule": "@weekly", "labels": {"team": "payments", "tier": "gold"}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    // A plan of its own on another team's database would reach that database: refused.
    let (code, body) = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/plans",
            Some(
                json!({"name": "pay-steal", "source": "ops-db", "endpoint": "local",
                        "schedule": "@weekly", "labels": {"team": "payments"}}),
            ),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.to_string().contains("source"), "{body}");
    // Moving its plan out of its scope would hand it to another team: refused.
    let (code, body) = app
        .call_as(
            &pat,
            "PUT",
            "/api/v1/plans/pay-weekly",
            Some(
                json!({"name": "pay-weekly", "source": "pay-db", "endpoint": "local",
                        "schedule": "@weekly", "labels": {"team": "ops"}}),
            ),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    // A restore of its plan into another team's database is refused.
    let (code, body) = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/restores",
            Some(json!({"plan": "pay-nightly", "restore_point": "abcd1234",
                        "target_source": "ops-db", "database": "copy"})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.to_string().contains("target_source"), "{body}");

    // Replacing a named database (on a server other teams may share) is refused.
    let (code, body) = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/restores",
            Some(json!({"plan": "pay-nightly", "restore_point": "abcd1234",
                        "database": "ops", "force": true})),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    // Server-wide things: read, never changed; no audit, metrics or accounts.
    let (code, _) = app.call_as(&pat, "GET", "/api/v1/endpoints", None).await;
    assert_eq!(code, 200);
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/sources",
            Some(json!({"name": "x", "kind": "postgres", "url": "postgres://a@b/c"})),
        ),
        ("DELETE", "/api/v1/sources/ops-db", None),
        ("DELETE", "/api/v1/endpoints/local", None),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/users", None),
        ("GET", "/metrics", None),
        ("GET", "/api/v1/restore-points?endpoint=local", None),
    ] {
        let (code, resp) = app.call_as(&pat, method, path, body).await;
        assert_eq!(code, 403, "{method} {path}: {resp}");
    }
    let sources = app.ok("GET", "/api/v1/sources", None).await;
    assert_eq!(sources.as_array().unwrap().len(), 2, "nothing was deleted");

    // A token of pat can only narrow pat's scope.
    let (code, body) = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "wider", "scope": {"team": "ops"}})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let gold = app
        .call_as(
            &pat,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "gold", "scope": {"tier": "gold"}})),
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let plans = app.call_as(&gold, "GET", "/api/v1/plans", None).await.1;
    assert_eq!(
        plans.as_array().unwrap().len(),
        1,
        "only pay-weekly: {plans}"
    );
    // And a token made by a scoped token stays scoped.
    let child = app
        .call_as(
            &gold,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "child"})),
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let who = app.call_as(&child, "GET", "/api/v1/whoami", None).await.1;
    assert_eq!(
        who["scope"],
        json!({"team": "payments", "tier": "gold"}),
        "{who}"
    );
}

/// An admin limited to a scope is no longer an admin that can get everyone in: the last
/// unscoped admin cannot be scoped.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_unscoped_admin_cannot_be_scoped() {
    let app = App::spawn().await;
    let (code, body) = app
        .call(
            "PUT",
            "/api/v1/users/admin",
            Some(json!({"scope": {"team": "payments"}})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let users = app.ok("GET", "/api/v1/users", None).await;
    assert_eq!(users[0]["scope"], json!({}), "{users}");
    // A second admin, scoped, does not count: the first still cannot be demoted, and a change
    // that the guard refuses changes nothing of what it asked (one transaction).
    app.ok(
        "POST",
        "/api/v1/users",
        Some(
            json!({"name": "ada", "role": "admin", "password": "a long enough passphrase",
                    "scope": {"team": "payments"}}),
        ),
    )
    .await;
    let (code, body) = app
        .call(
            "PUT",
            "/api/v1/users/admin",
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = app
        .call(
            "PUT",
            "/api/v1/users/ada",
            Some(json!({"role": "operator", "scope": {"team": "ops"}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["role"], &body["scope"]),
        (&json!("operator"), &json!({"team": "ops"}))
    );
    let (code, body) = app
        .call(
            "PUT",
            "/api/v1/users/admin",
            Some(json!({"role": "operator", "scope": {"team": "ops"}})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let admin = app.ok("GET", "/api/v1/users", None).await;
    let admin = admin
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "admin")
        .unwrap()
        .clone();
    assert_eq!(
        (&admin["role"], &admin["scope"]),
        (&json!("admin"), &json!({})),
        "nothing of the refused change stayed: {admin}"
    );
}
