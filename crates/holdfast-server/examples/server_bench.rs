//! Benchmark of the server at scale (issue: 10,000 plans, 100 agents). Run by
//! `bench/server.sh`; not part of the test suite.
//!
//! 1. Fills a fresh metadata store (SQLite, or PostgreSQL with `--database-url`) with
//!    endpoints, sources and `--plans` hourly plans spread over the hour, through the store
//!    (the API would validate the same specs, only slower).
//! 2. Scheduler ticks with an injected clock: an idle tick (nothing due), a minute boundary
//!    (the plans of that minute fire), and the worst case after downtime (every plan due).
//!    The worst case's jobs are then run through the queue (claim + finish), so the jobs table
//!    has history for the API phase.
//! 3. Starts the real `holdfast serve --workers 0` on that store, with `--agents` simulated
//!    agents each polling the queue once a second (`GET /jobs?state=queued`: the agents of
//!    the "holdfast agent" issue will long-poll instead), and one client that measures
//!    GETs of single resources and of job pages, one after the other. Reports p50/p99 per
//!    route and the server's peak RSS (VmHWM).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use holdfast_core::Schedule;
use holdfast_core::plan::PlanSpec;
use holdfast_server::scheduler::tick;
use holdfast_store::{JobUpdate, Kind, NewResource, PlanCols, Store};

struct Args {
    holdfast: String,
    plans: usize,
    agents: usize,
    seconds: u64,
    database_url: Option<String>,
    /// At least this many finished jobs in the store (for the UI's pages).
    jobs: usize,
}

fn args() -> Args {
    let mut a = Args {
        holdfast: "target/release/holdfast".into(),
        plans: 10_000,
        agents: 100,
        seconds: 20,
        database_url: None,
        jobs: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--holdfast" => a.holdfast = v,
            "--plans" => a.plans = v.parse().expect("--plans N"),
            "--agents" => a.agents = v.parse().expect("--agents N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--database-url" => a.database_url = Some(v),
            "--jobs" => a.jobs = v.parse().expect("--jobs N"),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

const TOKEN: &str = "hf_bench_token_0123456789abcdef";

async fn fill(store: &Store, plans: usize, now: i64) {
    let t = Instant::now();
    for i in 0..10 {
        let spec = serde_json::json!({"kind": "local", "url": format!("/srv/backup/ep{i}"),
            "access_key_id": null});
        store
            .create(
                Kind::Endpoint,
                &NewResource {
                    name: format!("ep{i}"),
                    spec: spec.to_string(),
                    secrets: None,
                    plan: None,
                },
                now,
            )
            .await
            .unwrap();
    }
    for i in 0..100 {
        let spec = serde_json::json!({"kind": "postgres",
            "url": format!("postgres://backup@db{i}.internal:5432/app"),
            "command": null, "labels": {"site": format!("dc{}", i % 4)},
            "single_stream": false, "all_databases": false});
        store
            .create(
                Kind::Source,
                &NewResource {
                    name: format!("db{i}"),
                    spec: spec.to_string(),
                    secrets: None,
                    plan: None,
                },
                now,
            )
            .await
            .unwrap();
    }
    let from = jiff::Timestamp::from_millisecond(now).unwrap();
    for i in 0..plans {
        let spec: PlanSpec = serde_json::from_value(serde_json::json!({
            "name": format!("plan{i}"),
            "source": format!("db{}", i % 100),
            "endpoint": format!("ep{}", i % 10),
            "schedule": format!("{} * * * *", i % 60),
            "timezone": "Europe/Berlin",
        }))
        .unwrap();
        let next = Schedule::parse(&spec.schedule, &spec.timezone)
            .unwrap()
            .next_after(from)
            .map(|z| z.timestamp().as_millisecond());
        store
            .create(
                Kind::Plan,
                &NewResource {
                    name: spec.name.clone(),
                    spec: serde_json::to_string(&spec).unwrap(),
                    secrets: None,
                    plan: Some(PlanCols {
                        source: spec.source.clone(),
                        endpoint: spec.endpoint.clone(),
                        paused: false,
                        next_fire_at: next,
                    }),
                },
                now,
            )
            .await
            .unwrap();
    }
    println!(
        "filled: 10 endpoints, 100 sources, {plans} plans in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

async fn ticks(store: &Store, start: i64) {
    // `start` is 00:00:30 of an hour: nothing is due yet.
    let t = Instant::now();
    let r = tick(store, start).await.unwrap();
    let idle = t.elapsed();
    assert!(r.queued.is_empty());
    // The plans of minute 1 fire.
    let t = Instant::now();
    let r = tick(store, start + 60_000).await.unwrap();
    let minute = t.elapsed();
    println!(
        "tick, nothing due: {:.1} ms; tick at a minute boundary ({} plans fire): {:.1} ms",
        ms(idle),
        r.queued.len(),
        ms(minute)
    );
    // Run those through the queue so the next fire of those plans is not skipped.
    drain(store, start + 61_000).await;
    // After three hours' downtime every plan is due, once.
    let t = Instant::now();
    let r = tick(store, start + 3 * 3_600_000).await.unwrap();
    println!(
        "tick after 3 h downtime ({} plans fire once each): {:.1} ms",
        r.queued.len(),
        ms(t.elapsed())
    );
    let t = Instant::now();
    let n = drain(store, start + 3 * 3_600_000 + 1000).await;
    println!(
        "queue: {n} jobs claimed and finished in {:.1} s ({:.2} ms per job)",
        t.elapsed().as_secs_f64(),
        ms(t.elapsed()) / n.max(1) as f64
    );
}

/// The web UI's pages, signed in, one request at a time after the agents stopped: p50/p99
/// of 20 requests each.
async fn ui(http: &reqwest::Client, base: &str, plans: usize) {
    let cookie = format!("holdfast_session={TOKEN}");
    let newest = http
        .get(format!("{base}/api/v1/jobs?limit=1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()[0]["id"]
        .as_i64()
        .unwrap_or(1);
    let last_page = plans.div_ceil(50);
    let pages = [
        ("/ (plans, page 1)".to_string(), "/".to_string()),
        (format!("/?page={last_page}"), format!("/?page={last_page}")),
        ("/ui/jobs".into(), "/ui/jobs".into()),
        (
            "/ui/jobs?before=(middle)".into(),
            format!("/ui/jobs?before={}", newest / 2),
        ),
        (
            "/ui/jobs?state=failed".into(),
            "/ui/jobs?state=failed".into(),
        ),
        ("/ui/jobs/{id}".into(), format!("/ui/jobs/{}", newest / 3)),
    ];
    println!("UI pages ({plans} plans), one client:");
    for (name, path) in pages {
        let mut lat = Vec::new();
        let mut size = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .header("Cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            size = r.bytes().await.unwrap().len();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "  {name:<28} {:>4} KiB  p50 {:>6.1} ms  p99 {:>6.1} ms",
            size / 1024,
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99))
        );
    }
}

/// Claims and finishes every queued job; returns how many.
async fn drain(store: &Store, now: i64) -> usize {
    let mut n = 0;
    while let Some(j) = store.claim("bench", now, now + 60_000).await.unwrap() {
        let done = JobUpdate {
            state: holdfast_core::job::JobState::Succeeded,
            attempt: j.attempt,
            run_after: None,
            error: None,
            snapshot_id: Some(format!("{:064x}", j.id)),
            bytes_read: 1 << 20,
            bytes_written: 1 << 18,
            now: now + 1,
        };
        assert!(store.finish(j.id, "bench", &done).await.unwrap());
        n += 1;
    }
    n
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let url = a
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("holdfast.db").display()));
    println!("store: {}", url.split('@').next_back().unwrap_or(&url));
    // The injected clock runs a day ahead, so the real server started below (on real time)
    // has nothing to fire while its API is measured.
    let hour = 3_600_000;
    let start = (jiff::Timestamp::now().as_millisecond() / hour + 24) * hour + 30_000;
    {
        let store = Store::open(&url).await.unwrap();
        fill(&store, a.plans, start).await;
        ticks(&store, start).await;
        // More history: every later hour fires every plan once.
        let mut jobs = a.plans + a.plans / 60;
        let mut h = 4;
        let t = Instant::now();
        while jobs < a.jobs {
            tick(&store, start + h * hour).await.unwrap();
            jobs += drain(&store, start + h * hour + 1000).await;
            h += 1;
        }
        if a.jobs > 0 {
            println!(
                "history: {jobs} jobs in the store ({:.0} s to make)",
                t.elapsed().as_secs_f64()
            );
        }
    }

    let mut cmd = Command::new(&a.holdfast);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "0",
        "--data-dir",
    ])
    .arg(dir.path())
    .env("HOLDFAST_ADMIN_TOKEN", TOKEN)
    .env("HOLDFAST_LOG", "warn")
    .stderr(Stdio::piped());
    if let Some(u) = &a.database_url {
        cmd.env("HOLDFAST_DATABASE_URL", u);
    }
    let mut child = cmd.spawn().expect("holdfast serve starts (build it first)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server says where it listens");
    let pid = child.id();
    println!(
        "server started; RSS before load: {} MiB",
        vm_hwm_kib(pid) / 1024
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.agents + 4)
        .build()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let mut agents = Vec::new();
    for i in 0..a.agents {
        let (http, base, stop, polls) = (http.clone(), base.clone(), stop.clone(), polls.clone());
        agents.push(tokio::spawn(async move {
            // Spread the agents over the second, as real ones drift apart.
            tokio::time::sleep(Duration::from_millis((i as u64 * 1000) / 100)).await;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let r = http
                    .get(format!("{base}/api/v1/jobs?state=queued&limit=20"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "agent poll: {}", r.status());
                r.bytes().await.unwrap();
                polls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let plans = a.plans;
    let plan_path = move |i: usize| format!("/plans/plan{}", (i * 7919) % plans);
    let routes: [(&str, &dyn Fn(usize) -> String); 4] = [
        ("GET /plans/{name}", &plan_path),
        ("GET /jobs?limit=50", &|_| "/jobs?limit=50".into()),
        ("GET /sources/{name}", &|i| {
            format!("/sources/db{}", i % 100)
        }),
        ("GET /endpoints/{name}", &|i| {
            format!("/endpoints/ep{}", i % 10)
        }),
    ];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); routes.len()];
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut i = 0;
    while Instant::now() < deadline {
        let path = (routes[i % routes.len()].1)(i / routes.len());
        let t = Instant::now();
        let r = http
            .get(format!("{base}/api/v1{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status();
        r.bytes().await.unwrap();
        lat[i % routes.len()].push(t.elapsed());
        assert!(status.is_success(), "{path}: {status}");
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in agents {
        t.await.unwrap();
    }
    // The full plan list is one 10,000-item answer: measured apart, a few times.
    let mut list = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/api/v1/plans"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let n = r.bytes().await.unwrap().len();
        list.push((t.elapsed(), n));
    }

    println!(
        "API under {} agents polling every second ({} polls), {} s, one measuring client:",
        a.agents,
        polls.load(Ordering::Relaxed),
        a.seconds
    );
    let mut all = Vec::new();
    for ((name, _), l) in routes.iter().zip(lat.iter_mut()) {
        l.sort();
        all.extend_from_slice(l);
        println!(
            "  {name:<24} n={:<6} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            l.len(),
            ms(pct(l, 0.5)),
            ms(pct(l, 0.99)),
            ms(*l.last().unwrap_or(&Duration::ZERO))
        );
    }
    all.sort();
    println!(
        "  {:<24} n={:<6} p50 {:>6.2} ms  p99 {:>6.2} ms",
        "all single GETs",
        all.len(),
        ms(pct(&all, 0.5)),
        ms(pct(&all, 0.99))
    );
    let best = list.iter().map(|(d, _)| *d).min().unwrap_or_default();
    println!(
        "  GET /plans (all {} plans, {} KiB): best of 5 {:.0} ms",
        a.plans,
        list[0].1 / 1024,
        ms(best)
    );
    // What a Prometheus scrape costs: every plan's series from the store.
    let mut scrape = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "/metrics: {}", r.status());
        size = r.bytes().await.unwrap().len();
        scrape.push(t.elapsed());
    }
    scrape.sort();
    println!(
        "  GET /metrics ({} plans, {} KiB): p50 {:.0} ms  p99 {:.0} ms",
        a.plans,
        size / 1024,
        ms(pct(&scrape, 0.5)),
        ms(pct(&scrape, 0.99))
    );
    ui(&http, &base, a.plans).await;
    println!("server peak RSS (VmHWM): {} MiB", vm_hwm_kib(pid) / 1024);
    let _ = child.kill();
    let _ = child.wait();
}
