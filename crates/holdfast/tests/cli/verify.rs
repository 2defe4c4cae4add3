//! Restore drills with `holdfast verify`: each restore point restored into a throwaway server
//! (real PostgreSQL, MariaDB and Redis binaries of this machine) and checked against what its
//! backup counted; failures named; nothing left behind; the source never touched.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::helpers::*;

/// Runs `holdfast verify SNAPSHOT --json` with its throwaway copies under `drills`; returns the
/// exit code, the report and stderr.
fn drill(env: &Env, snapshot: &str, drills: &Path, extra: &[&str]) -> (i32, Value, String) {
    let dir = drills.display().to_string();
    let mut args = vec!["verify", snapshot, "--json", "--scratch-dir", &dir];
    args.extend_from_slice(extra);
    let out: Output = env.run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The checks of `kind` in a report, as (name, passed, expected, actual).
fn checks(report: &Value, kind: &str) -> Vec<(String, bool, String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind)
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
                c["expected"].as_str().unwrap().to_string(),
                c["actual"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn passed(report: &Value) -> bool {
    report["passed"].as_bool().unwrap()
}

/// Processes whose command line or working directory is inside `dir`.
fn processes_in(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&d) || cwd.starts_with(dir) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// The drills' root holds nothing and no process runs from it.
fn assert_nothing_left(drills: &Path) {
    let left: Vec<String> = std::fs::read_dir(drills)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let procs = processes_in(drills);
    assert!(procs.is_empty(), "still running: {procs:?}");
}

#[test]
fn a_postgres_drill_restores_a_throwaway_copy_and_matches_the_backups_counts() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    let role = unique("hf_drill_owner");
    db.psql(&format!(
        "CREATE ROLE {role} NOLOGIN; \
         CREATE TABLE owned (id serial PRIMARY KEY, note text); \
         ALTER TABLE owned OWNER TO {role}; GRANT SELECT ON owned TO {role}; \
         INSERT INTO owned (note) SELECT 'row ' || g FROM generate_series(1, 1234) g; \
         CREATE TABLE \"Odd Table\" (x int, t text); \
         INSERT INTO \"Odd Table\" VALUES (1, E'line\\nbreak'), (2, '\\.'), (3, NULL); \
         CREATE INDEX owned_note ON owned (note); \
         CREATE VIEW owned_view AS SELECT id FROM owned; \
         CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER owned_bump BEFORE INSERT ON owned FOR EACH ROW EXECUTE FUNCTION bump();"
    ));
    let before = db.checksums();
    let per_table = env.backup(&db.url(), &[]);
    let single = env.backup(&db.url(), &["--single-stream"]);
    let drills = env.path("drills");

    for (snap, layout) in [(&per_table, "per-table"), (&single, "single stream")] {
        let (code, report, stderr) = drill(
            &env,
            snap,
            &drills,
            &[
                "--sql",
                "select count(*) from pgbench_accounts",
                "--expect",
                "= 100000",
                "--sql",
                "select count(*) from owned where note like 'row %'",
                "--expect",
                ">= 1234",
            ],
        );
        assert_eq!(code, 0, "{layout}: {stderr}\n{report:#}");
        assert!(passed(&report), "{layout}: {report:#}");
        let rows = checks(&report, "rows");
        for (table, want) in [
            ("public.pgbench_accounts", 100_000),
            ("public.pgbench_branches", 1),
            ("public.owned", 1234),
            ("public.\"Odd Table\"", 3),
        ] {
            let row = rows
                .iter()
                .find(|r| r.0 == table)
                .unwrap_or_else(|| panic!("{layout}: no rows check of {table}: {rows:?}"));
            assert!(row.1, "{layout}: {row:?}");
            assert_eq!(row.2, format!("{want} rows"), "{layout}");
            assert_eq!(row.3, format!("{want} rows"), "{layout}");
        }
        let objects = checks(&report, "objects");
        for kind in [
            "table",
            "index",
            "constraint",
            "view",
            "function",
            "trigger",
            "sequence",
        ] {
            assert!(
                objects.iter().any(|o| o.0 == kind && o.1),
                "{layout}: no passing {kind} count in {objects:?}"
            );
        }
        let sql = checks(&report, "sql");
        assert_eq!(sql.len(), 2, "{sql:?}");
        assert!(sql.iter().all(|s| s.1), "{sql:?}");
        assert!(report["rto_secs"].as_f64().unwrap() > 0.0);
        assert!(
            report["scratch"]
                .as_str()
                .unwrap()
                .contains("PostgreSQL 15")
        );
        if layout == "per-table" {
            let phases: Vec<&str> = report["timings"]["phases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_str().unwrap())
                .collect();
            assert_eq!(phases, ["schema", "data", "indexes and constraints"]);
        }
        assert_nothing_left(&drills);
    }
    // The source was never written to.
    assert_eq!(db.checksums(), before);
    PgDb::psql_cmd("postgres")
        .arg("-c")
        .arg(format!(
            "DROP DATABASE {} WITH (FORCE); DROP ROLE {role}",
            db.name
        ))
        .output()
        .unwrap();
}

#[test]
fn a_drill_fails_naming_the_check_that_does_not_hold() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(10);
    let snap = env.backup(&db.url(), &[]);
    let drills = env.path("drills");

    // A user check that does not hold, and a recovery time target no restore of a million
    // rows meets.
    let (code, report, stderr) = drill(
        &env,
        &snap,
        &drills,
        &[
            "--sql",
            "select count(*) from pgbench_accounts where abalance <> 0",
            "--expect",
            "> 0",
            "--rto-target",
            "1",
        ],
    );
    assert_eq!(code, 18, "{stderr}");
    assert!(!passed(&report));
    assert!(
        stderr.contains("sql check `select count(*) from pgbench_accounts where abalance <> 0`: expected > 0, found 0"),
        "{stderr}"
    );
    let rto = checks(&report, "rto");
    assert_eq!(rto.len(), 1);
    assert!(!rto[0].1, "{rto:?}");
    assert_eq!(rto[0].2, "at most 1 s");
    // Everything else held.
    let rows = checks(&report, "rows");
    assert!(rows.iter().all(|r| r.1), "{rows:?}");
    assert_nothing_left(&drills);
}

#[test]
fn a_restore_that_errors_part_way_fails_the_drill() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    // A CHECK that reads another table: pg_dump loads `a_checked` before `z_ref` holds any
    // rows, so the plain dump does not restore (a known pg_dump trap).
    db.psql(
        "CREATE TABLE z_ref (id int PRIMARY KEY); INSERT INTO z_ref VALUES (1), (2); \
         CREATE FUNCTION known(i int) RETURNS bool LANGUAGE sql AS \
           'SELECT exists (SELECT 1 FROM public.z_ref WHERE id = i)'; \
         CREATE TABLE a_checked (x int CHECK (known(x))); INSERT INTO a_checked VALUES (1), (2);",
    );
    let snap = env.backup(&db.url(), &["--single-stream"]);
    let drills = env.path("drills");
    let (code, report, stderr) = drill(&env, &snap, &drills, &[]);
    assert_eq!(code, 18, "{stderr}");
    let restore = checks(&report, "restore");
    assert_eq!(restore.len(), 1);
    assert!(!restore[0].1);
    let detail = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "restore")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("a_checked"), "{detail}");
    assert!(stderr.contains("restore check `restore`"), "{stderr}");
    assert_nothing_left(&drills);
}

#[test]
fn a_damaged_pack_fails_both_drill_modes_naming_the_restore_point() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data.bin"), random(3 << 20, 7)).unwrap();
    let snap = env.backup(&format!("file://{}", src.display()), &[]);
    let drills = env.path("drills");
    let (code, report, _) = drill(&env, &snap, &drills, &["--check-only"]);
    assert_eq!(code, 0, "{report:#}");
    assert!(checks(&report, "read").iter().all(|c| c.1));

    // Flip bytes in the middle of the largest pack (the data's).
    let packs = std::path::PathBuf::from(&env.repo).join("data");
    let mut largest = None::<(u64, std::path::PathBuf)>;
    for sub in std::fs::read_dir(&packs).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let len = f.metadata().unwrap().len();
            if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                largest = Some((len, f.path()));
            }
        }
    }
    let (len, pack) = largest.unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    for b in &mut bytes[(len as usize / 2)..(len as usize / 2 + 64)] {
        *b ^= 0xff;
    }
    std::fs::write(&pack, bytes).unwrap();

    for mode in [&["--check-only"][..], &[]] {
        let (code, report, stderr) = drill(&env, &snap, &drills, mode);
        assert_eq!(code, 18, "{mode:?}: {stderr}");
        assert!(!passed(&report));
        assert!(
            stderr.contains(&format!("drill of restore point {}", &snap[..8])),
            "{mode:?}: {stderr}"
        );
        assert_nothing_left(&drills);
    }
}

#[test]
fn mariadb_sqlite_redis_and_folder_drills_pass_and_leave_nothing_behind() {
    let env = Env::new();
    env.init();
    let drills = env.path("drills");

    // MariaDB: tables, a view, a trigger, a routine, awkward values.
    let my = MyDb::new();
    my.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, note TEXT, data BLOB, j JSON); \
         INSERT INTO orders VALUES (1, 'it''s (here)', 0x00ff28, '{\"a\": 1}'), (2, NULL, NULL, NULL), \
           (3, 'Grüße 🎉\\nline', '', '[]'); \
         CREATE TABLE `odd name` (x INT); INSERT INTO `odd name` VALUES (1), (2); \
         CREATE VIEW v AS SELECT id FROM orders; \
         CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW SET NEW.note = NEW.note; \
         CREATE PROCEDURE p() SELECT 1;",
    );
    let my_before = my.checksums();
    let snap = env.backup(&my.url(), &[]);
    let (code, report, stderr) = drill(
        &env,
        &snap,
        &drills,
        &["--sql", "select count(*) from orders", "--expect", "3"],
    );
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let rows = checks(&report, "rows");
    assert!(
        rows.contains(&("orders".into(), true, "3 rows".into(), "3 rows".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("odd name".into(), true, "2 rows".into(), "2 rows".into())),
        "{rows:?}"
    );
    let objects = checks(&report, "objects");
    for kind in ["table", "view", "trigger", "function"] {
        assert!(
            objects.iter().any(|o| o.0 == kind && o.1),
            "{kind}: {objects:?}"
        );
    }
    assert_nothing_left(&drills);
    assert_eq!(my.checksums(), my_before);

    // SQLite.
    let file = env.path("app.db");
    sh(&format!(
        "sqlite3 {} \"CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 'x'), (2, 'y\ny'); \
         CREATE TABLE u (k PRIMARY KEY); INSERT INTO u VALUES ('k'); CREATE INDEX ta ON t(a);\"",
        file.display()
    ));
    let snap = env.backup(&format!("sqlite://{}", file.display()), &[]);
    let (code, report, stderr) = drill(&env, &snap, &drills, &[]);
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(checks(&report, "integrity")[0].3, "ok");
    let rows = checks(&report, "rows");
    assert!(
        rows.contains(&("t".into(), true, "2 rows".into(), "2 rows".into())),
        "{rows:?}"
    );
    assert_nothing_left(&drills);

    // Redis: the shared server's whole RDB; the drill's key count is the file's.
    let prefix = unique("hf_drill");
    for i in 0..50 {
        sh(&format!(
            "redis-cli -h 127.0.0.1 SET {prefix}:{i} v{i} >/dev/null"
        ));
    }
    sh(&format!(
        "redis-cli -h 127.0.0.1 HSET {prefix}:h f v >/dev/null"
    ));
    let snap = env.backup("redis://127.0.0.1:6379", &[]);
    let (code, report, stderr) = drill(&env, &snap, &drills, &[]);
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let keys = checks(&report, "keys");
    let db0 = keys.iter().find(|k| k.0 == "db0").expect("db0 checked");
    assert!(db0.1, "{keys:?}");
    let n: u64 = db0.3.split(' ').next().unwrap().parse().unwrap();
    assert!(n >= 51, "{keys:?}");
    assert_nothing_left(&drills);

    // A folder: files, a link, an empty directory.
    let src = env.path("folder");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.txt"), "hello").unwrap();
    std::fs::write(src.join("b.bin"), random(100_000, 3)).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let snap = env.backup(&format!("file://{}", src.display()), &[]);
    let (code, report, stderr) = drill(&env, &snap, &drills, &[]);
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let files = checks(&report, "files");
    assert!(
        files.contains(&("files".into(), true, "2".into(), "2".into())),
        "{files:?}"
    );
    assert!(
        files.contains(&("bytes".into(), true, "100005".into(), "100005".into())),
        "{files:?}"
    );
    assert!(
        files.contains(&("symbolic links".into(), true, "1".into(), "1".into())),
        "{files:?}"
    );
    assert_nothing_left(&drills);
}

#[test]
fn a_drill_killed_mid_restore_leaves_nothing_after_the_next_drill_starts() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(10);
    let snap = env.backup(&db.url(), &[]);
    let drills = env.path("drills");
    let dir = drills.display().to_string();
    let mut first = env
        .cmd(&["verify", &snap, "--json", "--scratch-dir", &dir])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the throwaway server runs (its `server` file exists and its process is up).
    let started = std::time::Instant::now();
    let server_pid = loop {
        let pid = std::fs::read_dir(&drills).ok().and_then(|rd| {
            rd.flatten()
                .find_map(|e| std::fs::read_to_string(e.path().join("server")).ok())
        });
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<u32>().ok())
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            break pid;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the drill ended before its server ran"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no throwaway server appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait().unwrap();
    // The server outlives its drill.
    assert!(Path::new(&format!("/proc/{server_pid}")).exists());
    assert!(!processes_in(&drills).is_empty());

    // The next drill removes the leftovers first, then runs.
    let (code, report, stderr) = drill(&env, &snap, &drills, &[]);
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .map(|n| n.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("interrupted drill") && n.contains(&format!("pid {server_pid}"))),
        "{notes:?}"
    );
    assert_nothing_left(&drills);
}

#[test]
fn a_rolling_check_reads_every_pack_exactly_once_over_its_parts() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("part{i}.bin")), random(14 << 20, i)).unwrap();
    }
    env.backup(&format!("file://{}", src.display()), &[]);
    let packs: Vec<std::path::PathBuf> = std::fs::read_dir(Path::new(&env.repo).join("data"))
        .unwrap()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .map(|f| f.path())
        })
        .collect();
    assert!(packs.len() >= 5, "{packs:?}");
    for n in 1..=3 {
        env.ok(&["check", "--read-data-subset", &format!("{n}/3")]);
    }
    // The packs that hold trees, from the index as restic reads it.
    let mut tree_packs = std::collections::BTreeSet::new();
    let indexes = String::from_utf8(env.restic(&["list", "index"]).stdout).unwrap();
    for id in indexes.lines().filter(|l| !l.is_empty()) {
        let index: Value =
            serde_json::from_slice(&env.restic(&["cat", "index", id]).stdout).unwrap();
        for p in index["packs"].as_array().unwrap() {
            if p["blobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["type"] == "tree")
            {
                tree_packs.insert(p["id"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(!tree_packs.is_empty());
    // Each data pack damaged in turn is found by exactly one of the three parts; a tree pack
    // by every part, since each check walks the trees.
    for pack in &packs {
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        let tree_pack = tree_packs.contains(&name);
        let good = std::fs::read(pack).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 16] {
            *b ^= 0x55;
        }
        std::fs::write(pack, &bad).unwrap();
        let failed: Vec<u32> = (1..=3)
            .filter(|n| {
                let out = env.run(&["check", "--read-data-subset", &format!("{n}/3")]);
                match out.status.code() {
                    Some(0) => false,
                    Some(15) => true,
                    other => panic!(
                        "check {n}/3: exit {other:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                }
            })
            .collect();
        let want = if tree_pack { 3 } else { 1 };
        assert_eq!(
            failed.len(),
            want,
            "{}: found by parts {failed:?}",
            pack.display()
        );
        std::fs::write(pack, &good).unwrap();
    }
    let err = env.fails(&["check", "--read-data-subset", "4/3"], 2);
    assert!(err.contains("between 1 and the number of parts"), "{err}");
}

#[test]
fn a_named_scratch_server_gets_a_database_of_its_own_and_the_source_itself_is_refused() {
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    let before = db.checksums();
    let snap = env.backup(&db.url(), &[]);
    let drills = env.path("drills");
    let drill_dbs = || {
        PgDb::psql_cmd("postgres")
            .arg("-c")
            .arg(format!(
                "SELECT datname FROM pg_database WHERE datname LIKE '{}_drill_%'",
                db.name
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap()
    };

    // The backup's own server and database: refused, nothing written.
    let (code, report, stderr) = drill(&env, &snap, &drills, &["--into", &db.url()]);
    assert_eq!(code, 18, "{stderr}");
    let scratch = checks(&report, "scratch");
    assert!(!scratch[0].1, "{scratch:?}");
    assert!(
        stderr.contains("is the backup's own server and database"),
        "{stderr}"
    );
    assert!(checks(&report, "restore").is_empty());

    // The same server through another database: a database of the drill's own, dropped after.
    let (code, report, stderr) = drill(
        &env,
        &snap,
        &drills,
        &["--into", "postgres://postgres@127.0.0.1:5432/postgres"],
    );
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert!(
        report["scratch"]
            .as_str()
            .unwrap()
            .contains(&format!("database {}_drill_", db.name)),
        "{report:#}"
    );
    let rows = checks(&report, "rows");
    assert!(
        rows.contains(&(
            "public.pgbench_accounts".into(),
            true,
            "100000 rows".into(),
            "100000 rows".into()
        )),
        "{rows:?}"
    );
    assert_eq!(drill_dbs(), "", "the drill's database is dropped");
    assert_eq!(db.checksums(), before);

    // MariaDB likewise.
    let my = MyDb::new();
    my.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);");
    let my_before = my.checksums();
    let snap = env.backup(&my.url(), &[]);
    let (code, _, stderr) = drill(&env, &snap, &drills, &["--into", &my.url()]);
    assert_eq!(code, 18, "{stderr}");
    assert!(
        stderr.contains("is the backup's own server and database"),
        "{stderr}"
    );
    let (code, report, stderr) = drill(
        &env,
        &snap,
        &drills,
        &["--into", "mysql://root@127.0.0.1:3306/"],
    );
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let rows = checks(&report, "rows");
    assert!(
        rows.contains(&("t".into(), true, "3 rows".into(), "3 rows".into())),
        "{rows:?}"
    );
    let left = sh(&format!(
        "mariadb -h 127.0.0.1 -u root -N -e \"SHOW DATABASES LIKE '{}\\_drill\\_%'\"",
        my.name
    ));
    assert_eq!(left.trim(), "", "the drill's database is dropped");
    assert_eq!(my.checksums(), my_before);
    assert_nothing_left(&drills);
}

#[test]
fn a_drill_of_a_random_recent_restore_point_takes_one_of_the_newest() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        std::fs::write(src.join("f"), format!("version {i}")).unwrap();
        ids.push(env.backup(&format!("file://{}", src.display()), &[]));
    }
    let drills = env.path("drills");
    let (_, report, _) = drill(
        &env,
        "latest",
        &drills,
        &["--random-of-last", "1", "--check-only"],
    );
    assert_eq!(report["snapshot"], ids[3].as_str());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (code, report, stderr) = drill(
            &env,
            "latest",
            &drills,
            &["--random-of-last", "3", "--check-only"],
        );
        assert_eq!(code, 0, "{stderr}");
        let id = report["snapshot"].as_str().unwrap().to_string();
        assert!(ids[1..].contains(&id), "{id} is not one of the 3 newest");
        seen.insert(id);
    }
    // Twelve draws among three: all the same has a chance of 3 in 177,147.
    assert!(seen.len() > 1, "{seen:?}");
    let err = env.fails(&["verify", &ids[0], "--random-of-last", "2"], 2);
    assert!(err.contains("give `latest`"), "{err}");
}

#[test]
fn a_scratch_directory_the_database_user_cannot_reach_is_refused_naming_it() {
    // Only root drills PostgreSQL as another user (`postgres`); this machine's tests run as root.
    if !nix_is_root() {
        return;
    }
    let env = Env::new();
    env.init();
    let db = PgDb::new();
    db.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
    let snap = env.backup(&db.url(), &[]);
    let private = env.path("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )
    .unwrap();
    let (code, report, stderr) = drill(&env, &snap, &private.join("drills"), &[]);
    assert_eq!(code, 18, "{stderr}");
    assert!(
        stderr.contains("cannot pass through")
            && stderr.contains(&private.display().to_string())
            && stderr.contains("--scratch-dir"),
        "{stderr}"
    );
    assert!(checks(&report, "restore").is_empty());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}
