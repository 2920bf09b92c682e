//! A small network probe for the end-to-end tests, run as an agent (inside the agents' cgroup
//! subtree) or outside it, and as the upstream server. Every result is one JSON line on
//! stdout, so tests assert on what really happened to the socket.
//!
//!   netprobe serve ADDR...              upstream: greet each connection, then echo lines
//!                                       (each accept and each line received is logged)
//!   netprobe connect ADDR [--hold] [--reconnect]
//!   netprobe connect-many ADDR... [--parallel]  (connect to each, check the greeting)
//!   netprobe connect-loop ADDR N        N sequential connect / greet / close cycles
//!   netprobe udp ADDR                   sendto one datagram
//!   netprobe udp-connect ADDR           connect a UDP socket, then send
//!   netprobe socket KIND                KIND: icmp, icmp6, raw, mptcp, sctp, tcp, packet
//!   netprobe http-idle ADDR HOST BODY WAIT_MS   one keep-alive POST /mcp, then wait: does the
//!                                       server close the idle connection?
//!   netprobe sink ADDR                  accept and drop connections as fast as possible
//!   netprobe connect-bench ADDR N       time N connect()+close cycles
//!
//! Ways of opening a flow besides a plain connect() (tests/tests/escapes.rs):
//!
//!   netprobe tfo-sendto ADDR            TCP fast open: sendto(MSG_FASTOPEN) with a payload
//!   netprobe tfo-connect ADDR           TCP_FASTOPEN_CONNECT, connect(), then write a payload
//!   netprobe bind-device DEV ADDR [--tfo]  SO_BINDTODEVICE, then connect (or fast open)
//!   netprobe bind-after-connect DEV ADDR   connect, then SO_BINDTODEVICE, then send a line
//!                                       and wait for its echo
//!   netprobe io-uring ADDR [--async] [--sqpoll] [--socket-op]
//!                                       IORING_OP_CONNECT (forced to an io-wq worker, from an
//!                                       SQPOLL ring, on a socket made by IORING_OP_SOCKET)
//!   netprobe io-uring-socket KIND       IORING_OP_SOCKET for KIND (as `socket KIND`)
//!   netprobe udp-mmsg ADDR...           one sendmmsg(2) with one datagram per address
//!   netprobe udp-sink ADDR...           log every datagram received on each address
//!   netprobe fork ADDR                  connect from a forked child
//!   netprobe double-fork ADDR           connect from a grandchild in its own session, after
//!                                       its parent exited (a daemon)
//!   netprobe spawn CMD ARG...           run CMD as a child; report its exit and output
//!   netprobe as-uid UID SUBCOMMAND...   drop to UID (and GID UID), then run SUBCOMMAND
//!   netprobe ping ADDR                  ICMP echo over an unprivileged ping socket
//!   netprobe unix-relay PATH ADDR       relay each unix-socket connection at PATH to ADDR
//!   netprobe unix-connect PATH          connect a unix socket, read the greeting

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    time::{Duration, Instant},
};

use io_uring::{opcode, squeue, types, IoUring, Probe};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    dispatch(&args);
}

fn dispatch(args: &[String]) {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| die(&format!("argument {i} must be an address")))
    };
    let addrs = || -> Vec<SocketAddr> {
        args[1..]
            .iter()
            .filter(|a| !a.starts_with("--"))
            .map(|a| a.parse().expect("address"))
            .collect()
    };
    match cmd {
        "serve" => serve(addrs()),
        "connect" => connect(addr(1), has(args, "--hold"), has(args, "--reconnect")),
        "connect-many" => connect_many(addrs()),
        "hold-many" => hold_many(addr(1), args[2].parse().expect("count")),
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
        "tfo-sendto" => tfo_sendto(addr(1)),
        "tfo-connect" => tfo_connect(addr(1)),
        "bind-device" => bind_device(args.get(1).expect("device"), addr(2), has(args, "--tfo")),
        "bind-after-connect" => bind_after_connect(args.get(1).expect("device"), addr(2)),
        "io-uring" => io_uring_connect(
            addr(1),
            has(args, "--async"),
            has(args, "--sqpoll"),
            has(args, "--socket-op"),
        ),
        "io-uring-socket" => io_uring_socket(args.get(1).map(String::as_str).unwrap_or("")),
        "udp-mmsg" => udp_mmsg(addrs()),
        "udp-sink" => udp_sink(addrs()),
        "fork" => fork_connect(addr(1)),
        "double-fork" => double_fork_connect(addr(1)),
        "spawn" => spawn(&args[1..]),
        "as-uid" => as_uid(args.get(1).and_then(|u| u.parse().ok()), &args[2..]),
        "ping" => ping(addr(1)),
        "unix-relay" => unix_relay(args.get(1).expect("path"), addr(2)),
        "unix-connect" => unix_connect(args.get(1).expect("path")),
        _ => die(
            "usage: netprobe serve|connect|connect-many|connect-loop|udp|udp-connect|socket|\
             tfo-sendto|tfo-connect|bind-device|io-uring|io-uring-socket|udp-mmsg|udp-sink|\
             fork|double-fork|spawn|as-uid|ping|unix-relay|unix-connect ...",
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
                        emit(json!({ "line": line.trim_end(), "on": local }));
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
    let report = read_greeting(&s, false)?;
    Ok((s, report))
}

/// Read the upstream's greeting line on a connected stream and report what the socket saw:
/// its own address, its peer (the proxy when redirected) and the greeting (where the flow
/// really ended up). With `echo`, also read the line the upstream echoed back (what the
/// client sent, e.g. a fast-open payload).
fn read_greeting(s: &TcpStream, echo: bool) -> Result<serde_json::Value, std::io::Error> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let greeting: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or(json!(line));
    let mut report = json!({
        "ok": !line.is_empty(),
        "pid": std::process::id(),
        "local": s.local_addr()?.to_string(),
        "peer": s.peer_addr()?.to_string(),
        "greeting": greeting,
    });
    if echo {
        let mut back = String::new();
        reader.read_line(&mut back)?;
        report["echo"] = json!(back.trim_end());
    }
    Ok(report)
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

/// Hold `n` connections (each blocked in read), report when all are up, then when the last
/// one died (monotonic ns), then try to reconnect and report how that was refused.
fn hold_many(addr: SocketAddr, n: usize) {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        match greet(addr) {
            Ok((s, r)) if r["ok"] == true => streams.push(s),
            Ok((_, r)) => {
                emit(json!({ "held_failed": r, "held": streams.len() }));
                std::process::exit(1);
            }
            Err(e) => {
                emit(json!({ "held_failed": errno(&e), "held": streams.len() }));
                std::process::exit(1);
            }
        }
    }
    emit(json!({ "held": streams.len() }));
    // One poll(2) loop over every flow (not a blocked reader per flow): a death is timed when
    // the kernel reports the socket readable or broken, without a thousand thread wake-ups
    // competing with the kill being measured.
    use std::os::fd::AsRawFd as _;
    let mut fds: Vec<libc::pollfd> = streams
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    let mut times = Vec::with_capacity(fds.len());
    while !fds.is_empty() {
        // SAFETY: fds is a valid array of pollfd of this length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        let now = enforcer_tests::monotonic_ns();
        fds.retain(|p| {
            if p.revents != 0 {
                times.push(now);
                false
            } else {
                true
            }
        });
        for p in &mut fds {
            p.revents = 0;
        }
    }
    drop(streams);
    let (first, last) = (
        times.iter().min().copied().unwrap_or(0),
        times.iter().max().copied().unwrap_or(0),
    );
    emit(json!({ "first_dead_ns": first, "last_dead_ns": last }));
    let t = enforcer_tests::monotonic_ns();
    let again = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
    let us = (enforcer_tests::monotonic_ns() - t) / 1000;
    match again {
        Ok(_) => emit(json!({ "reconnect": "connected", "reconnect_us": us })),
        Err(e) => emit(json!({ "reconnect": errno(&e), "reconnect_us": us })),
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

/// (domain, type, protocol) of a socket KIND.
fn kind_triple(kind: &str) -> (i32, i32, i32) {
    match kind {
        "icmp" => (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        "icmp6" => (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
        "raw" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
        "mptcp" => (libc::AF_INET, libc::SOCK_STREAM, 262),
        "sctp" => (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        "tcp" => (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP),
        "packet" => (
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        ),
        _ => die("socket KIND: icmp, icmp6, raw, mptcp, sctp, tcp, packet"),
    }
}

fn socket_kind(kind: &str) {
    let (domain, ty, proto) = kind_triple(kind);
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
    // A deep accept queue: an overflowing one drops SYNs, and each drop costs the client a
    // one-second retransmit that would swamp what a connect() benchmark measures.
    // SAFETY: listen(2) again on our own listening socket only resizes its backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 65_535) };
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

// ---- Other ways of opening a flow (tests/tests/escapes.rs) ----

/// What the fast-open probes send; the upstream echoes it back.
const PAYLOAD: &[u8] = b"fast-open-payload\n";

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Report a failure at `stage` (socket, connect, sendto...) as one JSON line.
fn fail(stage: &str, e: &std::io::Error) {
    let mut v = errno(e);
    v["stage"] = json!(stage);
    emit(v);
}

fn check(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(last_err())
    } else {
        Ok(ret)
    }
}

fn new_socket(domain: i32, ty: i32, proto: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn family(addr: &SocketAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// `addr` as a C socket address.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; we write one of its variants into it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn set_opt<T>(fd: &OwnedFd, level: i32, name: i32, val: &T) -> std::io::Result<()> {
    // SAFETY: `val` is a live value of the size we pass.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Bound blocking connect() (SO_SNDTIMEO) and reads, so a flow that goes nowhere reports
/// instead of hanging the test.
fn set_timeouts(fd: &OwnedFd, secs: i64) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    set_opt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
    set_opt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

fn connect_fd(fd: &OwnedFd, addr: &SocketAddr) -> std::io::Result<()> {
    let (sa, len) = sockaddr(addr);
    // SAFETY: `sa` holds a socket address of `len` bytes.
    check(unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) }).map(|_| ())
}

/// TCP fast open the sendto way: no connect(), the first sendto(MSG_FASTOPEN) both connects
/// and carries data (in the SYN itself when net.ipv4.tcp_fastopen has TFO_CLIENT_NO_COOKIE).
fn tfo_sendto(addr: SocketAddr) {
    let fd = match new_socket(family(&addr), libc::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(e) => return fail("socket", &e),
    };
    if let Err(e) = set_timeouts(&fd, 5) {
        return fail("setsockopt", &e);
    }
    match fast_open(&fd, &addr) {
        Ok(n) => report_stream(TcpStream::from(fd), json!({ "sent": n }), true),
        Err(e) => fail("sendto", &e),
    }
}

/// sendto(MSG_FASTOPEN) of PAYLOAD to `addr`: connect and send in one call.
fn fast_open(fd: &OwnedFd, addr: &SocketAddr) -> std::io::Result<isize> {
    let (sa, len) = sockaddr(addr);
    // SAFETY: PAYLOAD and `sa` outlive the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            PAYLOAD.as_ptr().cast(),
            PAYLOAD.len(),
            libc::MSG_FASTOPEN,
            (&raw const sa).cast(),
            len,
        )
    };
    if n < 0 {
        Err(last_err())
    } else {
        Ok(n)
    }
}

/// TCP fast open the socket-option way: with TCP_FASTOPEN_CONNECT, connect() returns at once
/// and the SYN leaves with the first write.
fn tfo_connect(addr: SocketAddr) {
    let fd = match new_socket(family(&addr), libc::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(e) => return fail("socket", &e),
    };
    if let Err(e) = set_timeouts(&fd, 5)
        .and_then(|_| set_opt(&fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, &1i32))
    {
        return fail("setsockopt", &e);
    }
    if let Err(e) = connect_fd(&fd, &addr) {
        return fail("connect", &e);
    }
    let mut s = TcpStream::from(fd);
    if let Err(e) = s.write_all(PAYLOAD) {
        return fail("write", &e);
    }
    report_stream(s, json!({}), true);
}

/// Read the greeting on `s` and emit the report, with the fields of `extra` added.
fn report_stream(s: TcpStream, extra: serde_json::Value, echo: bool) {
    match read_greeting(&s, echo) {
        Ok(mut r) => {
            if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
                r.extend(extra.clone());
            }
            emit(r)
        }
        Err(e) => fail("read", &e),
    }
}

/// SO_BINDTODEVICE, then connect (with `tfo`, sendto(MSG_FASTOPEN) with a payload): the
/// socket is tied to one interface before the hooks see it.
fn bind_device(dev: &str, addr: SocketAddr, tfo: bool) {
    let fd = match new_socket(family(&addr), libc::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(e) => return fail("socket", &e),
    };
    // SAFETY: the name's bytes outlive the call.
    let bound = check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    });
    if let Err(e) = bound.and_then(|_| set_timeouts(&fd, 3).map(|_| 0)) {
        return fail("setsockopt", &e);
    }
    if tfo {
        if let Err(e) = fast_open(&fd, &addr) {
            return fail("sendto", &e);
        }
    } else if let Err(e) = connect_fd(&fd, &addr) {
        return fail("connect", &e);
    }
    report_stream(TcpStream::from(fd), json!({ "device": dev }), tfo);
}

/// Connect normally (through the proxy), then steer the connected socket onto `dev` and send
/// a line: does its echo still come back?
fn bind_after_connect(dev: &str, addr: SocketAddr) {
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return fail("connect", &e),
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut greeting = String::new();
    if let Err(e) = r.read_line(&mut greeting) {
        return fail("read", &e);
    }
    // SAFETY: the name's bytes outlive the call.
    let bound = check(unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    });
    if let Err(e) = bound {
        return fail("setsockopt", &e);
    }
    if let Err(e) = (&s).write_all(PAYLOAD) {
        return fail("write", &e);
    }
    let mut echo = String::new();
    match r.read_line(&mut echo) {
        Ok(_) => emit(json!({ "ok": true, "echo": echo.trim() })),
        Err(e) => fail("read", &e),
    }
}

fn uring(sqpoll: bool) -> std::io::Result<IoUring> {
    let mut builder = IoUring::builder();
    if sqpoll {
        builder.setup_sqpoll(2000);
    }
    builder.build(8)
}

/// Submit one entry and wait for its completion; the result, or the errno it carries.
fn uring_op(ring: &mut IoUring, entry: squeue::Entry) -> std::io::Result<i32> {
    // SAFETY: every buffer the entry points to outlives this call, which waits for completion.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| std::io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| std::io::Error::other("no completion"))?;
    match cqe.result() {
        r if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
        r => Ok(r),
    }
}

fn uring_supports(ring: &IoUring, opcode: u8) -> bool {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(opcode)
}

/// IORING_OP_SOCKET when the kernel has it; `None` (reported) when it does not.
fn uring_socket(
    ring: &mut IoUring,
    domain: i32,
    ty: i32,
    proto: i32,
) -> Option<std::io::Result<OwnedFd>> {
    if !uring_supports(ring, opcode::Socket::CODE) {
        emit(json!({ "ok": false, "unsupported": "IORING_OP_SOCKET" }));
        return None;
    }
    Some(
        uring_op(ring, opcode::Socket::new(domain, ty, proto).build())
            // SAFETY: the completion handed us a new descriptor.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
    )
}

/// IORING_OP_CONNECT: inline, forced onto an io-wq worker thread (IOSQE_ASYNC), or issued by
/// an SQPOLL kernel thread; on a socket from socket(2) or from IORING_OP_SOCKET.
fn io_uring_connect(addr: SocketAddr, force_async: bool, sqpoll: bool, socket_op: bool) {
    let mut ring = match uring(sqpoll) {
        Ok(r) => r,
        Err(e) => return fail("io_uring_setup", &e),
    };
    let fd = if socket_op {
        match uring_socket(&mut ring, family(&addr), libc::SOCK_STREAM, 0) {
            None => return,
            Some(Ok(fd)) => fd,
            Some(Err(e)) => return fail("IORING_OP_SOCKET", &e),
        }
    } else {
        match new_socket(family(&addr), libc::SOCK_STREAM, 0) {
            Ok(fd) => fd,
            Err(e) => return fail("socket", &e),
        }
    };
    let (sa, len) = sockaddr(&addr);
    let mut entry =
        opcode::Connect::new(types::Fd(fd.as_raw_fd()), (&raw const sa).cast(), len).build();
    if force_async {
        entry = entry.flags(squeue::Flags::ASYNC);
    }
    if let Err(e) = uring_op(&mut ring, entry) {
        return fail("IORING_OP_CONNECT", &e);
    }
    let via = json!({ "async": force_async, "sqpoll": sqpoll, "socket_op": socket_op });
    report_stream(TcpStream::from(fd), json!({ "via": via }), false);
}

/// IORING_OP_SOCKET for one of the `socket KIND` kinds.
fn io_uring_socket(kind: &str) {
    let (domain, ty, proto) = kind_triple(kind);
    let mut ring = match uring(false) {
        Ok(r) => r,
        Err(e) => return fail("io_uring_setup", &e),
    };
    match uring_socket(&mut ring, domain, ty, proto) {
        None => {}
        Some(Ok(_fd)) => emit(json!({ "ok": true })),
        Some(Err(e)) => fail("IORING_OP_SOCKET", &e),
    }
}

/// One sendmmsg(2) call, one datagram per address (all of one family).
fn udp_mmsg(addrs: Vec<SocketAddr>) {
    let Some(first) = addrs.first() else {
        die("udp-mmsg needs addresses")
    };
    let fd = match new_socket(family(first), libc::SOCK_DGRAM, 0) {
        Ok(fd) => fd,
        Err(e) => return fail("socket", &e),
    };
    let mut names: Vec<_> = addrs.iter().map(sockaddr).collect();
    let mut iovs: Vec<libc::iovec> = addrs
        .iter()
        .map(|_| libc::iovec {
            iov_base: b"probe".as_ptr() as *mut libc::c_void,
            iov_len: 5,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = names
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|((sa, len), iov)| {
            // SAFETY: all-zero is a valid mmsghdr; the pointers set below outlive the call.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (sa as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = *len;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `msgs` and everything it points to are alive for the call.
    let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    if n < 0 {
        fail("sendmmsg", &last_err());
    } else {
        emit(json!({ "ok": true, "sent": n, "of": msgs.len() }));
    }
}

/// Log every datagram that arrives on each address (the UDP upstream).
fn udp_sink(addrs: Vec<SocketAddr>) {
    let handles: Vec<_> = addrs
        .into_iter()
        .map(|a| {
            let sock = UdpSocket::bind(a).unwrap_or_else(|e| die(&format!("bind {a}: {e}")));
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    emit(json!({ "received": n, "from": from.to_string(), "on": a.to_string() }));
                }
            })
        })
        .collect();
    emit(json!({ "serving": true }));
    for h in handles {
        let _ = h.join();
    }
}

fn getppid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getppid() }
}

/// Connect from this (child) process and report, with `extra` fields about the process.
fn child_connect(addr: SocketAddr, extra: serde_json::Value) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => report_stream(s, extra, false),
        Err(e) => {
            let mut v = errno(&e);
            v["stage"] = json!("connect");
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            emit(v)
        }
    }
}

fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// fork(2); the child connects. The parent reports the child's pid and exit status.
fn fork_connect(addr: SocketAddr) {
    // SAFETY: single-threaded here; the child only connects, prints and _exits.
    match unsafe { libc::fork() } {
        -1 => fail("fork", &last_err()),
        0 => {
            child_connect(addr, json!({ "role": "child", "ppid": getppid() }));
            unsafe { libc::_exit(0) }
        }
        child => {
            let status = wait_child(child);
            emit(json!({ "forked": child, "status": status }));
        }
    }
}

/// The classic daemon: fork, setsid, fork again, the middle process exits; the grandchild
/// waits until it has been reparented, then connects.
fn double_fork_connect(addr: SocketAddr) {
    // SAFETY: single-threaded here; each child only calls async-signal-safe functions until
    // it connects.
    match unsafe { libc::fork() } {
        -1 => fail("fork", &last_err()),
        0 => unsafe {
            libc::setsid();
            let middle = libc::getpid();
            match libc::fork() {
                -1 => libc::_exit(1),
                0 => {
                    let started = Instant::now();
                    while getppid() == middle && started.elapsed() < Duration::from_secs(5) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    child_connect(
                        addr,
                        json!({
                            "role": "grandchild",
                            "reparented": getppid() != middle,
                            "sid": libc::getsid(0),
                            "session_leader": libc::getsid(0) == middle,
                        }),
                    );
                    libc::_exit(0)
                }
                _ => libc::_exit(0),
            }
        },
        child => {
            let status = wait_child(child);
            emit(json!({ "forked": child, "status": status }));
        }
    }
}

/// Run a command as a child (fork + exec); report its pid, exit and output ("ok": it ran).
fn spawn(argv: &[String]) {
    let Some(program) = argv.first() else {
        die("spawn CMD ARG...")
    };
    let child = std::process::Command::new(program)
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return fail("spawn", &e),
    };
    let child_pid = child.id();
    match child.wait_with_output() {
        Ok(out) => emit(json!({
            "ok": true,
            "child_pid": child_pid,
            "exit": out.status.code(),
            "stdout": String::from_utf8_lossy(&out.stdout),
            "stderr": String::from_utf8_lossy(&out.stderr),
        })),
        Err(e) => fail("wait", &e),
    }
}

/// Become an unprivileged user (uid and gid UID, no supplementary groups, so no capabilities
/// left), then run the rest of the command line.
fn as_uid(uid: Option<u32>, rest: &[String]) {
    let Some(uid) = uid else {
        die("as-uid UID SUBCOMMAND...")
    };
    // SAFETY: plain credential syscalls, single-threaded.
    let dropped = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    if !dropped {
        fail("setuid", &last_err());
        std::process::exit(1);
    }
    dispatch(rest);
}

/// One ICMP echo over a ping socket (SOCK_DGRAM + IPPROTO_ICMP / ICMPV6): what an
/// unprivileged user may open when net.ipv4.ping_group_range includes its group.
fn ping(addr: SocketAddr) {
    let (proto, echo_request) = if addr.is_ipv4() {
        (libc::IPPROTO_ICMP, 8u8)
    } else {
        (libc::IPPROTO_ICMPV6, 128u8)
    };
    let fd = match new_socket(family(&addr), libc::SOCK_DGRAM, proto) {
        Ok(fd) => fd,
        Err(e) => return fail("socket", &e),
    };
    if let Err(e) = set_timeouts(&fd, 3) {
        return fail("setsockopt", &e);
    }
    // type, code, checksum (the kernel fills it), id (the kernel sets it), sequence 1, data.
    let packet = [echo_request, 0, 0, 0, 0, 0, 0, 1, b'p', b'i', b'n', b'g'];
    let (sa, len) = sockaddr(&addr);
    // SAFETY: `packet` and `sa` outlive the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const sa).cast(),
            len,
        )
    };
    if sent < 0 {
        return fail("sendto", &last_err());
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got < 0 {
        return fail("recv", &last_err());
    }
    emit(json!({ "ok": true, "reply_type": buf[0], "uid": unsafe { libc::getuid() } }));
}

/// A local relay: every connection on the unix socket at `path` is spliced to `addr`.
fn unix_relay(path: &str, addr: SocketAddr) {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap_or_else(|e| die(&format!("bind {path}: {e}")));
    emit(json!({ "serving": true }));
    for client in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let Ok(up) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                return;
            };
            let (Ok(mut client_r), Ok(mut up_w)) = (client.try_clone(), up.try_clone()) else {
                return;
            };
            std::thread::spawn(move || std::io::copy(&mut client_r, &mut up_w));
            let (mut up_r, mut client_w) = (up, client);
            let _ = std::io::copy(&mut up_r, &mut client_w);
        });
    }
}

/// Connect a unix socket and read the greeting that comes back through it.
fn unix_connect(path: &str) {
    let s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => return fail("connect", &e),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(_) => emit(json!({
            "ok": !line.is_empty(),
            "greeting": serde_json::from_str::<serde_json::Value>(line.trim()).unwrap_or(json!(line)),
        })),
        Err(e) => fail("read", &e),
    }
}
