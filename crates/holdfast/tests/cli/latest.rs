//! `latest` and the snapshot filters (`--source`, `--tag`, `--host`) on a repository holding
//! the backups of several sources: a `cmd:` backup after a PostgreSQL one must not be what
//! `dump latest` or `restore latest postgres://...` takes.

use crate::helpers::*;

#[test]
fn latest_is_the_newest_of_the_target_or_filter_and_refuses_to_guess() {
    let env = Env::new();
    env.init();
    let shop = PgDb::new();
    shop.psql("CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders VALUES (1, 'one'), (2, 'two');");
    let crm = PgDb::new();
    crm.psql("CREATE TABLE contacts (id int PRIMARY KEY); INSERT INTO contacts VALUES (7);");
    let want = shop.checksums();
    let shop_id = env.backup(&shop.url(), &["--tag", "env=prod"]);
    let crm_id = env.backup(&crm.url(), &[]);
    let cmd_id = env.backup("cmd:etcd.snap", &["--command", "echo etcd-state"]);
    let short = |id: &str| id[..8].to_string();

    // `dump latest` with three sources: refused, naming each source's newest snapshot and
    // the filter to add.
    let err = env.fails(&["dump", "latest"], 2);
    assert!(err.contains("ambiguous"), "{err}");
    for (id, label) in [
        (&shop_id, format!("postgres:127.0.0.1:5432/{}", shop.name)),
        (&crm_id, format!("postgres:127.0.0.1:5432/{}", crm.name)),
        (&cmd_id, "command:etcd.snap".to_string()),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&short(id)))
            .unwrap_or_else(|| {
                panic!("snapshot {} not listed:\n{err}", short(id));
            });
        assert!(line.contains(&label) && line.contains(" UTC"), "{line}");
    }
    assert!(err.contains("--source"), "{err}");

    // Filters pick one source.
    let shop_sql = env.ok(&["dump", "latest", "--source", &shop.name]);
    assert!(
        shop_sql.contains("CREATE TABLE public.orders"),
        "{shop_sql}"
    );
    assert_eq!(shop_sql, env.ok(&["dump", &shop_id]));
    assert_eq!(
        env.ok(&["dump", "latest", "--source", "etcd.snap"]),
        "etcd-state\n"
    );
    assert_eq!(env.ok(&["dump", "latest", "--tag", "env=prod"]), shop_sql);
    let err = env.fails(&["dump", "latest", "--host", "no-such-host"], 14);
    assert!(err.contains("latest (with --host no-such-host)"), "{err}");
    // An id outside the filters is not taken.
    env.fails(&["dump", &cmd_id, "--source", "postgres"], 14);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["snapshots", "--json"];
        a.extend_from_slice(args);
        let v: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&a)).unwrap();
        v.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&["--source", "postgres"]),
        [shop_id.clone(), crm_id.clone()]
    );
    assert_eq!(
        ids(&["--host", "127.0.0.1"]),
        [shop_id.clone(), crm_id.clone()]
    );
    assert_eq!(ids(&["--source", "command"]), vec![cmd_id.clone()]);

    // A restore into a new PostgreSQL database: the command's snapshot is not a candidate,
    // but two PostgreSQL sources are.
    let copy = PgDb::not_created();
    let err = env.fails(&["restore", "latest", &copy.url(), "--create"], 2);
    assert!(
        err.contains("ambiguous")
            && err.contains(&short(&shop_id))
            && err.contains(&short(&crm_id)),
        "{err}"
    );
    assert!(!err.contains(&short(&cmd_id)), "{err}");
    env.ok(&[
        "restore",
        "latest",
        &copy.url(),
        "--create",
        "--source",
        &shop.name,
    ]);
    assert_eq!(copy.checksums(), want);

    // Into the database of the same name: that database's newest, though crm's is newer.
    pipe(
        &mut PgDb::psql_cmd("postgres"),
        format!("DROP DATABASE {}", shop.name).as_bytes(),
    );
    let out = env.ok(&["restore", "latest", &shop.url(), "--create"]);
    assert!(out.contains(&short(&shop_id)), "{out}");
    assert_eq!(shop.checksums(), want);
}
