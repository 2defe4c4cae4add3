//! The store's contract, run on both real stores (a SQLite file and a fresh PostgreSQL
//! database): what the queue promises its callers, whatever the database underneath.

use holdfast_core::job::{JobKind, JobState, Trigger};
use holdfast_store::testing::TestDb;
use holdfast_store::{JobUpdate, NewJob, Store, StoreError, on_both_stores};

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

on_both_stores!(
    jobs_keep_their_kind_trigger_and_state,
    only_one_agent_claims_a_job,
    a_requested_cancel_survives_a_retry,
    a_cancel_survives_a_lost_lease,
    a_row_the_code_cannot_read_is_an_error_not_a_panic,
    a_missing_column_is_an_error_not_a_panic,
);
