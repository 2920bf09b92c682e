//! Test helpers: an in-memory source, temporary directories, log capture, polling.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::{json, Value};

use crate::export::Source;

/// A log in memory: records get seq 1, 2, ... and an id as the real stores assign them.
pub struct MemSource {
    kind: &'static str,
    records: Mutex<Vec<Value>>,
}

impl MemSource {
    pub fn new(kind: &'static str) -> Arc<Self> {
        Arc::new(Self {
            kind,
            records: Mutex::new(Vec::new()),
        })
    }

    pub fn push(&self, mut record: Value) -> u64 {
        let mut records = self.records.lock().unwrap();
        let seq = records.len() as u64 + 1;
        let prefix = if self.kind == "admin" { "A" } else { "R" };
        record["seq"] = json!(seq);
        if record.get("id").is_none() {
            record["id"] = json!(format!("{prefix}{seq:012}"));
        }
        records.push(record);
        seq
    }

    /// A receipt with outcome `status`.
    pub fn receipt(&self, status: &str) -> u64 {
        self.push(json!({
            "time": "2025-03-04T05:06:07.123456Z",
            "kind": "exchange",
            "request": {"method": "tools/call", "target": "search"},
            "policy": {"decision": if status == "ok" { "allow" } else { "deny" }},
            "outcome": {"status": status, "latency_us": 1200},
        }))
    }

    pub fn admin(&self, action: &str) -> u64 {
        self.push(json!({
            "time": "2025-03-04T05:06:07Z",
            "who": {"uid": 0, "user": "root"},
            "action": action,
            "target": "agent code-review",
            "result": "ok",
        }))
    }
}

impl Source for MemSource {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn head(&self) -> u64 {
        self.records.lock().unwrap().len() as u64
    }
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<(u64, Value)>, String> {
        let records = self.records.lock().unwrap();
        Ok(records
            .iter()
            .skip(after as usize)
            .take(max)
            .map(|r| (r["seq"].as_u64().unwrap(), r.clone()))
            .collect())
    }
}

pub fn sources(receipts: &Arc<MemSource>, admin: &Arc<MemSource>) -> Vec<Arc<dyn Source>> {
    vec![receipts.clone(), admin.clone()]
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "export-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything logged (at every level) on this thread while the guard lives. Tests using it run
/// on a current-thread runtime, so the exporter's tasks log on this thread too.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Poll `cond` every 20 ms until it holds; panic with `what` after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receipt sequence numbers in the order received: strictly 1..=n with nothing missing, where
/// a repeat is allowed only as a re-sent batch (never a jump ahead).
pub fn assert_no_gaps(seqs: &[u64], n: u64) {
    let mut next = 1;
    for &s in seqs {
        assert!(
            s <= next,
            "gap: got seq {s} while {next} was due ({seqs:?})"
        );
        if s == next {
            next += 1;
        }
    }
    assert_eq!(next, n + 1, "missing events after {} ({seqs:?})", next - 1);
}
