//! A user scoped to plans by label, in the web UI (`tests/ui/scope.cjs`, real Chromium).

use serde_json::json;

use super::node;
use crate::server::{Meta, Server};

/// The dashboard and the jobs list show the scope's plans only; another team's plan and job
/// pages are "not found", and its Run now, posted anyway, is refused and runs nothing.
#[test]
fn a_scoped_user_sees_only_its_teams_plans_and_jobs_in_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("server"),
        &Meta::Sqlite,
        &["--workers", "0"],
    );
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "gen", "kind": "command", "url": "cmd:x", "command": "echo x"})),
    );
    for (plan, team) in [("pay-nightly", "payments"), ("ops-nightly", "ops")] {
        s.ok(
            "POST",
            "/api/v1/plans",
            Some(&json!({"name": plan, "source": "gen", "endpoint": "local",
                         "schedule": "@daily", "labels": {"team": team}})),
        );
    }
    let ops_job = s.ok("POST", "/api/v1/plans/ops-nightly/run", None)["id"].to_string();
    s.ok("POST", "/api/v1/plans/pay-nightly/run", None);
    let password = "payments passphrase of the test";
    s.ok(
        "POST",
        "/api/v1/users",
        Some(
            &json!({"name": "pat", "role": "operator", "password": password,
                     "scope": {"team": "payments"}}),
        ),
    );
    let seen = node(
        "scope.cjs",
        &[&s.url, "pat", password, "ops-nightly", &ops_job],
    );
    assert_eq!(seen["who"], "pat · operator · team=payments", "{seen}");
    assert_eq!(seen["plans"], json!(["pay-nightly"]), "{seen}");
    assert_eq!(seen["auditLink"], 0, "{seen}");
    assert_eq!(seen["hiddenPlanStatus"], 404, "{seen}");
    assert_eq!(seen["hiddenJobStatus"], 404, "{seen}");
    assert_eq!(seen["jobPlans"], json!(["pay-nightly"]), "{seen}");
    assert_eq!(seen["forcedRun"], 404, "{seen}");
    assert_eq!(seen["newPlanLabels"], "team=payments", "{seen}");
    let jobs = s.ok("GET", "/api/v1/jobs?plan=ops-nightly", None);
    assert_eq!(
        jobs.as_array().unwrap().len(),
        1,
        "the forced run queued nothing: {jobs}"
    );
}
