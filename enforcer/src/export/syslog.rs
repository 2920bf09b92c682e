//! The syslog sink: one RFC 5424 message per event,
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [enforcer@32473 ...] {event JSON}`,
//! over UDP, TCP (RFC 6587 octet counting) or a local datagram socket such as /dev/log.
//! Syslog has no acknowledgements: a datagram or TCP write that succeeded counts as delivered.

use std::{io, path::PathBuf};

use serde_json::Value;
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket, UnixDatagram},
};

use super::{
    config::SyslogSink,
    error::ExportError,
    event::{hostname, Event},
    runner::{Deliver, DeliveryError},
    source::Kind,
};

/// Our SD-ID: a private name at the reserved example enterprise number 32473 (RFC 5612).
pub const SD_ID: &str = "enforcer@32473";

const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

#[derive(Debug, Clone)]
enum Target {
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

pub(crate) struct Syslog {
    id: String,
    target: Target,
    facility: u8,
    app_name: String,
    max_message_bytes: usize,
    conn: Option<Conn>,
}

impl Syslog {
    pub fn new(cfg: &SyslogSink) -> Result<Self, ExportError> {
        let target = parse_target(&cfg.target).map_err(|m| ExportError::config(&cfg.id, m))?;
        if cfg.app_name.is_empty()
            || cfg.app_name.len() > 48
            || !cfg.app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(ExportError::config(
                &cfg.id,
                "app_name must be 1 to 48 printable ASCII characters without spaces",
            ));
        }
        if cfg.max_message_bytes < 1024 {
            return Err(ExportError::config(
                &cfg.id,
                "max_message_bytes must be at least 1024",
            ));
        }
        Ok(Self {
            id: cfg.id.clone(),
            target,
            facility: cfg.facility.code(),
            app_name: cfg.app_name.clone(),
            max_message_bytes: cfg.max_message_bytes,
            conn: None,
        })
    }

    /// The message for `event`; one over `max_message_bytes` is rebuilt around a stub record.
    fn message(&self, event: &Event) -> Vec<u8> {
        let full = format_message(self.facility, &self.app_name, event);
        if full.len() <= self.max_message_bytes {
            return full;
        }
        tracing::warn!(
            sink = %self.id,
            kind = "syslog",
            source = event.kind.as_str(),
            seq = event.seq,
            bytes = full.len(),
            "event too large for syslog: sent with its record truncated"
        );
        format_message(self.facility, &self.app_name, &event.stub(full.len()))
    }

    async fn connect(&self) -> io::Result<Conn> {
        Ok(match &self.target {
            Target::Udp(addr) => {
                let peer = tokio::net::lookup_host(addr.as_str())
                    .await?
                    .next()
                    .ok_or_else(|| io::Error::other(format!("{addr} does not resolve")))?;
                let local = if peer.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(peer).await?;
                Conn::Udp(socket)
            }
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Conn::Tcp(stream)
            }
            Target::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path)?;
                Conn::Unix(socket)
            }
        })
    }

    async fn send_all(&mut self, events: &[Event], sent: &mut usize) -> io::Result<()> {
        if let Some(Conn::Tcp(stream)) = &self.conn {
            // A receiver that restarted has closed our connection: find out before writing
            // into a socket whose data would be lost.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => self.conn = None,
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let messages: Vec<Vec<u8>> = events.iter().map(|e| self.message(e)).collect();
        let Some(conn) = &mut self.conn else {
            return Ok(());
        };
        for msg in messages {
            match conn {
                Conn::Udp(s) => drop(s.send(&msg).await?),
                Conn::Unix(s) => drop(s.send(&msg).await?),
                Conn::Tcp(s) => {
                    s.write_all(format!("{} ", msg.len()).as_bytes()).await?;
                    s.write_all(&msg).await?;
                }
            }
            *sent += 1;
        }
        Ok(())
    }
}

impl Deliver for Syslog {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), DeliveryError> {
        let mut sent = 0;
        self.send_all(events, &mut sent).await.map_err(|e| {
            self.conn = None;
            DeliveryError {
                delivered: sent,
                message: format!("syslog {}: {e}", describe(&self.target)),
            }
        })
    }
}

fn parse_target(target: &str) -> Result<Target, String> {
    let (scheme, rest) = target
        .split_once("://")
        .ok_or_else(|| format!("target {target:?}: expected udp://, tcp:// or unix://"))?;
    let host_port = |rest: &str| match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(rest.to_string())
        }
        _ => Err(format!(
            "target {target:?}: expected host:port after {scheme}://"
        )),
    };
    match scheme {
        "udp" => host_port(rest).map(Target::Udp),
        "tcp" => host_port(rest).map(Target::Tcp),
        "unix" if rest.starts_with('/') => Ok(Target::Unix(PathBuf::from(rest))),
        "unix" => Err(format!(
            "target {target:?}: expected an absolute socket path, e.g. unix:///dev/log"
        )),
        _ => Err(format!(
            "target {target:?}: unknown scheme {scheme:?} (udp, tcp or unix)"
        )),
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Udp(a) => format!("udp://{a}"),
        Target::Tcp(a) => format!("tcp://{a}"),
        Target::Unix(p) => format!("unix://{}", p.display()),
    }
}

/// One RFC 5424 message (without transport framing).
fn format_message(facility: u8, app_name: &str, event: &Event) -> Vec<u8> {
    let pri = facility * 8 + severity(event);
    // The record's own time when it has a well-formed one, else the export time.
    let timestamp = event
        .field("time")
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .unwrap_or_else(|| event.exported_at.clone());
    let host: String = hostname()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let host = if host.is_empty() { "-".into() } else { host };
    format!(
        "<{pri}>1 {timestamp} {host} {app_name} {pid} {msgid} {sd} {msg}",
        pid = std::process::id(),
        msgid = event.kind.as_str(),
        sd = structured_data(event),
        msg = event.to_json(),
    )
    .into_bytes()
}

/// Denials and errors are warnings, admin actions notices, everything else informational.
fn severity(event: &Event) -> u8 {
    match event.kind {
        Kind::Admin if event.field("result") == Some("failed") => WARNING,
        Kind::Admin => NOTICE,
        Kind::Receipt => match outcome(event) {
            Some(status) if status != "ok" => WARNING,
            _ => INFO,
        },
    }
}

fn outcome(event: &Event) -> Option<&str> {
    match event.kind {
        Kind::Receipt => event
            .record
            .get("outcome")
            .and_then(|o| o.get("status"))
            .and_then(Value::as_str),
        Kind::Admin => event.field("result"),
    }
}

/// `[enforcer@32473 id=".." seq=".." outcome=".." ...]`: what a SIEM rule needs without parsing
/// MSG.
fn structured_data(event: &Event) -> String {
    let seq = event.seq.to_string();
    let mut params: Vec<(&str, &str)> = vec![("seq", &seq)];
    if let Some(id) = event.field("id") {
        params.push(("id", id));
    }
    if let Some(o) = outcome(event) {
        params.push(("outcome", o));
    }
    let extra = match event.kind {
        Kind::Receipt => event
            .record
            .get("policy")
            .and_then(|p| p.get("decision"))
            .and_then(Value::as_str)
            .map(|d| ("decision", d)),
        Kind::Admin => event.field("action").map(|a| ("action", a)),
    };
    params.extend(extra);
    let mut sd = format!("[{SD_ID}");
    for (name, value) in params {
        sd.push_str(&format!(" {name}=\"{}\"", escape_param(value)));
    }
    sd.push(']');
    sd
}

/// RFC 5424 section 6.3.3: '"', '\' and ']' are escaped with a backslash.
fn escape_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(matches!(
            parse_target("udp://127.0.0.1:514"),
            Ok(Target::Udp(_))
        ));
        assert!(matches!(
            parse_target("tcp://[::1]:6514"),
            Ok(Target::Tcp(_))
        ));
        assert!(matches!(
            parse_target("unix:///dev/log"),
            Ok(Target::Unix(_))
        ));
        let err = parse_target("tls://h:1").err().unwrap_or_default();
        assert!(err.contains("unknown scheme \"tls\""), "{err}");
        assert!(parse_target("udp://host").is_err());
        assert!(parse_target("unix://dev/log").is_err());
        assert!(parse_target("127.0.0.1:514").is_err());
    }

    #[test]
    fn escapes_param_values() {
        assert_eq!(escape_param(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    }

    #[test]
    fn severities() {
        let ev = |kind, record| Event::batch(kind, vec![(1, record)]).remove(0);
        let status = |s: &str| serde_json::json!({"outcome": {"status": s}});
        assert_eq!(severity(&ev(Kind::Receipt, status("ok"))), INFO);
        assert_eq!(severity(&ev(Kind::Receipt, status("denied"))), WARNING);
        assert_eq!(severity(&ev(Kind::Receipt, serde_json::json!({}))), INFO);
        let admin = |r: &str| serde_json::json!({"result": r});
        assert_eq!(severity(&ev(Kind::Admin, admin("ok"))), NOTICE);
        assert_eq!(severity(&ev(Kind::Admin, admin("failed"))), WARNING);
    }
}
