//! Throughput measurement (test-only). Run in release:
//! `cargo test --release --lib -- --ignored --nocapture bench`

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Dlp, DlpConfig};

#[derive(Debug)]
pub(crate) struct BenchReport {
    pub bytes: usize,
    pub clean_redact_value_mb_s: f64,
    pub clean_scan_value_mb_s: f64,
    pub clean_redact_text_mb_s: f64,
    pub secrets_redact_value_mb_s: f64,
    pub secrets_redact_text_mb_s: f64,
    pub secrets_found: u32,
}

const LINE: &str = "2024-05-01T12:00:00.123Z INFO http request id=7f3a9c21 method=GET \
path=/api/v1/items?page=3&limit=50 status=200 duration_ms=37 bytes=18422 \
user_agent=\"Mozilla/5.0 (X11; Linux x86_64)\" note=\"résumé café naïve\"";

/// An MCP `tools/call` result of roughly `bytes` bytes: one big text block of log lines
/// plus structured content (array of small objects). With `secrets`, about one line in
/// eight carries a secret or personal datum.
pub(crate) fn sample(bytes: usize, secrets: bool) -> Value {
    let mut text = String::new();
    let mut items = Vec::new();
    let mut i = 0usize;
    while text.len() + items.len() * 120 < bytes {
        text.push_str(LINE);
        if secrets && i.is_multiple_of(8) {
            text.push_str(match (i / 8) % 4 {
                0 => " user=alice@example.com",
                1 => " key=AKIAIOSFODNN7EXAMPLE",
                2 => " auth=Bearer 8f14e45fceea167a5a36dedd4bea2543",
                _ => " card=4111 1111 1111 1111",
            });
        }
        text.push('\n');
        if i.is_multiple_of(4) {
            items.push(json!({"id": i, "name": format!("item-{i}"), "owner": if secrets && i.is_multiple_of(16) { "bob@example.org" } else { "team-infra" }, "tags": ["a", "b"], "price": 12.5}));
        }
        i += 1;
    }
    json!({"content": [{"type": "text", "text": text}], "structuredContent": {"items": items}, "isError": false})
}

fn mb_s(bytes: usize, iters: u32, d: Duration) -> f64 {
    (bytes as f64 * f64::from(iters)) / d.as_secs_f64() / 1e6
}

/// Time `f` for ~`budget`, return (iterations, elapsed).
fn time<F: FnMut()>(budget: Duration, mut f: F) -> (u32, Duration) {
    let start = Instant::now();
    let mut n = 0;
    while n < 3 || start.elapsed() < budget {
        f();
        n += 1;
    }
    (n, start.elapsed())
}

pub(crate) fn bench(bytes: usize) -> BenchReport {
    let d = Dlp::new(&DlpConfig::default()).unwrap();
    d.set_bound_secrets(["upstream-credential-0001", "upstream-credential-0002"])
        .unwrap();
    let budget = Duration::from_millis(700);
    let clean = sample(bytes, false);
    let dirty = sample(bytes, true);
    let clean_len = clean.to_string().len();
    let dirty_len = dirty.to_string().len();
    let clean_text = clean.to_string();
    let dirty_text = dirty.to_string();

    let mut v = clean.clone();
    let (n, t) = time(budget, || assert!(d.redact_value(&mut v).is_empty()));
    let clean_redact_value_mb_s = mb_s(clean_len, n, t);
    let (n, t) = time(budget, || assert!(d.scan_value(&clean).is_empty()));
    let clean_scan_value_mb_s = mb_s(clean_len, n, t);
    let (n, t) = time(budget, || assert!(d.redact_text(&clean_text).1.is_empty()));
    let clean_redact_text_mb_s = mb_s(clean_len, n, t);

    // Redacting mutates: time clone+redact, subtract the clone time.
    let (nc, tc) = time(budget, || drop(std::hint::black_box(dirty.clone())));
    let clone_per = tc / nc;
    let mut found = 0;
    let (n, t) = time(budget, || {
        let mut v = dirty.clone();
        found = d.redact_value(&mut v).total();
    });
    let secrets_redact_value_mb_s = mb_s(dirty_len, n, t.saturating_sub(clone_per * n));
    let (n, t) = time(budget, || assert!(!d.redact_text(&dirty_text).1.is_empty()));
    let secrets_redact_text_mb_s = mb_s(dirty_len, n, t);

    BenchReport {
        bytes: clean_len,
        clean_redact_value_mb_s,
        clean_scan_value_mb_s,
        clean_redact_text_mb_s,
        secrets_redact_value_mb_s,
        secrets_redact_text_mb_s,
        secrets_found: found,
    }
}

#[test]
fn sample_has_expected_findings() {
    let d = Dlp::new(&DlpConfig::default()).unwrap();
    assert!(d.scan_value(&sample(20_000, false)).is_empty());
    let f = d.scan_value(&sample(20_000, true));
    for name in ["email", "aws_access_key", "bearer_token", "credit_card"] {
        assert!(f.get(name) > 0, "{name}: {f}");
    }
}

#[test]
#[ignore = "throughput benchmark; run with --release -- --ignored --nocapture"]
fn bench_throughput() {
    for size in [4 * 1024, 256 * 1024, 4 * 1024 * 1024] {
        let r = bench(size);
        println!(
            "json {} B: clean redact_value {:.0} MB/s, scan_value {:.0} MB/s, redact_text {:.0} MB/s; \
             with secrets ({} found) redact_value {:.0} MB/s, redact_text {:.0} MB/s",
            r.bytes,
            r.clean_redact_value_mb_s,
            r.clean_scan_value_mb_s,
            r.clean_redact_text_mb_s,
            r.secrets_found,
            r.secrets_redact_value_mb_s,
            r.secrets_redact_text_mb_s
        );
        assert!(r.secrets_found > 0);
    }
}
