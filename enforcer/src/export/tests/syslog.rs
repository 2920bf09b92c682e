//! The syslog sink against real UDP, TCP and unix datagram receivers; every message is checked
//! by a strict RFC 5424 parser.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio::{
    io::AsyncReadExt as _,
    net::{TcpListener, UdpSocket, UnixDatagram},
};

use super::support::*;
use crate::export::{event::SCHEMA, ExportConfig, Exporter};

/// One RFC 5424 message, parsed strictly (section 6 ABNF).
#[derive(Debug)]
struct Message {
    pri: u8,
    timestamp: String,
    msgid: String,
    sd_id: String,
    params: BTreeMap<String, String>,
    msg: Value,
}

fn parse(line: &str) -> Message {
    let rest = line.strip_prefix('<').expect("PRI starts with <");
    let (pri, rest) = rest.split_once('>').expect("PRI ends with >");
    assert!((1..=3).contains(&pri.len()) && pri.bytes().all(|b| b.is_ascii_digit()));
    let pri: u8 = pri.parse().unwrap();
    assert!(pri <= 191);
    let rest = rest.strip_prefix("1 ").expect("VERSION 1");
    let mut header = rest.splitn(6, ' ');
    let mut field = |max: usize| {
        let f = header.next().expect("header field").to_string();
        assert!(
            !f.is_empty() && f.len() <= max && f.bytes().all(|b| (33..=126).contains(&b)),
            "{f:?}"
        );
        f
    };
    let timestamp = field(64);
    assert!(humantime::parse_rfc3339(&timestamp).is_ok(), "{timestamp}");
    let _hostname = field(255);
    assert_eq!(field(48), "mcp-enforcer");
    assert_eq!(field(128), std::process::id().to_string());
    let msgid = field(32);
    let sd = header.next().expect("SD and MSG");

    // STRUCTURED-DATA: one element, PARAM-VALUEs with \" \\ \] escapes.
    let mut chars = sd.chars().peekable();
    assert_eq!(chars.next(), Some('['));
    let name = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        let mut n = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == '=' || c == ']' || c == '"' {
                break;
            }
            assert!(c.is_ascii_graphic());
            n.push(c);
            chars.next();
        }
        assert!(!n.is_empty() && n.len() <= 32, "SD-NAME {n:?}");
        n
    };
    let sd_id = name(&mut chars);
    let mut params = BTreeMap::new();
    loop {
        match chars.next() {
            Some(']') => break,
            Some(' ') => {}
            other => panic!("bad SD-ELEMENT at {other:?} in {sd}"),
        }
        let param = name(&mut chars);
        assert_eq!((chars.next(), chars.next()), (Some('='), Some('"')));
        let mut value = String::new();
        loop {
            match chars.next().expect("PARAM-VALUE ends") {
                '\\' => {
                    let c = chars.next().unwrap();
                    assert!(matches!(c, '"' | '\\' | ']'), "escape of {c:?}");
                    value.push(c);
                }
                '"' => break,
                ']' => panic!("unescaped ] in PARAM-VALUE"),
                c => value.push(c),
            }
        }
        params.insert(param, value);
    }
    assert_eq!(chars.next(), Some(' '), "SP before MSG");
    let msg = serde_json::from_str(&chars.collect::<String>()).expect("MSG is JSON");
    Message {
        pri,
        timestamp,
        msgid,
        sd_id,
        params,
        msg,
    }
}

/// Events of the syslog tests: two receipts (one with an id that needs escaping, one denied),
/// an admin action and a receipt too large for the 1024-byte limit.
fn produce(receipts: &MemSource, admin: &MemSource) {
    receipts.push(
        json!({"id": r#"R"1]\x"#, "time": "2025-03-04T05:06:07.123456Z",
        "outcome": {"status": "ok"}, "policy": {"decision": "allow"}}),
    );
    receipts.receipt("denied");
    admin.admin("revoke");
    receipts.push(json!({"outcome": {"status": "ok"}, "recording": "x".repeat(3000)}));
}

fn check(messages: &[String]) {
    assert_eq!(messages.len(), 4, "{messages:?}");
    let mut parsed: Vec<Message> = messages.iter().map(|m| parse(m)).collect();
    parsed.sort_by_key(|m| (m.msgid.clone(), m.params["seq"].clone()));
    let [admin, r1, r2, r3] = &parsed[..] else {
        unreachable!()
    };
    for m in &parsed {
        assert_eq!(m.sd_id, "enforcer@32473");
        assert_eq!(m.msg["schema"], SCHEMA);
        assert_eq!(m.msg["kind"], m.msgid);
        assert_eq!(m.params["seq"], m.msg["seq"].to_string());
    }
    // authpriv (10): notice for admin actions, info for allowed calls, warning for denials.
    assert_eq!((admin.msgid.as_str(), admin.pri), ("admin", 10 * 8 + 5));
    assert_eq!(admin.params["action"], "revoke");
    assert_eq!(admin.params["outcome"], "ok");
    assert_eq!((r1.msgid.as_str(), r1.pri), ("receipt", 10 * 8 + 6));
    assert_eq!(r1.params["id"], r#"R"1]\x"#);
    assert_eq!(r1.msg["record"]["id"], r#"R"1]\x"#);
    assert_eq!(r1.timestamp, "2025-03-04T05:06:07.123456Z");
    assert_eq!(r2.pri, 10 * 8 + 4);
    assert_eq!(
        (
            r2.params["outcome"].as_str(),
            r2.params["decision"].as_str()
        ),
        ("denied", "deny")
    );
    assert_eq!(r3.msg["record"]["truncated"], true);
    assert_eq!(r3.msg["record"]["id"], "R000000000003");
    assert!(r3.msg["record"]["original_bytes"].as_u64().unwrap() > 3000);
}

fn config(target: &str) -> ExportConfig {
    toml::from_str(&format!(
        "[[syslog]]\nid = \"sys\"\ntarget = {target:?}\nmax_message_bytes = 1024"
    ))
    .unwrap()
}

#[tokio::test]
async fn udp() {
    let dir = TempDir::new("udp");
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = format!("udp://{}", receiver.local_addr().unwrap());
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    let exporter =
        Exporter::start(&config(&target), dir.path(), sources(&receipts, &admin)).unwrap();
    produce(&receipts, &admin);
    exporter.notify();
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    while messages.len() < 4 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv(&mut buf))
            .await
            .expect("datagram within 5 s")
            .unwrap();
        messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    check(&messages);
    exporter.shutdown().await;
}

#[tokio::test]
async fn unix_datagram() {
    let dir = TempDir::new("unix");
    let socket = dir.path().join("log.sock");
    let receiver = UnixDatagram::bind(&socket).unwrap();
    let target = format!("unix://{}", socket.display());
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    let exporter =
        Exporter::start(&config(&target), dir.path(), sources(&receipts, &admin)).unwrap();
    produce(&receipts, &admin);
    exporter.notify();
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    while messages.len() < 4 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv(&mut buf))
            .await
            .expect("datagram within 5 s")
            .unwrap();
        messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    check(&messages);
    exporter.shutdown().await;
}

/// Octet-counting frames (RFC 6587 3.4.1): "LEN SP MSG", LEN in decimal without leading zero.
fn frames(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|&b| b == b' ').expect("MSG-LEN SP");
        let len = std::str::from_utf8(&data[..sp]).unwrap();
        assert!(
            !len.starts_with('0') && len.bytes().all(|b| b.is_ascii_digit()),
            "{len:?}"
        );
        let len: usize = len.parse().unwrap();
        let end = sp + 1 + len;
        out.push(String::from_utf8(data[sp + 1..end].to_vec()).unwrap());
        data = &data[end..];
    }
    out
}

#[tokio::test]
async fn tcp_octet_counting_and_reconnect() {
    let dir = TempDir::new("tcp");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("tcp://{}", listener.local_addr().unwrap());
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    let exporter =
        Exporter::start(&config(&target), dir.path(), sources(&receipts, &admin)).unwrap();
    produce(&receipts, &admin);
    exporter.notify();
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    while frames_complete(&data) < 4 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("data within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed early");
        data.extend_from_slice(&buf[..n]);
    }
    check(&frames(&data));

    // The receiver restarts: the sink notices the closed connection and reconnects.
    drop(conn);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    receipts.receipt("ok");
    exporter.notify();
    let (mut conn, _) = listener.accept().await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = parse(&frames(&buf[..n])[0]);
    assert_eq!(m.params["seq"], "4");
    exporter.shutdown().await;
}

/// How many whole frames `data` holds.
fn frames_complete(mut data: &[u8]) -> usize {
    let mut n = 0;
    while let Some(sp) = data.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if data.len() < sp + 1 + len {
            break;
        }
        data = &data[sp + 1 + len..];
        n += 1;
    }
    n
}
