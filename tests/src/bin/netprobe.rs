//! A small network probe for the end-to-end tests, run as an agent (inside the agents' cgroup
//! subtree) or outside it, and as the upstream server. Every result is one JSON line on
//! stdout, so tests assert on what really happened to the socket.
//!
//!   netprobe serve ADDR...              upstream: greet each connection, then echo lines
//!   netprobe connect ADDR [--hold] [--reconnect]
//!   netprobe connect-many ADDR... [--parallel]  (connect to each, check the greeting)
//!   netprobe connect-loop ADDR N        N sequential connect / greet / close cycles
//!   netprobe udp ADDR                   sendto one datagram
//!   netprobe udp-connect ADDR           connect a UDP socket, then send
//!   netprobe socket KIND                KIND: icmp, icmp6, raw, mptcp, sctp
//!   netprobe http-idle ADDR HOST BODY WAIT_MS   one keep-alive POST /mcp, then wait: does the
//!                                       server close the idle connection?
//!   netprobe sink ADDR                  accept and drop connections as fast as possible
//!   netprobe connect-bench ADDR N       time N connect()+close cycles

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| die(&format!("argument {i} must be an address")))
    };
    match cmd {
        "serve" => serve(
            args[1..]
                .iter()
                .map(|a| a.parse().expect("address"))
                .collect(),
        ),
        "connect" => connect(addr(1), has(&args, "--hold"), has(&args, "--reconnect")),
        "connect-many" => connect_many(
            args[1..]
                .iter()
                .filter(|a| !a.starts_with("--"))
                .map(|a| a.parse().expect("address"))
                .collect(),
        ),
        "connect-loop" => connect_loop(addr(1), args[2].parse().expect("count")),
        "udp" => udp(addr(1), false),
        "udp-connect" => udp(addr(1), true),
        "socket" => socket_kind(args.get(1).map(String::as_str).unwrap_or("")),
        "sink" => sink(addr(1)),
        "http-idle" => http_idle(
            addr(1),
            &args[2],
            &args[3],
            args[4].parse().expect("wait ms"),
        ),
        "connect-bench" => connect_bench(addr(1), args[2].parse().expect("count")),
        _ => die(
            "usage: netprobe serve|connect|connect-many|connect-loop|udp|udp-connect|socket ...",
        ),
    }
}

fn has(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

fn die(msg: &str) -> ! {
    eprintln!("netprobe: {msg}");
    std::process::exit(2)
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn errno(e: &std::io::Error) -> serde_json::Value {
    json!({ "ok": false, "errno": e.raw_os_error(), "error": e.to_string() })
}

/// Upstream: for every connection, say which address it reached and who it came from, then
/// echo. Each accepted connection is logged as one JSON line.
fn serve(addrs: Vec<SocketAddr>) {
    let mut handles = Vec::new();
    for a in addrs {
        let listener = TcpListener::bind(a).unwrap_or_else(|e| die(&format!("bind {a}: {e}")));
        handles.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let peer = stream
                        .peer_addr()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let local = stream
                        .local_addr()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    emit(json!({ "accepted": peer, "on": local }));
                    let mut w = stream.try_clone().expect("clone");
                    if writeln!(w, "{}", json!({ "upstream": local, "peer": peer })).is_err() {
                        return;
                    }
                    let mut r = BufReader::new(stream);
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if w.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        }));
    }
    emit(json!({ "serving": true }));
    for h in handles {
        let _ = h.join();
    }
}

/// Connect, read the upstream's greeting, and report what the socket saw.
fn greet(addr: SocketAddr) -> Result<(TcpStream, serde_json::Value), std::io::Error> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(s.try_clone()?).read_line(&mut line)?;
    let greeting: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or(json!(line));
    let report = json!({
        "ok": !line.is_empty(),
        "pid": std::process::id(),
        "local": s.local_addr()?.to_string(),
        "peer": s.peer_addr()?.to_string(),
        "greeting": greeting,
    });
    Ok((s, report))
}

fn connect(addr: SocketAddr, hold: bool, reconnect: bool) {
    let (stream, report) = match greet(addr) {
        Ok(x) => x,
        Err(e) => {
            emit(errno(&e));
            std::process::exit(1);
        }
    };
    emit(report);
    if !hold {
        return;
    }
    // Block in read until the connection dies; report how, and how long it took.
    stream.set_read_timeout(None).expect("blocking read");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let res = std::io::Read::read(&mut &stream, &mut buf);
    let waited_ms = started.elapsed().as_millis() as u64;
    match res {
        Ok(0) => emit(json!({ "read_ended": "eof", "waited_ms": waited_ms })),
        Ok(n) => emit(json!({ "read_ended": "data", "bytes": n, "waited_ms": waited_ms })),
        Err(e) => emit(
            json!({ "read_ended": "error", "errno": e.raw_os_error(), "waited_ms": waited_ms }),
        ),
    }
    if reconnect {
        match greet(addr) {
            Ok((_, r)) => emit(json!({ "reconnect": r })),
            Err(e) => emit(json!({ "reconnect": errno(&e) })),
        }
    }
}

/// Connect to each address concurrently; report whether each greeting names that address.
fn connect_many(addrs: Vec<SocketAddr>) {
    let handles: Vec<_> = addrs
        .into_iter()
        .map(|a| std::thread::spawn(move || (a, greet(a).map(|(_, r)| r))))
        .collect();
    let (mut right, mut wrong, mut failed) = (0, 0, 0);
    for h in handles {
        let (a, r) = h.join().expect("thread");
        match r {
            Ok(r) if r["greeting"]["upstream"] == json!(a.to_string()) => right += 1,
            Ok(r) => {
                wrong += 1;
                eprintln!("wanted {a}, reached {}", r["greeting"]["upstream"]);
            }
            Err(e) => {
                failed += 1;
                eprintln!("{a}: {e}");
            }
        }
    }
    emit(json!({ "right": right, "wrong": wrong, "failed": failed }));
}

fn connect_loop(addr: SocketAddr, n: usize) {
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..n {
        match greet(addr) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    emit(json!({ "ok": ok, "failed": failed }));
}

fn udp(addr: SocketAddr, connected: bool) {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap();
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return emit(errno(&e)),
    };
    let res = if connected {
        sock.connect(addr).and_then(|_| sock.send(b"probe"))
    } else {
        sock.send_to(b"probe", addr)
    };
    match res {
        Ok(n) => emit(json!({ "ok": true, "sent": n })),
        Err(e) => emit(errno(&e)),
    }
}

fn socket_kind(kind: &str) {
    let (domain, ty, proto) = match kind {
        "icmp" => (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        "icmp6" => (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
        "raw" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
        "mptcp" => (libc::AF_INET, libc::SOCK_STREAM, 262),
        "sctp" => (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        _ => die("socket KIND: icmp, icmp6, raw, mptcp, sctp"),
    };
    // SAFETY: plain socket(2); closed right away.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        emit(errno(&std::io::Error::last_os_error()));
    } else {
        unsafe { libc::close(fd) };
        emit(json!({ "ok": true }));
    }
}

fn sink(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| die(&format!("bind {addr}: {e}")));
    emit(json!({ "serving": true }));
    for s in listener.incoming() {
        drop(s);
    }
}

/// connect() + close() `n` times; reports nanoseconds per cycle.
fn connect_bench(addr: SocketAddr, n: u32) {
    let started = Instant::now();
    let mut failed = 0u32;
    for _ in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => drop(s),
            Err(_) => failed += 1,
        }
    }
    let ns = started.elapsed().as_nanos() as u64 / u64::from(n.max(1));
    emit(json!({ "n": n, "failed": failed, "ns_per_connect": ns }));
}

/// Send one HTTP/1.1 keep-alive POST to /mcp, read the response head, then wait up to
/// `wait_ms` for the server to close the connection.
fn http_idle(addr: SocketAddr, host: &str, body: &str, wait_ms: u64) {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return emit(errno(&e)),
    };
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return emit(errno(&e));
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    let _ = r.read_line(&mut status);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = std::io::Read::read_exact(&mut r, &mut body);
    emit(
        json!({ "status": status.split_whitespace().nth(1), "body": String::from_utf8_lossy(&body) }),
    );
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(wait_ms.max(1))))
        .unwrap();
    let mut buf = [0u8; 1];
    match std::io::Read::read(&mut r, &mut buf) {
        Ok(0) => emit(json!({ "closed_after_ms": started.elapsed().as_millis() as u64 })),
        Ok(_) => emit(json!({ "unexpected_data": true })),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            emit(json!({ "still_open": true }))
        }
        Err(e) => emit(
            json!({ "closed_after_ms": started.elapsed().as_millis() as u64, "errno": e.raw_os_error() }),
        ),
    }
}
