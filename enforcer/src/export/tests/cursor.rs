//! Cursors survive restarts; a new sink starts at the head unless told otherwise; shutdown
//! delivers what is pending.

use super::support::*;
use crate::export::{ExportConfig, Exporter};

fn receipt_seqs(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "receipt")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

fn config(path: &std::path::Path, from: &str) -> ExportConfig {
    toml::from_str(&format!(
        "[[jsonl]]\nid = \"file\"\npath = {path:?}\nfrom = {from:?}"
    ))
    .unwrap()
}

#[tokio::test]
async fn restart_continues_after_the_last_acknowledged_event() {
    let dir = TempDir::new("cursor");
    let path = dir.path().join("out.jsonl");
    let cursors = dir.path().join("cursors");
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    let config = config(&path, "beginning");

    let exporter = Exporter::start(&config, &cursors, sources(&receipts, &admin)).unwrap();
    for _ in 0..5 {
        receipts.receipt("ok");
    }
    exporter.notify();
    wait_for("5 delivered", 5, || exporter.status()[0].delivered == 5).await;
    exporter.shutdown().await;
    let saved = std::fs::read_to_string(cursors.join("file.cursor")).unwrap();
    assert_eq!(saved, r#"{"receipt":5,"admin":0}"#);

    // Written while the exporter is down: exported after the restart, nothing twice.
    for _ in 0..5 {
        receipts.receipt("denied");
    }
    let exporter = Exporter::start(&config, &cursors, sources(&receipts, &admin)).unwrap();
    assert_eq!(exporter.status()[0].sources[0].cursor, 5);
    // Written just before shutdown, with no notify: shutdown still delivers it.
    receipts.receipt("ok");
    exporter.shutdown().await;
    assert_eq!(receipt_seqs(&path), (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_new_sink_starts_at_the_head() {
    let dir = TempDir::new("head");
    let path = dir.path().join("out.jsonl");
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    for _ in 0..5 {
        receipts.receipt("ok");
    }
    admin.admin("policy_load");
    let exporter = Exporter::start(
        &config(&path, "head"),
        dir.path(),
        sources(&receipts, &admin),
    )
    .unwrap();
    // The starting point is saved at once, so a restart cannot skip what comes next.
    let saved = std::fs::read_to_string(dir.path().join("file.cursor")).unwrap();
    assert_eq!(saved, r#"{"receipt":5,"admin":1}"#);
    receipts.receipt("ok");
    receipts.receipt("ok");
    exporter.notify();
    wait_for("2 delivered", 5, || exporter.status()[0].delivered == 2).await;
    let status = serde_json::to_value(exporter.status()).unwrap();
    assert_eq!(status[0]["sources"][0]["cursor"], 7);
    assert_eq!(status[0]["sources"][0]["backlog"], 0);
    exporter.shutdown().await;
    assert_eq!(receipt_seqs(&path), vec![6, 7]);
}
