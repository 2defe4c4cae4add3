//! The store's contract, run on both real stores (a SQLite file and a fresh PostgreSQL
//! database): what the queue promises its callers, whatever the database underneath.

use holdfast_core::job::{JobKind, JobState, Trigger};
use holdfast_store::testing::TestDb;
use holdfast_store::{
    Attempt, JobUpdate, NewEvent, NewJob, Store, StoreError, UserChange, UserRow, on_both_stores,
};

const NOW: i64 = 1_800_000_000_000;

fn backup() -> NewJob {
    NewJob {
        kind: JobKind::Backup,
        plan: None,
        endpoint: Some("local".into()),
        trigger: Trigger::Manual,
        max_attempts: 3,
        params: "{}".into(),
        fire_at: None,
        run_after: NOW,
    }
}

/// The end of an attempt that asks for a retry.
fn retry_later(attempt: i64) -> JobUpdate {
    JobUpdate {
        state: JobState::Queued,
        attempt: attempt + 1,
        run_after: Some(NOW + 60_000),
        error: Some("storage timed out".into()),
        snapshot_id: None,
        bytes_read: 10,
        bytes_written: 5,
        now: NOW + 2,
    }
}

async fn claimed(s: &Store, id: i64, owner: &str) {
    let j = s
        .claim_job(id, owner, NOW + 1, NOW + 1_000)
        .await
        .unwrap()
        .expect("the queued job is claimed");
    assert_eq!(
        (j.state, j.lease_owner.as_deref()),
        (JobState::Running, Some(owner))
    );
}

async fn jobs_keep_their_kind_trigger_and_state(db: TestDb) {
    let s = db.store().await;
    let mut prune = backup();
    prune.kind = JobKind::Prune;
    prune.trigger = Trigger::Schedule;
    let id = s.enqueue(&prune, NOW).await.unwrap();
    let j = s.must_job(id).await.unwrap();
    assert_eq!(
        (j.kind, j.trigger, j.state, j.attempt),
        (JobKind::Prune, Trigger::Schedule, JobState::Queued, 1)
    );
}

async fn only_one_agent_claims_a_job(db: TestDb) {
    let s = db.store().await;
    let id = s.enqueue(&backup(), NOW).await.unwrap();
    claimed(&s, id, "a").await;
    assert!(
        s.claim_job(id, "b", NOW + 1, NOW + 1_000)
            .await
            .unwrap()
            .is_none()
    );
    // Only the lease holder may end it.
    assert!(!s.finish(id, "b", &retry_later(1)).await.unwrap());
    assert!(s.finish(id, "a", &retry_later(1)).await.unwrap());
    let j = s.must_job(id).await.unwrap();
    assert_eq!(
        (j.state, j.attempt, j.trigger, j.run_after),
        (JobState::Queued, 2, Trigger::Retry, NOW + 60_000)
    );
}

async fn a_requested_cancel_survives_a_retry(db: TestDb) {
    let s = db.store().await;
    let id = s.enqueue(&backup(), NOW).await.unwrap();
    claimed(&s, id, "a").await;
    let j = s.cancel(id, NOW + 1).await.unwrap();
    assert!(j.cancel_requested && j.state == JobState::Running);
    // The attempt fails in a way that would be retried: the job ends cancelled instead.
    assert!(s.finish(id, "a", &retry_later(1)).await.unwrap());
    let j = s.must_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Cancelled, "{j:?}");
    assert!(j.finished_at.is_some());
    assert!(
        s.claim_candidates(NOW + 120_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_cancel_survives_a_lost_lease(db: TestDb) {
    let s = db.store().await;
    let id = s.enqueue(&backup(), NOW).await.unwrap();
    claimed(&s, id, "a").await;
    s.cancel(id, NOW + 1).await.unwrap();
    let expired = s.expired(NOW + 5_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(s.take_back(&expired[0], &retry_later(1)).await.unwrap());
    assert_eq!(s.must_job(id).await.unwrap().state, JobState::Cancelled);
}

async fn a_row_the_code_cannot_read_is_an_error_not_a_panic(db: TestDb) {
    let s = db.store().await;
    let id = s.enqueue(&backup(), NOW).await.unwrap();
    // Another version of Holdfast (or a hand edit) wrote a state this one does not know.
    db.raw_sql(&format!("UPDATE jobs SET state = 'paused' WHERE id = {id}"));
    let err = s.must_job(id).await.unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("state") && msg.contains("paused"),
        "the error names the column and the value: {msg}"
    );
    // The claim walk (queued jobs only) is not blocked by it; a list that includes the row
    // fails the same way instead of crashing or skipping it silently.
    assert!(s.claim_candidates(NOW, 10).await.is_ok());
    assert!(
        s.jobs(&holdfast_store::JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .is_err()
    );
}

async fn a_missing_column_is_an_error_not_a_panic(db: TestDb) {
    let s = db.store().await;
    db.raw_sql("ALTER TABLE agents DROP COLUMN hostname");
    let err = s.agents().await.unwrap_err();
    assert!(err.to_string().contains("hostname"), "{err}");
}

fn event(dedup: &str, to: &[&str]) -> NewEvent {
    NewEvent {
        kind: "backup.failed".into(),
        plan: Some("p".into()),
        subject: "p".into(),
        dedup: dedup.into(),
        job_id: None,
        at: NOW,
        alert: true,
        payload: "{}".into(),
        to: to.iter().map(|n| (n.to_string(), NOW)).collect(),
    }
}

/// An event recorded twice (a crash before the job was marked, two evaluators) happens once,
/// with its deliveries once.
async fn an_event_happens_once_whoever_records_it(db: TestDb) {
    let s = db.store().await;
    let job = s.enqueue(&backup(), NOW).await.unwrap();
    assert!(
        s.record_evaluation(None, None, &[event("failed:1", &["a", "b"])])
            .await
            .unwrap()
    );
    assert!(
        s.record_evaluation(None, None, &[event("failed:1", &["a", "b"])])
            .await
            .unwrap()
    );
    assert_eq!(s.events(10).await.unwrap().len(), 1);
    assert_eq!(s.deliveries(None, 10).await.unwrap().len(), 2);
    // A job is marked seen once: the second evaluator's whole transaction is refused.
    assert!(
        s.record_evaluation(Some((job, 0, 2)), None, &[event("x", &["a"])])
            .await
            .unwrap()
    );
    assert!(
        !s.record_evaluation(Some((job, 0, 2)), None, &[event("y", &["a"])])
            .await
            .unwrap()
    );
    let kinds: Vec<String> = s
        .events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.dedup)
        .collect();
    assert_eq!(kinds, ["x", "failed:1"]);
}

/// Each delivery goes to one sender; a sender whose lease ran out loses it to the next; only
/// the lease holder records the attempt; a retry waits for its time.
async fn a_delivery_is_claimed_by_one_sender_at_a_time(db: TestDb) {
    let s = db.store().await;
    s.record_evaluation(None, None, &[event("e", &["hook"])])
        .await
        .unwrap();
    let (d, e) = s
        .claim_delivery("r1", NOW, NOW + 1_000, None)
        .await
        .unwrap()
        .expect("due");
    assert_eq!((d.notifier.as_str(), e.dedup.as_str()), ("hook", "e"));
    assert!(
        s.claim_delivery("r2", NOW + 10, NOW + 1_010, None)
            .await
            .unwrap()
            .is_none()
    );
    // r1 died: after its lease, r2 takes it; r1's late answer is refused.
    let (d2, _) = s
        .claim_delivery("r2", NOW + 1_001, NOW + 2_000, None)
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(d2.id, d.id);
    let failed = Attempt {
        at: NOW + 1_002,
        ok: false,
        status: Some("HTTP 503".into()),
        error: Some("busy".into()),
        retry_at: Some(NOW + 6_000),
    };
    assert!(!s.finish_delivery(d.id, "r1", &failed).await.unwrap());
    assert!(s.finish_delivery(d.id, "r2", &failed).await.unwrap());
    assert!(
        s.claim_delivery("r1", NOW + 5_999, NOW + 9_000, None)
            .await
            .unwrap()
            .is_none()
    );
    // A grouping sender may take it early.
    let early = s
        .claim_delivery("r1", NOW + 5_999, NOW + 9_000, Some(("hook", NOW + 6_000)))
        .await
        .unwrap();
    assert!(early.is_some());
    let sent = Attempt {
        at: NOW + 6_001,
        ok: true,
        status: Some("HTTP 200".into()),
        error: None,
        retry_at: None,
    };
    assert!(s.finish_delivery(d.id, "r1", &sent).await.unwrap());
    let (d, _) = s.delivery(d.id).await.unwrap().unwrap();
    assert_eq!(
        (d.state.as_str(), d.attempts, d.sent_at),
        ("sent", 2, Some(NOW + 6_001))
    );
    let tries: Vec<Option<String>> = s
        .delivery_attempts(d.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(tries, [Some("HTTP 503".into()), Some("HTTP 200".into())]);
    assert_eq!(s.sent_since("hook", NOW).await.unwrap(), 1);
}

/// One owner at a time holds a named lease; it passes on when it expires.
async fn a_lease_has_one_holder(db: TestDb) {
    let s = db.store().await;
    assert!(s.take_lease("alerts", "r1", NOW, NOW + 100).await.unwrap());
    assert!(
        !s.take_lease("alerts", "r2", NOW + 50, NOW + 150)
            .await
            .unwrap()
    );
    assert!(
        s.take_lease("alerts", "r1", NOW + 60, NOW + 160)
            .await
            .unwrap()
    );
    assert!(
        s.take_lease("alerts", "r2", NOW + 161, NOW + 300)
            .await
            .unwrap()
    );
    assert!(
        !s.take_lease("alerts", "r1", NOW + 200, NOW + 400)
            .await
            .unwrap()
    );
}

fn viewer() -> UserChange<'static> {
    UserChange {
        role: Some("viewer"),
        ..Default::default()
    }
}

fn admin(name: &str) -> UserRow {
    UserRow {
        id: 0,
        name: name.into(),
        kind: "user".into(),
        role: "admin".into(),
        password_hash: Some("$argon2id$test".into()),
        failed_logins: 0,
        locked_until: None,
        created_at: NOW,
        disabled_at: None,
        oidc_subject: None,
        scope: None,
    }
}

/// Two admins demoted at the same moment: one change wins, the other is refused, and an
/// admin is left (on PostgreSQL this needs the row locks: READ COMMITTED alone lets both
/// through). The last one can be neither disabled nor deleted.
async fn the_last_admin_stays_even_when_two_demote_at_once(db: TestDb) {
    let s = db.store().await;
    let mut survivor = None;
    for round in 0..5 {
        let a = s.insert_user(&admin(&format!("a{round}"))).await.unwrap();
        let b = s.insert_user(&admin(&format!("b{round}"))).await.unwrap();
        if let Some(prev) = survivor {
            s.update_user(prev, &viewer()).await.unwrap();
        }
        let demote = viewer();
        let (x, y) = tokio::join!(s.update_user(a, &demote), s.update_user(b, &demote));
        let refused = [&x, &y]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::LastAdmin)))
            .count();
        assert_eq!(refused, 1, "round {round}: {x:?} {y:?}");
        let admins: Vec<i64> = s
            .users()
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.role == "admin")
            .map(|u| u.id)
            .collect();
        assert_eq!(admins.len(), 1, "round {round}");
        survivor = Some(admins[0]);
    }
    let last = survivor.unwrap();
    assert!(matches!(
        s.update_user(
            last,
            &UserChange {
                disabled_at: Some(Some(NOW)),
                ..Default::default()
            },
        )
        .await,
        Err(StoreError::LastAdmin)
    ));
    assert!(matches!(
        s.delete_user(last).await,
        Err(StoreError::LastAdmin)
    ));
}

/// A scoped caller's job list: only its plans' jobs, with the other filters and the page
/// cursor still applied (placeholders numbered right on PostgreSQL), none for no plans.
async fn a_job_list_can_be_limited_to_some_plans(db: TestDb) {
    let s = db.store().await;
    let mut ids = Vec::new();
    for plan in ["pay-a", "pay-b", "ops", "pay-a"] {
        let mut j = backup();
        j.plan = Some(plan.into());
        ids.push(s.enqueue(&j, NOW).await.unwrap());
    }
    async fn list(s: &Store, plans: &[&str], before: Option<i64>) -> Vec<i64> {
        s.jobs(&holdfast_store::JobFilter {
            plans: Some(plans.iter().map(|p| p.to_string()).collect()),
            kind: Some(JobKind::Backup),
            before,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect()
    }
    assert_eq!(
        list(&s, &["pay-a", "pay-b"], None).await,
        [ids[3], ids[1], ids[0]]
    );
    assert_eq!(
        list(&s, &["pay-a", "pay-b"], Some(ids[3])).await,
        [ids[1], ids[0]]
    );
    assert!(list(&s, &[], None).await.is_empty());
}

on_both_stores!(
    a_job_list_can_be_limited_to_some_plans,
    the_last_admin_stays_even_when_two_demote_at_once,
    an_event_happens_once_whoever_records_it,
    a_delivery_is_claimed_by_one_sender_at_a_time,
    a_lease_has_one_holder,
    jobs_keep_their_kind_trigger_and_state,
    only_one_agent_claims_a_job,
    a_requested_cancel_survives_a_retry,
    a_cancel_survives_a_lost_lease,
    a_row_the_code_cannot_read_is_an_error_not_a_panic,
    a_missing_column_is_an_error_not_a_panic,
);
