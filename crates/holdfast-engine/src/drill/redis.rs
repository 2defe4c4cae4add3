//! A Redis drill: the restore point's RDB file written into the drill's directory and loaded by a
//! throwaway `redis-server` there (Unix socket only, no TCP port, nothing saved back), then the
//! keys of each database compared with what the file held. Keys with an expiry may have
//! expired since the backup, so a database may hold fewer keys, never more.

use std::collections::BTreeMap;
use std::time::Instant;

use holdfast_core::drill::CheckKind;

use super::Drill;
use super::scratch::{self, Scratch};
use crate::error::{Error, Result};
use crate::process::{Cmd, which};

pub(super) fn drill(d: &mut Drill) {
    if !d.room_for(1) {
        return;
    }
    let tools = which("redis-server").zip(which("redis-cli"));
    let Some((server, cli)) = tools else {
        d.failed(
            CheckKind::Scratch,
            "redis-server",
            "installed",
            "install the Redis server and tools (Debian: redis-server, redis-tools)",
        );
        return;
    };
    let scratch = scratch::run_as(&["redis"], "Redis")
        .or(Ok::<_, Error>(None))
        .and_then(|u| Scratch::new(&d.opts.root, u));
    let mut scratch = match scratch {
        Ok(s) => s,
        Err(e) => {
            d.failed(CheckKind::Scratch, "drill directory", "it is made", e);
            return;
        }
    };
    d.scratch = format!(
        "a throwaway redis-server in {} (Unix socket only), removed afterwards",
        scratch.dir.display()
    );
    let socket = scratch.path("redis.sock");
    let started = Instant::now();
    let (reader, dir) = (d.reader, scratch.dir.clone());
    let loaded = d.timed_restore(|| {
        let rdb = dir.join("dump.rdb");
        let Some((path, _)) = reader.files().next() else {
            return Err(Error::Other("the restore point holds no RDB file".into()));
        };
        let mut f = std::fs::File::create(&rdb)
            .map_err(|e| Error::Other(format!("{}: {e}", rdb.display())))?;
        reader.dump(path, &mut f)?;
        drop(f);
        let mut cmd = scratch.server_command(&server);
        cmd.args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
        if let Some(u) = scratch::run_as(&["redis"], "Redis").ok().flatten() {
            scratch::chown(&rdb, &u)?;
        }
        scratch.start(cmd, "the throwaway redis-server".into())?;
        let ping = cli_cmd(&cli, &socket).arg("PING");
        scratch.wait_ready(|| ping.output().is_ok_and(|o| o == "PONG"))
    });
    if loaded.is_none() {
        return;
    }
    let _ = started;
    let Some(m) = d.manifest else {
        return;
    };
    match keyspace(&cli, &socket) {
        Ok(got) => {
            let (want, expiring) = (m.keys(), m.expiring());
            let dbs: std::collections::BTreeSet<u32> =
                want.keys().chain(got.keys()).copied().collect();
            for db in dbs {
                let w = want.get(&db).copied().unwrap_or(0);
                let e = expiring.get(&db).copied().unwrap_or(0);
                let g = got.get(&db).copied().unwrap_or(0);
                let expected = if e == 0 {
                    format!("{w} keys")
                } else {
                    format!("{}..{w} keys ({e} with an expiry)", w - e.min(w))
                };
                d.check(
                    CheckKind::Keys,
                    format!("db{db}"),
                    g <= w && g + e >= w,
                    expected,
                    format!("{g} keys"),
                    "",
                );
            }
        }
        Err(e) => d.failed(CheckKind::Keys, "INFO keyspace", "it answers", e),
    }
    drop(scratch);
}

fn cli_cmd(cli: &std::path::Path, socket: &std::path::Path) -> Cmd {
    Cmd::new(cli, "redis-cli (drill)").arg("-s").arg(socket)
}

/// Keys per database, from `INFO keyspace` (`db0:keys=3,expires=1,avg_ttl=0`).
fn keyspace(cli: &std::path::Path, socket: &std::path::Path) -> Result<BTreeMap<u32, u64>> {
    let out = cli_cmd(cli, socket)
        .args(["INFO", "keyspace"])
        .output()
        .map_err(|f| Error::Other(format!("{}: {}", f.status, f.stderr.trim())))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().strip_prefix("db")?.split_once(':')?;
            let keys = rest.split(',').find_map(|kv| kv.strip_prefix("keys="))?;
            Some((db.parse().ok()?, keys.parse().ok()?))
        })
        .collect())
}
