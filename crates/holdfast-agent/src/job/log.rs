//! The job's log: lines go to the server in batches, in order, from a task of their own.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::link::Link;

/// The job's log: lines go to the server in batches, in order, from a task of their own.
#[derive(Clone)]
pub struct JobLog {
    tx: mpsc::UnboundedSender<String>,
}

impl JobLog {
    pub(super) fn start(link: Arc<Link>, job: i64) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut lines = vec![first];
                while lines.len() < 200 {
                    match rx.try_recv() {
                        Ok(l) => lines.push(l),
                        Err(_) => break,
                    }
                }
                if let Err(e) = link.log(job, lines).await {
                    tracing::warn!(job, "cannot send log lines: {e}");
                }
            }
        });
        (Self { tx }, task)
    }

    pub fn line(&self, l: impl Into<String>) {
        let _ = self.tx.send(l.into());
    }
}
