//! Where a drill may restore: never into the server and database its restore point came
//! from, whatever name of the host the target uses.

/// Whether drill target `target` is the server and database restore point `meta` was taken
/// from (a drill never restores into its source). A snapshot that does not say where it came
/// from matches nothing.
pub(crate) fn is_own_source(
    target: &holdfast_core::SourceSpec,
    meta: &holdfast_core::SnapshotMeta,
) -> bool {
    use holdfast_core::location::DbAddr;
    let Some(db_host) = meta.db_host.as_deref() else {
        return false;
    };
    // `host:port`, or "the local socket (port N)".
    let (host, port) = match db_host.strip_prefix("the local socket (port ") {
        Some(rest) => ("", rest.trim_end_matches(')')),
        None => db_host.rsplit_once(':').unwrap_or((db_host, "")),
    };
    let addr = DbAddr {
        host: host.to_string(),
        port: port.parse().ok(),
        user: None,
        password: None,
        // `*`: every database, which any target on the server overlaps.
        database: meta.database.clone().filter(|d| d != "*"),
        params: Default::default(),
    };
    let source = match target {
        holdfast_core::SourceSpec::Postgres(_) => holdfast_core::SourceSpec::Postgres(addr),
        holdfast_core::SourceSpec::Mysql(_) => holdfast_core::SourceSpec::Mysql(addr),
        _ => return false,
    };
    target.is_database_of(&source)
}

#[cfg(test)]
mod tests {
    use holdfast_core::{SnapshotMeta, SourceSpec};

    #[test]
    fn a_target_is_matched_against_where_the_restore_point_came_from() {
        let meta = |host: &str, db: &str| SnapshotMeta {
            db_host: Some(host.into()),
            database: Some(db.into()),
            ..SnapshotMeta::default()
        };
        let t = |u: &str| SourceSpec::parse(u, None).unwrap();
        let own = |u: &str, m: &SnapshotMeta| super::is_own_source(&t(u), m);
        assert!(own(
            "postgres://localhost/shop",
            &meta("127.0.0.1:5432", "shop")
        ));
        assert!(own(
            "postgres:///shop",
            &meta("the local socket (port 5432)", "shop")
        ));
        assert!(!own(
            "postgres://localhost/other",
            &meta("127.0.0.1:5432", "shop")
        ));
        assert!(!own(
            "postgres://localhost:5433/shop",
            &meta("127.0.0.1:5432", "shop")
        ));
        assert!(own("postgres://h2/scratch", &meta("h2:5432", "*")));
        assert!(own(
            "mysql://root@localhost/shop",
            &meta("127.0.0.1:3306", "shop")
        ));
        assert!(!own(
            "mysql://root@localhost/",
            &meta("127.0.0.1:3306", "shop")
        ));
        // A restore point that does not say where it came from matches nothing.
        assert!(!own("postgres://localhost/shop", &SnapshotMeta::default()));
    }
}
