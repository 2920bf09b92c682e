//! The `[export]` settings: which sinks there are and how each one delivers. Unknown keys are
//! errors so a typo never silently disables an export. Each sink repeats the same four common
//! keys (`id`, `kinds`, `from`, `max_backlog`) because serde cannot flatten with
//! `deny_unknown_fields`.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use super::source::Kind;

/// All export sinks; none by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// JSON-lines files, rotated by size.
    #[serde(default)]
    pub jsonl: Vec<JsonlSink>,
    /// Syslog receivers (RFC 5424 over UDP, TCP or a local datagram socket).
    #[serde(default)]
    pub syslog: Vec<SyslogSink>,
    /// HTTP(S) endpoints receiving JSON arrays of events.
    #[serde(default)]
    pub webhook: Vec<WebhookSink>,
}

/// Where a sink with no cursor file yet starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// Only records written from now on (a new SIEM is not flooded with history).
    #[default]
    Head,
    /// Every record the logs hold.
    Beginning,
}

/// Syslog facilities (RFC 5424 section 6.2.1), by their usual names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    /// The default: receipts and admin actions are security records about users, and
    /// syslog daemons route authpriv to files only root can read.
    #[default]
    Authpriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility number (PRI = facility * 8 + severity).
    pub(crate) fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// JSON lines appended to a local file (mode 0640), for a log shipper to pick up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSink {
    /// Names the sink in status and logs, and its cursor file: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// File to append to; its directory must exist.
    pub path: PathBuf,
    /// Rotate before a line would take the file past this many bytes (default 100 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept as `path.1` (newest) .. `path.N`; 0 keeps none (default 5).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// fsync the file after each batch, so an acknowledged event survives a power loss
    /// (default true).
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// Which records to export (default both).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<Kind>,
    /// Where to start when there is no cursor file yet: "head" (default) or "beginning".
    #[serde(default)]
    pub from: StartFrom,
    /// Raise the backlog alarm when more than this many events wait (default 100000).
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
}

/// RFC 5424 messages to a syslog receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSink {
    /// Names the sink in status and logs, and its cursor file: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// `udp://host:port`, `tcp://host:port` (RFC 6587 octet counting) or `unix:///dev/log`
    /// (datagram).
    pub target: String,
    /// Facility name, e.g. "authpriv" (default), "auth", "local0".
    #[serde(default)]
    pub facility: Facility,
    /// APP-NAME of every message (default "mcp-enforcer").
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Largest message sent; a bigger event is sent with its record cut down to a stub
    /// (`"truncated": true`) so receivers never get broken JSON (default 8192, rsyslog's
    /// default limit).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Which records to export (default both).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<Kind>,
    /// Where to start when there is no cursor file yet: "head" (default) or "beginning".
    #[serde(default)]
    pub from: StartFrom,
    /// Raise the backlog alarm when more than this many events wait (default 100000).
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
}

/// Batches POSTed as JSON arrays; a 2xx answer acknowledges a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    /// Names the sink in status and logs, and its cursor file: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// `http://` or `https://` endpoint; no credentials in it (use `header_files`).
    pub url: String,
    /// Extra headers with literal values. Not secret: they may appear in debug output.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are read from files (re-read for every batch, so a token
    /// can be rotated in place). Secret: never logged or shown.
    #[serde(default)]
    pub header_files: BTreeMap<String, PathBuf>,
    /// PEM CA certificates trusted besides the system roots (https only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Most events in one POST (default 100).
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Time allowed for one POST, connecting included (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First retry delay after a failure; doubles each time, with jitter (default 500).
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay (default 60000).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Which records to export (default both).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<Kind>,
    /// Where to start when there is no cursor file yet: "head" (default) or "beginning".
    #[serde(default)]
    pub from: StartFrom,
    /// Raise the backlog alarm when more than this many events wait (default 100000).
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
}

/// The keys every sink has.
pub(crate) struct Common<'a> {
    pub id: &'a str,
    pub kinds: &'a [Kind],
    pub from: StartFrom,
    pub max_backlog: u64,
}

macro_rules! common {
    ($($t:ty),*) => {$(
        impl $t {
            pub(crate) fn common(&self) -> Common<'_> {
                Common {
                    id: &self.id,
                    kinds: &self.kinds,
                    from: self.from,
                    max_backlog: self.max_backlog,
                }
            }
        }
    )*};
}
common!(JsonlSink, SyslogSink, WebhookSink);

fn default_max_bytes() -> u64 {
    100 << 20
}
fn default_keep() -> u32 {
    5
}
fn default_true() -> bool {
    true
}
fn default_kinds() -> Vec<Kind> {
    Kind::ALL.to_vec()
}
fn default_max_backlog() -> u64 {
    100_000
}
fn default_app_name() -> String {
    "mcp-enforcer".into()
}
fn default_max_message_bytes() -> usize {
    8192
}
fn default_batch_max() -> usize {
    100
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    60_000
}
