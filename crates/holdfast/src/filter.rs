//! The snapshot filters of `snapshots`, `restore` and `dump`, as restic's.

use holdfast_engine::repo::SnapshotFilter;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this source: its label as `holdfast snapshots` shows it
    /// (postgres:db1:5432/shop), its database, file, folder or command name (shop), or its
    /// kind (postgres).
    #[arg(long)]
    source: Option<String>,
    /// Only snapshots with this KEY=VALUE tag (repeatable: all of them), e.g. plan=NAME.
    #[arg(long = "tag", value_parser = crate::parse_tag)]
    tags: Vec<(String, String)>,
    /// Only snapshots made on this host, or of a database server on it.
    #[arg(long)]
    host: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            source: self.source.clone(),
            tags: self.tags.clone(),
            host: self.host.clone(),
        }
    }
}
