//! A prune job: frees the space of forgotten restore points, after the grace period.

use holdfast_engine::{Error as EngineError, Repo};

use super::*;

impl Ctx {
    /// Removes the data no restore point uses any more, after the repository's grace period
    /// (rustic's two-phase prune), so a backup writing elsewhere at the same time loses nothing.
    pub(super) async fn prune(&self) -> Result<Done, Failure> {
        self.log.line(format!(
            "pruning the repository of endpoint `{}`",
            self.t.repository.endpoint
        ));
        let cfg = self.repo.clone();
        let log = self.log.clone();
        blocking(move || {
            let started = std::time::Instant::now();
            let repo = match Repo::open(&cfg) {
                Err(EngineError::RepoNotFound { .. }) => {
                    log.line("no repository yet: nothing to prune");
                    return Ok(Done::default());
                }
                other => other?,
            };
            repo.prune(false)?;
            log.line(format!(
                "pruned in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            Ok(Done::default())
        })
        .await
    }
}
