//! The TOML surface: every key parses, typos and bad values are clear errors.

use super::support::*;
use crate::export::{
    config::{Facility, StartFrom},
    ExportConfig, ExportError, Exporter, Kind,
};

/// The example of EXPORT-SCHEMA.md, every key set.
pub const FULL: &str = r#"
[[jsonl]]
id = "local-file"
path = "/var/log/mcp-enforcer/events.jsonl"
max_bytes = 104857600
keep = 5
fsync = true
kinds = ["receipt", "admin"]
from = "head"
max_backlog = 100000

[[syslog]]
id = "rsyslog"
target = "unix:///dev/log"
facility = "authpriv"
app_name = "mcp-enforcer"
max_message_bytes = 8192
kinds = ["receipt", "admin"]
from = "head"
max_backlog = 100000

[[webhook]]
id = "siem"
url = "https://siem.example.com/ingest"
headers = { "X-Source" = "mcp-enforcer" }
header_files = { Authorization = "/etc/mcp-enforcer/siem-token" }
ca_file = "/etc/mcp-enforcer/siem-ca.pem"
batch_max = 100
timeout_ms = 10000
retry_initial_ms = 500
retry_max_ms = 60000
kinds = ["receipt"]
from = "beginning"
max_backlog = 100000
"#;

#[test]
fn every_key_parses() {
    let c: ExportConfig = toml::from_str(FULL).unwrap();
    assert_eq!(c.jsonl[0].keep, 5);
    assert_eq!(c.syslog[0].facility, Facility::Authpriv);
    assert_eq!(c.webhook[0].kinds, vec![Kind::Receipt]);
    assert_eq!(c.webhook[0].from, StartFrom::Beginning);
    assert_eq!(
        c.webhook[0].header_files["Authorization"].to_str(),
        Some("/etc/mcp-enforcer/siem-token")
    );
}

#[test]
fn defaults() {
    let c: ExportConfig = toml::from_str("").unwrap();
    assert!(c.jsonl.is_empty() && c.syslog.is_empty() && c.webhook.is_empty());
    let c: ExportConfig =
        toml::from_str("[[syslog]]\nid = \"s\"\ntarget = \"udp://h:514\"").unwrap();
    let s = &c.syslog[0];
    assert_eq!((s.facility.code(), s.max_message_bytes), (10, 8192));
    assert_eq!(s.kinds, vec![Kind::Receipt, Kind::Admin]);
    assert_eq!((s.from, s.max_backlog), (StartFrom::Head, 100_000));
}

#[test]
fn unknown_keys_and_values_are_rejected() {
    let e = toml::from_str::<ExportConfig>("[[jsonl]]\nid = \"a\"\npath = \"/x\"\nmax_byte = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `max_byte`"), "{e}");
    let e = toml::from_str::<ExportConfig>(
        "[[syslog]]\nid = \"a\"\ntarget = \"udp://h:1\"\nfacility = \"security\"",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown variant `security`"), "{e}");
    let e = toml::from_str::<ExportConfig>(
        "[[webhook]]\nid = \"a\"\nurl = \"http://h/\"\nkinds = [\"receipts\"]",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown variant `receipts`"), "{e}");
}

fn start_err(toml_text: &str) -> String {
    let dir = TempDir::new("config");
    let config: ExportConfig = toml::from_str(toml_text).unwrap();
    let (r, a) = (MemSource::new("receipt"), MemSource::new("admin"));
    match Exporter::start(&config, dir.path(), sources(&r, &a)) {
        Ok(_) => panic!("started with {toml_text}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_settings_are_clear_start_errors() {
    let cases = [
        ("[[webhook]]\nid = \"w\"\nurl = \"ftp://h/x\"", "export sink w: url \"ftp://h/x\": unknown scheme \"ftp\" (http or https)"),
        ("[[webhook]]\nid = \"w\"\nurl = \"not a url\"", "export sink w: url \"not a url\""),
        ("[[webhook]]\nid = \"w\"\nurl = \"https://u:p@h/x\"", "credentials in the URL are not allowed"),
        ("[[webhook]]\nid = \"w\"\nurl = \"http://h/x\"\nca_file = \"/ca.pem\"", "ca_file is set but the url is not https"),
        ("[[webhook]]\nid = \"w\"\nurl = \"http://h/x\"\nheader_files = { Authorization = \"/nonexistent/token\" }", "header_files.authorization (/nonexistent/token): No such file"),
        ("[[syslog]]\nid = \"s\"\ntarget = \"tls://h:6514\"", "export sink s: target \"tls://h:6514\": unknown scheme \"tls\" (udp, tcp or unix)"),
        ("[[syslog]]\nid = \"s\"\ntarget = \"udp://h\"", "expected host:port after udp://"),
        ("[[jsonl]]\nid = \"j\"\npath = \"/nonexistent/dir/x.jsonl\"", "export sink j: /nonexistent/dir/x.jsonl: No such file"),
        ("[[jsonl]]\nid = \"../j\"\npath = \"/tmp/x\"", "id must be letters"),
        ("[[syslog]]\nid = \"a\"\ntarget = \"udp://h:1\"\n[[webhook]]\nid = \"a\"\nurl = \"http://h/\"", "export sink a: id used by another sink"),
    ];
    for (text, want) in cases {
        let got = start_err(text);
        assert!(got.contains(want), "{text}\n  got: {got}\n want: {want}");
    }
}

#[test]
fn start_needs_a_runtime() {
    let dir = TempDir::new("noruntime");
    let (r, a) = (MemSource::new("receipt"), MemSource::new("admin"));
    let e = Exporter::start(&ExportConfig::default(), dir.path(), sources(&r, &a)).err();
    assert!(matches!(e, Some(ExportError::NoRuntime)));
}
