//! Benchmarks: append throughput per durability mode, and search latency over a synthetic
//! store. They create their db in a fresh directory under `std::env::temp_dir()` (a real disk,
//! so Strict flushes are real fsyncs) and remove it afterwards.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::durability::Durability;
use super::error::Result;
use super::receipt::{CanonicalJson, Outcome, Receipt, RequestInfo};
use super::search::Query;
use super::store::{AuditStore, Tuning};

const DAY_NS: u64 = 86_400 * 1_000_000_000;
const HOUR_NS: u64 = 3_600 * 1_000_000_000;
const START_NS: u64 = 1_767_225_600 * 1_000_000_000; // 2026-01-01
const OUTCOMES: [&str; 5] = ["ok", "tool_error", "denied", "rpc_error", "upstream_error"];
const METHODS: [&str; 3] = ["tools/list", "resources/read", "initialize"];

/// Temporary on-disk db, removed on drop.
struct TempDb {
    db: sled::Db,
    dir: PathBuf,
}

impl TempDb {
    fn new(tag: &str) -> Result<Self> {
        let nanos = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
        let dir = std::env::temp_dir().join(format!(
            "audit-bench-{tag}-{}-{nanos}-{:p}",
            std::process::id(),
            &nanos
        ));
        // Knobs for experiments: AUDIT_BENCH_SLED_MODE=ht (HighThroughput),
        // AUDIT_BENCH_CACHE_MB (default 512), AUDIT_BENCH_SLED_FLUSH_MS (0 = none; default 500).
        let env = |k: &str| std::env::var(k).ok();
        let mut cfg = sled::Config::new().path(&dir).cache_capacity(
            env("AUDIT_BENCH_CACHE_MB")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(512)
                * 1024
                * 1024,
        );
        if env("AUDIT_BENCH_SLED_MODE").as_deref() == Some("ht") {
            cfg = cfg.mode(sled::Mode::HighThroughput);
        }
        if let Some(ms) = env("AUDIT_BENCH_SLED_FLUSH_MS").and_then(|v| v.parse::<u64>().ok()) {
            cfg = cfg.flush_every_ms((ms > 0).then_some(ms));
        }
        let db = cfg.open()?;
        Ok(TempDb { db, dir })
    }
}

impl TempDb {
    /// The receipts log beside the sled directory.
    fn log(&self) -> PathBuf {
        self.dir.with_extension("log")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.log());
    }
}

/// AUDIT_BENCH_DIRECT=0 disables the direct (leader) write path; AUDIT_BENCH_INDEXER=0 keeps
/// the indexer paused during the run (hot path alone).
fn tuning() -> Tuning {
    Tuning {
        direct: std::env::var("AUDIT_BENCH_DIRECT").as_deref() != Ok("0"),
        indexer_paused: std::env::var("AUDIT_BENCH_INDEXER").as_deref() == Ok("0"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// splitmix64: deterministic synthetic data without a rand dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Synthetic receipt number `i` of `total` (times spread evenly over 30 days, with jitter):
/// 50 agents, 500 instances (10 per agent), 200 tools, 5 outcomes (80% ok), 20 users,
/// 10 connectors; one session per instance per block of 20,000 receipts (~40 receipts each).
pub fn synthetic_receipt(i: u64, total: u64, rng: &mut Rng) -> Receipt {
    let instance = rng.below(500);
    let agent = instance % 50;
    let user = instance % 20;
    let connector = rng.below(10);
    let session_no = i / 20_000 * 500 + instance;
    let tools_call = rng.below(100) < 85;
    let tool = rng.below(200);
    let roll = rng.below(100);
    let outcome = match roll {
        0..=79 => 0,
        80..=89 => 1,
        90..=94 => 2,
        95..=97 => 3,
        _ => 4,
    };
    let time_ns = START_NS + i * (30 * DAY_NS / total.max(1)) + rng.below(1_000_000_000);
    let mut r = Receipt {
        time_ns,
        time: format!("{time_ns}"),
        request: Some(RequestInfo {
            jsonrpc_id: json!(i),
            method: if tools_call {
                "tools/call".into()
            } else {
                METHODS[(i % 3) as usize].into()
            },
            target: Some(format!("tool-{tool:03}").into()),
            arguments_digest: Some(format!("sha256:{:064x}", rng.next_u64()).into()),
            arguments_redacted: Some(CanonicalJson::from_value(
                &json!({"path": format!("/srv/data/{i}"), "token": "[REDACTED]"}),
            )),
            era: Some("session".into()),
            protocol_version: Some("2025-06-18".into()),
            http_method: "POST".into(),
        }),
        outcome: Outcome {
            status: OUTCOMES[outcome].into(),
            http_status: Some(200),
            latency_us: rng.below(200_000),
            bytes_in: 300,
            bytes_out: rng.below(20_000),
            ..Default::default()
        },
        recording: Some(CanonicalJson::from_value(
            &json!({"content": [{"type": "text", "text": "[first bytes redacted]"}]}),
        )),
        ..Default::default()
    };
    r.actor.user = format!("user-{user:02}").into();
    r.actor.uid = 1000 + user as u32;
    r.actor.agent = format!("agent-{agent:02}").into();
    r.actor.instance = format!("inst-{instance:03}").into();
    r.actor.instance_id = 10_000 + instance;
    r.actor.pid = 4000 + instance as u32;
    r.actor.surface.exe = "/usr/bin/node".into();
    r.session.enforcer_session = format!("es-{session_no}").into();
    r.session.client_flow = format!("cf-{session_no}").into();
    r.session.protocol_session_id = Some(format!("ps-{session_no}").into());
    r.session.state = "active".into();
    r.connector.connector = format!("conn-{connector}").into();
    r.connector.route = "default".into();
    r.connector.backend = format!("https://conn-{connector}.example/mcp").into();
    r.connector.route_status.state = "reachable".into();
    r.credential.mode = "inject".into();
    r
}

#[derive(Debug, Clone)]
pub struct AppendReport {
    pub durability: Durability,
    pub n: usize,
    pub single_per_sec: f64,
    pub single_flushes: u64,
    pub tasks: usize,
    pub concurrent_per_sec: f64,
    pub concurrent_flushes: u64,
    /// Single-task run: appends written directly by the caller (no writer-thread hop).
    pub single_direct: u64,
    /// Concurrent run: batches written.
    pub concurrent_batches: u64,
    /// Receipts not yet indexed when the concurrent run ended, and the rate at which the
    /// background indexer then caught up (receipts/s, no appends flowing).
    pub index_lag: u64,
    pub index_per_sec: f64,
    /// Latency of one `append` awaited alone (single-task run), microseconds.
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
}

impl fmt::Display for AppendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "append {:?}, {} receipts per run:",
            self.durability, self.n
        )?;
        writeln!(
            f,
            "  1 task:   {:>10.0} receipts/s ({} flushes, {} direct), latency p50 {:.1} us, p99 {:.1} us",
            self.single_per_sec,
            self.single_flushes,
            self.single_direct,
            self.latency_p50_us,
            self.latency_p99_us
        )?;
        writeln!(
            f,
            "  {} tasks: {:>10.0} receipts/s ({} flushes, {:.1} receipts per flush, {:.1} per batch)",
            self.tasks,
            self.concurrent_per_sec,
            self.concurrent_flushes,
            self.n as f64 / self.concurrent_flushes.max(1) as f64,
            self.n as f64 / self.concurrent_batches.max(1) as f64
        )?;
        write!(
            f,
            "  indexer: {} receipts behind at the end, then {:.0} receipts/s",
            self.index_lag, self.index_per_sec
        )
    }
}

/// Appends `n` receipts from one task, then `n` from 16 concurrent tasks (each in a fresh db).
pub fn bench_append(n: usize, durability: Durability) -> Result<AppendReport> {
    const TASKS: usize = 16;
    let rt = runtime();
    let n64 = n as u64;
    let (single_per_sec, single_flushes, mut lat, single_direct) = rt.block_on(async {
        let tmp = TempDb::new("append1")?;
        let store = AuditStore::open_tuned(&tmp.db, &tmp.log(), durability, tuning())?;
        let mut rng = Rng(1);
        let receipts: Vec<Receipt> = (0..n64)
            .map(|i| synthetic_receipt(i, n64, &mut rng))
            .collect();
        let mut lat = Vec::with_capacity(n);
        let t = Instant::now();
        for r in receipts {
            let t1 = Instant::now();
            store.append(r).await?;
            lat.push(t1.elapsed());
        }
        let secs = t.elapsed().as_secs_f64();
        let direct = store.write_counters().1;
        Ok::<_, super::AuditError>((n as f64 / secs, store.stats()?.flushes, lat, direct))
    })?;
    lat.sort();
    // The concurrent run uses a 2-worker multi-thread runtime (like the proxy) when
    // AUDIT_BENCH_RT=multi; default current-thread (as before).
    let rt16 = if std::env::var("AUDIT_BENCH_RT").as_deref() == Ok("multi") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    } else {
        runtime()
    };
    let (concurrent_per_sec, concurrent_flushes, concurrent_batches, index_lag, index_per_sec) =
        rt16.block_on(async {
            let tmp = TempDb::new("append16")?;
            let store = Arc::new(AuditStore::open_tuned(
                &tmp.db,
                &tmp.log(),
                durability,
                tuning(),
            )?);
            let mut rng = Rng(2);
            let mut per_task: Vec<Vec<Receipt>> = vec![Vec::new(); TASKS];
            for i in 0..n64 {
                per_task[i as usize % TASKS].push(synthetic_receipt(i, n64, &mut rng));
            }
            let t = Instant::now();
            let handles: Vec<_> = per_task
                .into_iter()
                .map(|rs| {
                    let s = store.clone();
                    tokio::spawn(async move {
                        for r in rs {
                            s.append(r).await?;
                        }
                        Ok::<_, super::AuditError>(())
                    })
                })
                .collect();
            for h in handles {
                h.await.expect("bench task")?;
            }
            let secs = t.elapsed().as_secs_f64();
            let batches = store.write_counters().0;
            let flushes = store.stats()?.flushes;
            // The indexer's own rate, once appends stop.
            let lag = store.len()? - store.indexed_upto();
            let t = Instant::now();
            store.set_indexer_paused(false);
            store.wait_indexed(Duration::from_secs(600))?;
            let catchup = lag as f64 / t.elapsed().as_secs_f64().max(1e-9);
            Ok::<_, super::AuditError>((n as f64 / secs, flushes, batches, lag, catchup))
        })?;
    Ok(AppendReport {
        durability,
        n,
        single_per_sec,
        single_flushes,
        tasks: TASKS,
        concurrent_per_sec,
        concurrent_flushes,
        single_direct,
        concurrent_batches,
        index_lag,
        index_per_sec,
        latency_p50_us: percentile(&lat, 0.50) * 1e3,
        latency_p99_us: percentile(&lat, 0.99) * 1e3,
    })
}

#[derive(Debug, Clone)]
pub struct QueryStat {
    pub name: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Mean receipts returned and index entries scanned per query.
    pub mean_hits: f64,
    pub mean_scanned: f64,
}

#[derive(Debug, Clone)]
pub struct SearchReport {
    pub total: usize,
    pub fill_secs: f64,
    pub reps: usize,
    pub queries: Vec<QueryStat>,
}

impl fmt::Display for SearchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "search over {} receipts (fill {:.1}s, {:.0} receipts/s), {} reps, limit 50:",
            self.total,
            self.fill_secs,
            self.total as f64 / self.fill_secs,
            self.reps
        )?;
        for q in &self.queries {
            writeln!(
                f,
                "  {:<28} p50 {:>8.3} ms  p99 {:>8.3} ms  hits {:>5.1}  scanned {:>7.1}",
                q.name, q.p50_ms, q.p99_ms, q.mean_hits, q.mean_scanned
            )?;
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Fills a temporary db with `total` synthetic receipts (batches of 1000, Window durability),
/// then runs each typical query `reps` times with varying values.
pub fn bench_search(total: usize, reps: usize) -> Result<SearchReport> {
    let rt = runtime();
    let tmp = TempDb::new("search")?;
    let store = AuditStore::open(
        &tmp.db,
        &tmp.log(),
        Durability::Window(Duration::from_secs(1)),
    )?;
    let total64 = total as u64;
    let mut rng = Rng(42);
    let t = Instant::now();
    let mut i = 0u64;
    while i < total64 {
        let end = (i + 1000).min(total64);
        let batch: Vec<Receipt> = (i..end)
            .map(|j| synthetic_receipt(j, total64, &mut rng))
            .collect();
        rt.block_on(store.append_batch(batch))?;
        i = end;
    }
    // Steady state: queries run once the background indexer has caught up (fill_secs
    // includes that).
    store.wait_indexed(Duration::from_secs(24 * 3600))?;
    rt.block_on(store.flush())?;
    let fill_secs = t.elapsed().as_secs_f64();

    let span = 30 * DAY_NS;
    let mut qr = Rng(7);
    type Make = fn(&mut Rng, u64, u64) -> Query;
    let cases: [(&'static str, Make); 6] = [
        ("agent", |r, _, _| Query {
            agent: Some(format!("agent-{:02}", r.below(50))),
            ..Default::default()
        }),
        ("tool+outcome(denied)", |r, _, _| Query {
            tool: Some(format!("tool-{:03}", r.below(200))),
            status: Some("denied".into()),
            ..Default::default()
        }),
        ("enforcer session", |r, total, _| {
            let block = r.below(total.div_ceil(20_000).max(1));
            Query {
                enforcer_session: Some(format!("es-{}", block * 500 + r.below(500))),
                ..Default::default()
            }
        }),
        ("time window 1h", |r, _, span| {
            let since = START_NS + r.below(span - HOUR_NS);
            Query {
                since: Some(since),
                until: Some(since + HOUR_NS),
                ..Default::default()
            }
        }),
        ("agent+tool+1 day", |r, _, span| {
            let since = START_NS + r.below(span - DAY_NS);
            Query {
                agent: Some(format!("agent-{:02}", r.below(50))),
                tool: Some(format!("tool-{:03}", r.below(200))),
                since: Some(since),
                until: Some(since + DAY_NS),
                ..Default::default()
            }
        }),
        ("no match (unknown agent)", |r, _, _| Query {
            agent: Some(format!("agent-x{}", r.below(50))),
            status: Some("ok".into()),
            ..Default::default()
        }),
    ];
    let mut queries = Vec::new();
    for (name, make) in cases {
        let mut times = Vec::with_capacity(reps);
        let (mut hits, mut scanned) = (0usize, 0usize);
        for _ in 0..reps.max(1) {
            let q = make(&mut qr, total64, span);
            let t = Instant::now();
            let page = store.search(&q)?;
            times.push(t.elapsed());
            hits += page.receipts.len();
            scanned += page.scanned;
        }
        times.sort();
        let n = times.len() as f64;
        queries.push(QueryStat {
            name,
            p50_ms: percentile(&times, 0.50),
            p99_ms: percentile(&times, 0.99),
            mean_hits: hits as f64 / n,
            mean_scanned: scanned as f64 / n,
        });
    }
    drop(store);
    Ok(SearchReport {
        total,
        fill_secs,
        reps: reps.max(1),
        queries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_bench_small() {
        for d in [Durability::Strict, Durability::default()] {
            let r = bench_append(64, d).unwrap();
            assert!(r.single_per_sec > 0.0 && r.concurrent_per_sec > 0.0);
            if d == Durability::Strict {
                assert!(r.single_flushes >= 64, "strict: one flush per lone append");
                assert!(r.concurrent_flushes <= 64);
            }
            let text = r.to_string();
            assert!(text.contains("16 tasks"), "{text}");
            println!("{text}");
        }
    }

    #[test]
    fn search_bench_small() {
        let r = bench_search(3_000, 5).unwrap();
        assert_eq!(r.queries.len(), 6);
        let by = |n: &str| r.queries.iter().find(|q| q.name == n).unwrap().clone();
        assert_eq!(by("agent").mean_hits, 50.0);
        assert_eq!(by("no match (unknown agent)").mean_hits, 0.0);
        assert!(by("enforcer session").mean_hits > 0.0);
        assert!(r.to_string().contains("p99"));
        println!("{r}");
    }

    /// `cargo test --release -- --ignored bench_append_only --nocapture`
    #[test]
    #[ignore]
    fn bench_append_only() {
        for d in [Durability::Strict, Durability::default()] {
            println!(
                "{}",
                bench_append(
                    std::env::var("AUDIT_BENCH_N")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(50_000),
                    d
                )
                .unwrap()
            );
        }
    }

    #[test]
    #[ignore]
    fn bench_search_1m() {
        // AUDIT_BENCH_SEARCH_N overrides the 1,000,000 receipts.
        let n = std::env::var("AUDIT_BENCH_SEARCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let r = bench_search(n, 200).unwrap();
        println!("{r}");
        for d in [Durability::Strict, Durability::default()] {
            println!("{}", bench_append(5_000, d).unwrap());
        }
    }
}
