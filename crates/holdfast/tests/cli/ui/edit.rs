//! Editing and deleting in the web UI, in a real headless Chromium (`tests/ui/edit.cjs`)
//! against a real `holdfast serve`.

use serde_json::json;

use super::node;
use crate::server::{Meta, Server, TOKEN};

/// Editing and deleting through the forms: a source's database and a plan's schedule changed
/// (the API shows them), a bad cron refused beside its field, two tabs saving one plan (the
/// second is told it changed meanwhile), an endpoint a plan uses refused with the server's 409,
/// a plan deleted after a confirmation that names what stays (its jobs and restore points do),
/// then its source; an operator edits a hooked plan without seeing its hooks. Each is in the
/// audit log under the session's user.
#[test]
fn the_ui_edits_and_deletes_sources_plans_and_endpoints_after_confirmations() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "shop", "kind": "postgres",
            "url": "postgres://holdfast@127.0.0.1:5432/shop", "password": "ui-source-secret"})),
    );
    for (name, cmd) in [("gen", "echo restore-me"), ("gen2", "echo other")] {
        s.ok(
            "POST",
            "/api/v1/sources",
            Some(&json!({"name": name, "kind": "command", "url": "cmd:x", "command": cmd})),
        );
    }
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "shop-nightly", "source": "shop", "endpoint": "local",
            "schedule": "0 3 * * *", "timezone": "UTC",
            "retention": {"style": "gfs", "daily": 7, "weekly": 4}}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "nightly", "source": "gen", "endpoint": "local", "schedule": "@daily"}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "hooked", "source": "gen2", "endpoint": "local", "schedule": "@daily",
            "hooks": {"pre_backup_check": {"run": "true", "timeout_secs": 30}}}),
        ),
    );
    let id = s.ok("POST", "/api/v1/plans/nightly/run", None)["id"]
        .as_i64()
        .unwrap();
    let job = s.wait_job(id, |st| st == "succeeded" || st == "failed");
    assert_eq!(job["state"], "succeeded", "{job}");
    let retention = s.ok("GET", "/api/v1/plans/shop-nightly", None)["retention"].clone();
    let password = "operator passphrase of the test";
    s.ok(
        "POST",
        "/api/v1/users",
        Some(&json!({"name": "otto", "role": "operator", "password": password})),
    );

    let seen = node("edit.cjs", &[&s.url, TOKEN, "otto", password]);

    // The source: shown without its password, its new database saved, the password kept.
    assert_eq!(
        seen["sourceUrl"], "postgres://holdfast@127.0.0.1:5432/shop",
        "{seen}"
    );
    assert_eq!(seen["sourcePasswordField"], "", "{seen}");
    assert_eq!(seen["secretShown"], false, "{seen}");
    assert!(
        seen["sourceUsedBy"]
            .as_str()
            .unwrap()
            .contains("shop-nightly"),
        "{seen}"
    );
    let src = s.ok("GET", "/api/v1/sources/shop", None);
    assert_eq!(
        src["url"], "postgres://holdfast@127.0.0.1:5432/shop_v2",
        "{src}"
    );
    assert_eq!(src["password_set"], true, "{src}");

    // The plan: the form was filled from it; the schedule saved; the bad cron and the stale
    // tab's save stored nothing.
    assert_eq!(seen["editSchedule"], "0 3 * * *", "{seen}");
    assert_eq!(seen["editKeepDaily"], "7", "{seen}");
    assert_eq!(seen["adminHookFields"], 9, "{seen}");
    assert!(
        seen["planLine"].as_str().unwrap().contains("15 2 * * *"),
        "{seen}"
    );
    assert!(seen["cronError"].as_str().unwrap().contains("61"), "{seen}");
    assert_eq!(seen["cronKept"], "61 * * * *", "{seen}");
    assert!(
        seen["meanwhile"]
            .as_str()
            .unwrap()
            .contains("Changed meanwhile, nothing was saved"),
        "{seen}"
    );
    let plan = s.ok("GET", "/api/v1/plans/shop-nightly", None);
    assert_eq!(
        plan["schedule"], "30 4 * * *",
        "the other tab's save: {plan}"
    );
    assert_eq!(
        plan["retention"], retention,
        "retention the form left alone stays as stored: {plan}"
    );

    // The endpoint a plan uses: the server's 409, shown; the endpoint is still there.
    assert!(
        seen["endpointConsequences"]
            .as_str()
            .unwrap()
            .contains("the server refuses to delete it"),
        "{seen}"
    );
    let refused = seen["endpointRefused"].as_str().unwrap();
    assert!(
        refused.contains("endpoint `local` is used by plan(s)") && refused.contains("nightly"),
        "{seen}"
    );
    s.ok("GET", "/api/v1/endpoints/local", None);

    // The plan: the confirmation named it and what stays; it is gone, its job and restore
    // point are not (as the API's delete says).
    assert_eq!(seen["planTitle"], "Delete plan nightly?", "{seen}");
    let said = seen["planConsequences"].as_str().unwrap();
    for part in [
        "Its schedule stops",
        "Its 1 restore point stays in the repository of endpoint local",
        "restic",
        "Its 1 job stays in the job history",
    ] {
        assert!(said.contains(part), "`{part}` in {seen}");
    }
    assert_eq!(seen["planRowsAfter"], 0, "{seen}");
    assert_eq!(s.call("GET", "/api/v1/plans/nightly", None).0, 404);
    let jobs = s.ok("GET", "/api/v1/jobs?plan=nightly", None);
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    let points = s.ok("GET", "/api/v1/restore-points?endpoint=local", None);
    assert!(
        points
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["plan"] == "nightly"
                && (p["id"] == job["snapshot_id"] || p["short_id"] == job["snapshot_id"])),
        "{points} {job}"
    );

    // Its source, once no plan used it.
    assert_eq!(seen["genUsedBy"], "No plan backs it up.", "{seen}");
    assert!(
        seen["sourceConsequences"]
            .as_str()
            .unwrap()
            .contains("Holdfast forgets source gen"),
        "{seen}"
    );
    assert_eq!(seen["genRowsAfter"], 0, "{seen}");
    assert_eq!(s.call("GET", "/api/v1/sources/gen", None).0, 404);

    // The operator's edit of a hooked plan: no hook fields, the schedule saved, the hooks kept.
    assert_eq!(seen["operatorHookFields"], 0, "{seen}");
    assert!(
        seen["operatorPlanLine"]
            .as_str()
            .unwrap()
            .contains("@weekly"),
        "{seen}"
    );
    let hooked = s.ok("GET", "/api/v1/plans/hooked", None);
    assert_eq!(hooked["schedule"], "@weekly", "{hooked}");
    assert_eq!(
        hooked["hooks"],
        json!({"pre_backup_check": {"run": "true", "timeout_secs": 30}}),
        "{hooked}"
    );

    // The audit log has each, with the session's user and the outcome.
    let audit = s.ok("GET", "/api/v1/audit?limit=1000", None);
    let entries = audit.as_array().unwrap();
    let admin = entries
        .iter()
        .find(|e| e["action"] == "session.sign-in" && e["actor"] != "otto")
        .map(|e| e["actor"].as_str().unwrap())
        .unwrap();
    let has = |actor: &str, action: &str, resource: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["resource"] == resource
                && e["outcome"] == outcome
        })
    };
    for (actor, action, resource, outcome) in [
        (admin, "ui.sources.update", "sources/shop", "ok"),
        (admin, "ui.plans.edit", "plans/shop-nightly", "ok"),
        (admin, "ui.plans.edit", "plans/shop-nightly", "412"),
        (admin, "ui.endpoints.delete", "endpoints/local", "409"),
        (admin, "ui.plans.delete", "plans/nightly", "ok"),
        (admin, "ui.sources.delete", "sources/gen", "ok"),
        ("otto", "ui.plans.edit", "plans/hooked", "ok"),
    ] {
        assert!(
            has(actor, action, resource, outcome),
            "{actor} {action} {resource} {outcome} in {audit}"
        );
    }
}
