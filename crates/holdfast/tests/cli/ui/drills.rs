//! Restore drills in the web UI, in a real headless Chromium (`tests/ui/drills.cjs`) against a
//! real `holdfast serve` whose embedded agent drills into a throwaway PostgreSQL.

use serde_json::json;

use super::{node, shots};
use crate::helpers::PgDb;
use crate::server::{Meta, Server, TOKEN};

/// "Run drill now" from a plan's page: the drill's job page shows it passed with the report
/// and a text download for audits; the plan's page and the restore point's row then carry the
/// badge with the recovery time that the API reports.
#[test]
fn the_ui_runs_a_drill_and_shows_its_badge_on_the_plan_and_its_restore_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    let db = PgDb::new();
    db.pgbench(1);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(&json!({"name": "shop", "kind": "postgres", "url": db.url()})),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(&json!({"name": "shop", "source": "shop", "endpoint": "local", "schedule": "@daily",
            "verify": {"checks": [{"name": "accounts", "sql": "select count(*) from pgbench_accounts", "expect": "= 100000"}]}})),
    );
    let snap = crate::drills::backup(&s, "shop");

    let shots = shots(dir.path());
    let seen = node(
        "drills.cjs",
        &[&s.url, TOKEN, "shop", shots.to_str().unwrap()],
    );
    assert_eq!(seen["pointBefore"], "not yet", "{seen}");
    assert!(
        seen["result"].as_str().unwrap().contains("passed"),
        "{seen}"
    );
    let report = seen["report"].as_str().unwrap();
    assert!(
        report.contains(&snap[..8])
            && report.contains("pgbench_accounts")
            && report.contains("accounts"),
        "{seen}"
    );
    assert_eq!(seen["downloadStatus"], 200, "{seen}");
    assert_eq!(
        seen["download"].as_str().unwrap().trim(),
        report.trim(),
        "the download is the report shown"
    );

    // The badge says what the API says: the drill passed, with its recovery time.
    let drills = s.ok("GET", "/api/v1/plans/shop/drills", None);
    let d = &drills[0];
    assert_eq!(d["passed"], true, "{drills}");
    let rto = d["rto_secs"].as_f64().unwrap();
    let badge = seen["badge"].as_str().unwrap();
    let shown: f64 = badge
        .strip_prefix("verified ")
        .and_then(|b| b.rsplit_once(", restored in "))
        .and_then(|(_, s)| s.strip_suffix(" s"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the badge names no recovery time: {seen}"));
    assert!(
        (shown - rto).abs() <= 0.051,
        "badge {shown} s, API {rto} s: {seen}"
    );
    assert!(
        seen["badgeClass"].as_str().unwrap().contains("succeeded"),
        "{seen}"
    );
    assert_eq!(
        seen["pointAfter"].as_str().unwrap().replace(" report", ""),
        badge,
        "{seen}"
    );
}
