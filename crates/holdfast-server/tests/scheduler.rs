//! The scheduler and the job queue against both real stores (a SQLite file and a fresh database
//! on the machine's PostgreSQL), with an injected clock: every tick gets its `now`.

use std::collections::BTreeMap;

use holdfast_core::Schedule;
use holdfast_core::job::{JobKind, JobState, Trigger};
use holdfast_server::scheduler::{reap, tick};
use holdfast_store::testing::TestDb as Db;
use holdfast_store::{JobFilter, JobUpdate, Kind, NewResource, PlanCols, Store, on_both_stores};
use jiff::Timestamp;

fn ms(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn iso(ms: i64) -> String {
    Timestamp::from_millisecond(ms).unwrap().to_string()
}

/// A plan (with the source and endpoint rows it refers to) whose next fire is the schedule's
/// first time after `from`.
async fn plan(store: &Store, name: &str, cron: &str, tz: &str, from: i64) -> i64 {
    for kind in [Kind::Source, Kind::Endpoint] {
        if store.get(kind, "x").await.unwrap().is_none() {
            let spec = match kind {
                Kind::Endpoint => r#"{"kind":"local","url":"/srv/x","access_key_id":null}"#,
                _ => "{}",
            };
            let r = NewResource {
                name: "x".into(),
                spec: spec.into(),
                secrets: None,
                plan: None,
            };
            store.create(kind, &r, 0).await.unwrap();
        }
    }
    let spec = serde_json::json!({
        "name": name, "source": "x", "endpoint": "x", "schedule": cron, "timezone": tz,
        "retry": {"attempts": 2, "base_secs": 10, "cap_secs": 60}
    });
    let next = Schedule::parse(cron, tz)
        .unwrap()
        .next_after(Timestamp::from_millisecond(from).unwrap())
        .unwrap()
        .timestamp()
        .as_millisecond();
    let r = NewResource {
        name: name.into(),
        spec: spec.to_string(),
        secrets: None,
        plan: Some(PlanCols {
            source: "x".into(),
            endpoint: "x".into(),
            paused: false,
            next_fire_at: Some(next),
        }),
    };
    store.create(Kind::Plan, &r, from).await.unwrap();
    next
}

async fn jobs(store: &Store, plan: &str) -> Vec<holdfast_store::Job> {
    let mut j = store
        .jobs(&JobFilter {
            plan: Some(plan.into()),
            limit: 1000,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    j.reverse();
    j
}

/// Marks every queued or running job of the test done, as a worker would.
async fn finish_all(store: &Store, now: i64) {
    while let Some(j) = store.claim("test-worker", now, now + 1000).await.unwrap() {
        let done = JobUpdate {
            state: JobState::Succeeded,
            attempt: j.attempt,
            run_after: None,
            error: None,
            snapshot_id: None,
            bytes_read: 0,
            bytes_written: 0,
            now,
        };
        assert!(store.finish(j.id, "test-worker", &done).await.unwrap());
    }
}

/// Ticks every `step` minutes from `from` to `to`, finishing jobs between ticks; returns the
/// fire times of the jobs made.
async fn run_clock(store: &Store, plan: &str, from: i64, to: i64, step_min: i64) -> Vec<String> {
    let mut now = from;
    while now <= to {
        tick(store, now).await.unwrap();
        finish_all(store, now).await;
        now += step_min * 60_000;
    }
    jobs(store, plan)
        .await
        .iter()
        .map(|j| iso(j.fire_at.unwrap()))
        .collect()
}

async fn missed_fires_after_downtime_run_once(db: Db) {
    let s = db.store().await;
    let first = plan(&s, "hourly", "0 * * * *", "UTC", ms("2026-05-01T09:30:00Z")).await;
    assert_eq!(iso(first), "2026-05-01T10:00:00Z");
    // Down from 09:30 to 13:30: four fires missed, one runs, for the latest of them.
    let r = tick(&s, ms("2026-05-01T13:30:00Z")).await.unwrap();
    assert_eq!(r.queued.len(), 1);
    let j = jobs(&s, "hourly").await;
    assert_eq!(j.len(), 1);
    assert_eq!(iso(j[0].fire_at.unwrap()), "2026-05-01T13:00:00Z");
    assert_eq!(
        (j[0].trigger, j[0].state),
        (Trigger::Schedule, JobState::Queued)
    );
    // Ticking again before 14:00 fires nothing.
    let r = tick(&s, ms("2026-05-01T13:59:59Z")).await.unwrap();
    assert!(r.queued.is_empty() && r.skipped.is_empty());
    let p = s.must_get(Kind::Plan, "hourly").await.unwrap();
    assert_eq!(
        iso(p.plan.unwrap().next_fire_at.unwrap()),
        "2026-05-01T14:00:00Z"
    );
}

async fn fires_in_the_plan_time_zone_across_dst(db: Db) {
    let s = db.store().await;
    // Europe/Berlin: 02:30 does not exist on 2026-03-29 (it runs at 03:00 local, 01:00Z) and
    // happens twice on 2026-10-25 (it runs once).
    let from = ms("2026-03-28T12:00:00Z");
    plan(&s, "spring", "30 2 * * *", "Europe/Berlin", from).await;
    let fired = run_clock(&s, "spring", from, ms("2026-03-30T12:00:00Z"), 5).await;
    assert_eq!(
        fired,
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        "one fire per day, local time"
    );
    let from = ms("2026-10-24T12:00:00Z");
    plan(&s, "autumn", "30 2 * * *", "Europe/Berlin", from).await;
    let fired = run_clock(&s, "autumn", from, ms("2026-10-26T12:00:00Z"), 5).await;
    assert_eq!(fired, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
}

async fn paused_plans_do_not_fire_and_resume_from_now(db: Db) {
    let s = db.store().await;
    let t0 = ms("2026-06-01T00:00:00Z");
    plan(&s, "p", "*/10 * * * *", "UTC", t0).await;
    s.set_paused("p", true, None, t0).await.unwrap();
    let r = tick(&s, ms("2026-06-01T05:00:00Z")).await.unwrap();
    assert!(r.queued.is_empty());
    // Resumed at 05:03, the next fire is 05:10; the fires missed while paused never run.
    s.set_paused("p", false, Some(ms("2026-06-01T05:10:00Z")), t0)
        .await
        .unwrap();
    assert!(
        tick(&s, ms("2026-06-01T05:09:00Z"))
            .await
            .unwrap()
            .queued
            .is_empty()
    );
    assert_eq!(
        tick(&s, ms("2026-06-01T05:10:00Z"))
            .await
            .unwrap()
            .queued
            .len(),
        1
    );
}

async fn a_fire_while_the_last_backup_runs_is_recorded_as_skipped(db: Db) {
    let s = db.store().await;
    let t0 = ms("2026-06-01T00:00:00Z");
    plan(&s, "busy", "0 * * * *", "UTC", t0).await;
    let r = tick(&s, ms("2026-06-01T01:00:00Z")).await.unwrap();
    let running = r.queued[0];
    s.claim("w", ms("2026-06-01T01:00:01Z"), ms("2026-06-01T03:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let r = tick(&s, ms("2026-06-01T02:00:00Z")).await.unwrap();
    assert!(r.queued.is_empty());
    let skipped = s.must_job(r.skipped[0]).await.unwrap();
    assert_eq!(skipped.state, JobState::Skipped);
    assert!(
        skipped.error.unwrap().contains(&format!("job {running}")),
        "the skip names the job in the way"
    );
    // Nobody claims a skipped job.
    assert!(
        s.claim("w2", ms("2026-06-01T02:00:01Z"), ms("2026-06-01T03:00:00Z"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn two_replicas_make_exactly_one_job_per_fire(db: Db) {
    // Two stores with pools of their own on one database: two server replicas.
    let a = db.store().await;
    let b = db.store().await;
    let t0 = ms("2026-07-01T00:00:00Z");
    for i in 0..20 {
        plan(&a, &format!("plan-{i}"), "*/5 * * * *", "UTC", t0).await;
    }
    for slot in 1..=6 {
        let now = t0 + slot * 5 * 60_000;
        let (ra, rb) = tokio::join!(tick(&a, now), tick(&b, now));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(
            ra.queued.len() + rb.queued.len() + ra.skipped.len() + rb.skipped.len(),
            20
        );
        // Both replicas also race their workers for the queue.
        tokio::join!(finish_all(&a, now), finish_all(&b, now));
    }
    let mut per_fire: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for i in 0..20 {
        for j in jobs(&a, &format!("plan-{i}")).await {
            assert_eq!(j.state, JobState::Succeeded, "job {} of {:?}", j.id, j.plan);
            *per_fire
                .entry((j.plan.unwrap(), j.fire_at.unwrap()))
                .or_default() += 1;
        }
    }
    assert_eq!(per_fire.len(), 20 * 6);
    assert!(per_fire.values().all(|&n| n == 1), "{per_fire:?}");
}

async fn an_expired_lease_requeues_then_gives_up(db: Db) {
    let s = db.store().await;
    let t0 = ms("2026-08-01T00:00:00Z");
    plan(&s, "lease", "0 * * * *", "UTC", t0).await; // 2 attempts, base 10 s
    let id = tick(&s, ms("2026-08-01T01:00:00Z")).await.unwrap().queued[0];
    let now = ms("2026-08-01T01:00:01Z");
    let j = s
        .claim("dead-worker", now, now + 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((j.id, j.attempt), (id, 1));
    // Before the lease runs out nothing happens; after, the job is queued again, attempt 2,
    // after the backoff.
    assert!(reap(&s, now + 29_000, 0.0).await.unwrap().is_empty());
    assert_eq!(reap(&s, now + 31_000, 0.0).await.unwrap(), [id]);
    let j = s.must_job(id).await.unwrap();
    assert_eq!(
        (j.state, j.attempt, j.trigger),
        (JobState::Queued, 2, Trigger::Retry)
    );
    assert_eq!(
        j.run_after,
        now + 31_000 + 5_000,
        "half of the 10 s base with zero jitter"
    );
    assert!(j.error.unwrap().contains("lease expired"));
    // The dead worker's late report is refused: another attempt owns the job now.
    let late = JobUpdate {
        state: JobState::Succeeded,
        attempt: 1,
        run_after: None,
        error: None,
        snapshot_id: None,
        bytes_read: 0,
        bytes_written: 0,
        now: now + 32_000,
    };
    assert!(!s.finish(id, "dead-worker", &late).await.unwrap());
    assert!(
        s.claim("w2", now + 32_000, now + 60_000)
            .await
            .unwrap()
            .is_none(),
        "backoff"
    );
    let later = now + 36_001;
    let j = s.claim("w2", later, later + 1_000).await.unwrap().unwrap();
    assert_eq!(j.attempt, 2);
    assert_eq!(reap(&s, later + 2_000, 0.0).await.unwrap(), [id]);
    let j = s.must_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().contains("gave up after 2 attempts"));
    let log: Vec<String> = s
        .log(id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].contains("agent dead-worker stopped renewing its lease"));
}

/// An endpoint's prune fires on the endpoint's own schedule (once per slot, on every replica
/// together), and the queue keeps a prune and the backups into the same endpoint apart.
async fn prune_fires_on_the_endpoint_schedule_and_waits_for_backups(db: Db) {
    let store = db.store().await;
    let from = ms("2026-03-01T00:00:00Z");
    plan(&store, "p", "0 3 * * *", "UTC", from).await;
    // Endpoint `x` (the plan's) is pruned on Sundays at 04:00 UTC.
    let sunday = ms("2026-03-01T04:00:00Z");
    store.set_next_prune("x", Some(sunday)).await.unwrap();

    // A backup of the plan is running when the prune fires.
    let at_three = ms("2026-03-01T03:00:00Z");
    tick(&store, at_three).await.unwrap();
    let backup = store
        .claim("w1", at_three, at_three + 3_600_000)
        .await
        .unwrap()
        .expect("the backup is claimed");
    assert_eq!(backup.kind, JobKind::Backup);
    let before = tick(&store, sunday - 1).await.unwrap();
    assert!(before.prunes.is_empty());
    let replica = db.store().await;
    let (a, b) = tokio::join!(tick(&store, sunday), tick(&replica, sunday));
    let prunes: Vec<i64> = [a.unwrap().prunes, b.unwrap().prunes].concat();
    assert_eq!(prunes.len(), 1, "one prune job per slot: {prunes:?}");
    assert!(
        store
            .claim("w2", sunday, sunday + 60_000)
            .await
            .unwrap()
            .is_none(),
        "the prune must wait for the running backup into its endpoint"
    );
    let done = JobUpdate {
        state: JobState::Succeeded,
        attempt: 1,
        run_after: None,
        error: None,
        snapshot_id: None,
        bytes_read: 0,
        bytes_written: 0,
        now: sunday + 1,
    };
    assert!(store.finish(backup.id, "w1", &done).await.unwrap());
    let prune = store
        .claim("w2", sunday + 2, sunday + 60_000)
        .await
        .unwrap()
        .expect("the prune runs once the backup is done");
    assert_eq!((prune.kind, prune.id), (JobKind::Prune, prunes[0]));
    assert_eq!(prune.endpoint.as_deref(), Some("x"));

    // While it runs, the plan's next backup is queued but not started.
    let monday = ms("2026-03-02T03:00:00Z");
    store.set_next_prune("x", None).await.unwrap();
    tick(&store, monday).await.unwrap();
    assert!(
        store
            .claim("w1", monday, monday + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.finish(prune.id, "w2", &done).await.unwrap());
    let next = store
        .claim("w1", monday + 1, monday + 60_000)
        .await
        .unwrap();
    assert_eq!(next.map(|j| j.kind), Some(JobKind::Backup));
}

/// A plan's drill schedule fires one drill per slot, whatever the number of replicas ticking,
/// apart from its backups (a drill and a backup due the same minute both run), never while
/// another drill of the plan is pending, and check drills read the parts of the repository in
/// turn.
async fn drills_fire_on_their_own_schedule_once_per_slot_and_go_round_the_parts(db: Db) {
    let store = &db.store().await;
    let from = ms("2026-03-01T00:30:00Z");
    plan(store, "drilled", "0 * * * *", "UTC", from).await;
    // The plan's `verify` section, as the API stores it, and its first slot.
    let mut r = store.get(Kind::Plan, "drilled").await.unwrap().unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap();
    spec["verify"] = serde_json::json!({"schedule": "0 * * * *", "mode": "check", "parts": 3});
    r.spec = spec.to_string();
    let new = NewResource {
        name: r.name.clone(),
        spec: r.spec.clone(),
        secrets: None,
        plan: r.plan.clone(),
    };
    store.update(Kind::Plan, &new, None, from).await.unwrap();
    let parsed: holdfast_core::plan::PlanSpec = serde_json::from_str(&r.spec).unwrap();
    let first = holdfast_server::scheduler::next_verify(&parsed, from).unwrap();
    assert_eq!(iso(first), "2026-03-01T01:00:00Z");
    store.set_next_verify("drilled", Some(first)).await.unwrap();

    let mut parts = Vec::new();
    for hour in 1..=4 {
        let now = ms(&format!("2026-03-01T0{hour}:00:05Z"));
        // Two replicas tick the same moment.
        let (a, b) = tokio::join!(tick(store, now), tick(store, now));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            a.drills.len() + b.drills.len(),
            1,
            "hour {hour}: {a:?} {b:?}"
        );
        // The backup of the same slot fired too.
        assert_eq!(a.queued.len() + b.queued.len(), 1, "hour {hour}");
        let drills: Vec<_> = jobs(store, "drilled")
            .await
            .into_iter()
            .filter(|j| j.kind == JobKind::Verify)
            .collect();
        assert_eq!(drills.len(), hour, "hour {hour}");
        let last = drills.last().unwrap();
        assert_eq!(last.trigger, Trigger::Schedule);
        let params: serde_json::Value = serde_json::from_str(&last.params).unwrap();
        parts.push(params["part"].clone());
        finish_all(store, now).await;
    }
    assert_eq!(
        parts,
        [
            serde_json::json!([1, 3]),
            serde_json::json!([2, 3]),
            serde_json::json!([3, 3]),
            serde_json::json!([1, 3])
        ]
    );

    // A slot due while the last drill is still queued makes no second one.
    let now = ms("2026-03-01T05:00:05Z");
    tick(store, now).await.unwrap();
    let now = ms("2026-03-01T06:00:05Z");
    let report = tick(store, now).await.unwrap();
    assert!(report.drills.is_empty(), "{report:?}");
    // ... and skips no part: the next drill reads the part after the pending one's.
    finish_all(store, now).await;
    let now = ms("2026-03-01T07:00:05Z");
    assert_eq!(tick(store, now).await.unwrap().drills.len(), 1);
    let last = jobs(store, "drilled")
        .await
        .into_iter()
        .rfind(|j| j.kind == JobKind::Verify)
        .unwrap();
    let params: serde_json::Value = serde_json::from_str(&last.params).unwrap();
    assert_eq!(params["part"], serde_json::json!([3, 3]));
}

on_both_stores!(
    missed_fires_after_downtime_run_once,
    fires_in_the_plan_time_zone_across_dst,
    paused_plans_do_not_fire_and_resume_from_now,
    a_fire_while_the_last_backup_runs_is_recorded_as_skipped,
    two_replicas_make_exactly_one_job_per_fire,
    an_expired_lease_requeues_then_gives_up,
    prune_fires_on_the_endpoint_schedule_and_waits_for_backups,
    drills_fire_on_their_own_schedule_once_per_slot_and_go_round_the_parts,
);
