//! The JSON-lines sink writes schema-tagged lines and rotates at its size limit.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::Value;

use super::support::*;
use crate::export::{event::SCHEMA, ExportConfig, Exporter};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn writes_lines_and_rotates_at_the_size_limit() {
    let dir = TempDir::new("jsonl");
    let path = dir.path().join("events.jsonl");
    let config: ExportConfig = toml::from_str(&format!(
        "[[jsonl]]\nid = \"file\"\npath = {:?}\nmax_bytes = 2000\nkeep = 3\nfrom = \"beginning\"",
        path
    ))
    .unwrap();
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    admin.admin("revoke");
    let exporter = Exporter::start(&config, dir.path(), sources(&receipts, &admin)).unwrap();
    for i in 0..60 {
        receipts.receipt(if i % 7 == 0 { "denied" } else { "ok" });
        exporter.notify();
    }
    wait_for("61 events written", 10, || {
        exporter.status()[0].delivered == 61
    })
    .await;
    exporter.shutdown().await;

    // Lines of ~400 bytes, 2000 bytes a file: many rotations, the 4 newest files kept.
    let files = [3, 2, 1, 0].map(|n| {
        if n == 0 {
            path.clone()
        } else {
            dir.path().join(format!("events.jsonl.{n}"))
        }
    });
    assert!(!dir.path().join("events.jsonl.4").exists());
    let mut receipt_seqs = Vec::new();
    for file in &files {
        let meta = std::fs::metadata(file).unwrap();
        assert!(meta.len() <= 2000, "{file:?} is {} bytes", meta.len());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{file:?}");
        for event in lines(file) {
            assert_eq!(event["schema"], SCHEMA);
            assert!(event["host"].as_str().is_some_and(|h| !h.is_empty()));
            assert!(humantime::parse_rfc3339(event["exported_at"].as_str().unwrap()).is_ok());
            assert_eq!(event["seq"], event["record"]["seq"]);
            if event["kind"] == "receipt" {
                receipt_seqs.push(event["seq"].as_u64().unwrap());
            }
        }
    }
    // The kept files hold the newest receipts, contiguous and in order.
    assert!(receipt_seqs.len() >= 12, "{receipt_seqs:?}");
    let first = receipt_seqs[0];
    assert_eq!(receipt_seqs, (first..=60).collect::<Vec<_>>());
}
