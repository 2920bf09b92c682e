//! Every way an agent can open a flow (KERNEL-NOTES, "Every way an agent can open a flow"), on
//! the real kernel. Each path must end in the proxy, be refused, or be recorded here as outside
//! what a cgroup hook can see — never silently reach the upstream. Each test asserts what really
//! happened: where the agent's socket is connected (the proxy is 127.0.0.1:15001 / [::1]:15001),
//! what the upstream greeted it with, the upstream's accept count, the daemon's relay log
//! (identity), errno values and the enforcer's counters.
//!
//! Where each path ends today:
//!
//! | path                                                   | ends in                        |
//! |--------------------------------------------------------|--------------------------------|
//! | TCP fast open: sendto(MSG_FASTOPEN), v4 and v6         | proxy (connect4/6 run first)   |
//! | TCP fast open: TCP_FASTOPEN_CONNECT + write, v4 and v6 | proxy                          |
//! | SO_BINDTODEVICE to lo                                  | proxy                          |
//! | SO_BINDTODEVICE to the uplink, IPv4 and IPv6           | refused (EPERM) by connect4/6  |
//! | the same with route_localnet + accept_local, or with no-cookie fast open (formerly escapes) | refused; a device bound after connect has its packets dropped by the egress backstop |
//! | io_uring IORING_OP_CONNECT: inline, io-wq (IOSQE_ASYNC), SQPOLL | proxy, identity of the agent process |
//! | io_uring IORING_OP_SOCKET + IORING_OP_CONNECT          | proxy; ICMP/raw/MPTCP sockets refused (EPERM) |
//! | UDP sendmmsg                                           | only DNS to resolvers leaves; the first refused datagram ends the batch (EPERM, or a short count) |
//! | fork, double fork + setsid (daemon), exec of curl      | proxy, with the agent's identity |
//! | unshare -n (root) / unshare -rn (unprivileged)         | refused: ENETUNREACH / EADDRNOTAVAIL, or ECONNREFUSED with lo up (redirected into a namespace with no proxy); raw sockets there still refused |
//! | ICMP ping socket as an unprivileged user               | refused at socket() (EPERM)    |
//! | unix socket to a relay outside the subtree             | OUTSIDE THE HOOKS (documented) |
//! | AF_PACKET socket of a privileged (CAP_NET_RAW) agent   | OUTSIDE THE HOOKS (documented) |
//!
//! A path found to reach a host unproxied is first documented by a `known_escape_...` test
//! asserting the current behaviour, then fixed and turned into a test of the refusal.

use std::{
    io::BufRead as _,
    process::{Child, Command},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use enforcer_tests::{bin, json_lines, lines, read_until, TestHost, PROXY_ADDRS, TUNNEL_CONFIG};
use serde_json::{json, Value};

const EPERM: i64 = 1;
const ENETUNREACH: i64 = 101;
const EADDRNOTAVAIL: i64 = 99;
const ECONNREFUSED: i64 = 111;

/// What the fast-open probes send (netprobe's PAYLOAD); the upstream echoes it.
const PAYLOAD: &str = "fast-open-payload";

/// The unprivileged user the probe drops to (`as-uid`).
const NOBODY: &str = "65534";

fn netprobe() -> String {
    bin("netprobe").display().to_string()
}

/// The single result line of a probe run (the one with "ok").
fn result(out: &[Value], what: &str) -> Value {
    out.iter()
        .find(|v| v.get("ok").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("{what}: no result line in {out:?}"))
}

/// Run a probe as an agent instance and return its result line.
fn agent(host: &TestHost, agent: &str, instance: &str, args: &[&str]) -> Value {
    result(
        &host.agent(agent, instance, args),
        &format!("{agent}/{instance} {args:?}"),
    )
}

/// The report `r` of a connect shows a flow redirected into the proxy (the socket's peer is the
/// proxy) that the proxy relayed to `dest` (the upstream's greeting names it).
fn assert_proxied(r: &Value, dest: &str, what: &str) {
    assert_eq!(r["ok"], true, "{what}: {r}");
    assert!(
        PROXY_ADDRS.contains(&r["peer"].as_str().unwrap_or("")),
        "{what}: not connected to the proxy: {r}"
    );
    assert_eq!(r["greeting"]["upstream"], json!(dest), "{what}: {r}");
}

/// Wait for the relay line of `pid` and check the identity the kernel gave the proxy.
fn assert_relayed(host: &TestHost, pid: u64, agent: &str, instance: &str, dest: &str) -> Value {
    let line = host.tunnel_line(pid);
    let span = &line["span"];
    assert_eq!(span["agent"], agent, "{line}");
    assert_eq!(span["instance"], instance, "{line}");
    assert_eq!(span["dest"], json!(dest), "{line}");
    line
}

/// The JSON lines a command run by `netprobe spawn` printed.
fn spawned_lines(r: &Value) -> Vec<Value> {
    json_lines(r["stdout"].as_str().unwrap_or_default())
}

/// Forward a background probe's JSON lines to a channel, so a test can wait for them.
fn collect(child: &mut Child) -> Receiver<Value> {
    let mut out = lines(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while out.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if tx.send(v).is_err() {
                    return;
                }
            }
            line.clear();
        }
    });
    rx
}

/// Receive lines until one matches `pred` or `timeout` passes; every line seen is kept.
fn recv_until(
    rx: &Receiver<Value>,
    seen: &mut Vec<Value>,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let v = rx.recv_timeout(left).ok()?;
        seen.push(v.clone());
        if pred(&v) {
            return Some(v);
        }
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A host whose configured DNS resolvers are the upstream namespace's addresses.
fn host_with_resolvers(test: &str) -> TestHost {
    let host = TestHost::with_config(test, TUNNEL_CONFIG);
    std::fs::write(
        &host.config,
        std::fs::read_to_string(&host.config).unwrap()
            + &format!(
                "[network]\ndns_resolvers = [\"{}\", \"{}\"]\n",
                host.up_v4, host.up_v6
            ),
    )
    .unwrap();
    host
}

#[test]
fn tcp_fast_open_by_sendto_and_by_fastopen_connect_is_redirected() {
    let mut host = TestHost::with_config("tfo", TUNNEL_CONFIG);
    host.start_daemon();
    let up4 = host.upstream_v4(7000).to_string();
    let up6 = host.upstream_v6(7001).to_string();
    let accepted = host.upstream_accepted();
    let redirected = host.counter("redirected");
    let mut n = 0;
    // 1: client fast open (SYN with a cookie request, data after the handshake);
    // 5: also TFO_CLIENT_NO_COOKIE, so the payload rides in the very first SYN. In both, the
    // connect4/6 hook runs before the SYN (tcp_sendmsg_fastopen -> __inet_stream_connect ->
    // pre_connect), and the payload reaches the upstream only through the proxy.
    for mode in ["1", "5"] {
        host.sysctl(&format!("net.ipv4.tcp_fastopen={mode}"));
        for probe in ["tfo-sendto", "tfo-connect"] {
            for dest in [&up4, &up6] {
                let instance = format!("{probe}-{mode}-{}", n % 2);
                let what = format!("{probe} to {dest} with tcp_fastopen={mode}");
                let r = agent(&host, "tfo", &instance, &[probe, dest]);
                assert_proxied(&r, dest, &what);
                assert_eq!(r["echo"], PAYLOAD, "{what}: payload relayed: {r}");
                assert_relayed(&host, r["pid"].as_u64().unwrap(), "tfo", &instance, dest);
                n += 1;
            }
        }
    }
    assert_eq!(host.upstream_accepted(), accepted + n);
    assert_eq!(host.counter("redirected"), redirected + n as u64);
}

/// Is there a neighbour entry for 127.0.0.1 on `dev` in the host namespace: did the kernel
/// try to resolve the proxy's loopback address on that device?
fn loopback_neighbour_on(host: &TestHost, dev: &str) -> bool {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.ns_host))
        .args(["ip", "neigh", "show", "to", "127.0.0.1", "dev", dev])
        .output()
        .expect("ip neigh");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[test]
fn so_bindtodevice_to_lo_is_redirected_and_to_the_uplink_is_refused() {
    let mut host = TestHost::with_config("bindtodevice", TUNNEL_CONFIG);
    host.start_daemon();
    let up4 = host.upstream_v4(7002).to_string();
    let up6 = host.upstream_v6(7002).to_string();
    let dev = host.veth_host.clone();
    let accepted = host.upstream_accepted();

    // Bound to lo, as root and as an unprivileged user (SO_BINDTODEVICE needs no privilege
    // since Linux 5.7): the rewritten connect reaches the proxy.
    for (i, dest) in [&up4, &up6].into_iter().enumerate() {
        let r = agent(
            &host,
            "bind",
            &format!("lo-{i}"),
            &["bind-device", "lo", dest],
        );
        assert_proxied(&r, dest, "bound to lo");
        let r = agent(
            &host,
            "bind",
            &format!("lo-nobody-{i}"),
            &["as-uid", NOBODY, "bind-device", "lo", dest],
        );
        assert_proxied(&r, dest, "bound to lo, unprivileged");
    }
    assert_eq!(host.upstream_accepted(), accepted + 4);

    // Bound to the uplink: the redirect would route the proxy's address out of that device,
    // so connect4/6 refuse it outright, for both families, with a counter to show it.
    let refused = host.counter("refused_bound_device");
    for (i, dest) in [&up4, &up6].into_iter().enumerate() {
        let r = agent(
            &host,
            "bind",
            &format!("up-{i}"),
            &["as-uid", NOBODY, "bind-device", &dev, dest],
        );
        assert_eq!(r["errno"], EPERM, "{r}");
        assert_eq!(r["stage"], "connect", "{r}");
    }
    assert_eq!(host.counter("refused_bound_device"), refused + 2);
    assert!(
        !loopback_neighbour_on(&host, &dev),
        "the proxy's address was never looked up on the uplink {dev}"
    );
    assert_eq!(
        host.upstream_accepted(),
        accepted + 4,
        "nothing reached the upstream"
    );
}

/// A host on the agent's link (here the upstream namespace, which shares the veth with the
/// host) that answers for 127.0.0.1, with a listener on 127.0.0.1:15001 (what the redirected
/// connect is addressed to). Returns the listener's line stream.
fn on_link_impostor(host: &TestHost) -> (Child, Receiver<Value>) {
    host.sysctl_up("net.ipv4.conf.all.route_localnet=1");
    host.sysctl_up(&format!("net.ipv4.conf.{}.route_localnet=1", host.veth_up));
    let mut child = host.spawn_probe_upstream(&["serve", "127.0.0.1:15001"]);
    let rx = collect(&mut child);
    let mut seen = Vec::new();
    recv_until(&rx, &mut seen, Duration::from_secs(5), |v| {
        v.get("serving").is_some()
    })
    .expect("impostor serving");
    (child, rx)
}

/// Formerly an escape: SO_BINDTODEVICE to the uplink + the connect4 rewrite to
/// 127.0.0.1:15001, on a host with route_localnet and accept_local on the uplink (kube-proxy
/// sets route_localnet on Kubernetes nodes), sent the SYN out of the uplink to an on-link host
/// answering for 127.0.0.1, and the agent got a TCP connection that bypassed the proxy.
/// connect4/6 now refuse to redirect a socket bound to a non-loopback device; and a socket
/// steered onto the uplink after connecting has its packets for the proxy dropped by the
/// egress backstop, which only lets them leave through loopback.
#[test]
fn so_bindtodevice_cannot_steer_a_redirected_flow_to_an_on_link_host() {
    let mut host = TestHost::with_config("bind-localnet", TUNNEL_CONFIG);
    host.start_daemon();
    let dev = host.veth_host.clone();
    for key in ["route_localnet", "accept_local"] {
        host.sysctl(&format!("net.ipv4.conf.all.{key}=1"));
        host.sysctl(&format!("net.ipv4.conf.{dev}.{key}=1"));
    }
    let (impostor, rx) = on_link_impostor(&host);
    let dest = host.upstream_v4(7003).to_string();
    let accepted = host.upstream_accepted();

    let r = agent(
        &host,
        "escape",
        "localnet",
        &["as-uid", NOBODY, "bind-device", &dev, &dest],
    );
    assert_eq!(r["errno"], EPERM, "bound before connect: refused: {r}");

    // Bound after a proxied connect: the echo never comes back, the packets were dropped.
    let dropped = host.counter("skb_dropped");
    let r = agent(
        &host,
        "escape",
        "after",
        &["as-uid", NOBODY, "bind-after-connect", &dev, &dest],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["stage"], "read", "{r}");
    assert!(
        host.counter("skb_dropped") > dropped,
        "the backstop dropped them"
    );

    let mut seen = Vec::new();
    let reached = recv_until(&rx, &mut seen, Duration::from_secs(1), |v| {
        v.get("accepted").is_some() || v.get("line").is_some()
    });
    assert!(
        reached.is_none(),
        "the on-link host got something: {seen:?}"
    );
    assert_eq!(
        host.upstream_accepted(),
        accepted + 1,
        "only the proxied connect"
    );
    kill(impostor);
}

/// Formerly an escape: the same bound socket with TCP fast open (host tcp_fastopen with the
/// no-cookie bit) carried its payload in a SYN to an on-link fast-open server answering for
/// 127.0.0.1. Fast open goes through connect4 too, so it is refused the same way.
#[test]
fn so_bindtodevice_fast_open_cannot_deliver_a_syn_payload_on_link() {
    let mut host = TestHost::with_config("bind-tfo", TUNNEL_CONFIG);
    host.start_daemon();
    let dev = host.veth_host.clone();
    host.sysctl("net.ipv4.tcp_fastopen=5");
    // The on-link host: fast-open server on any listener, no cookie required.
    host.sysctl_up("net.ipv4.tcp_fastopen=0x602");
    let (impostor, rx) = on_link_impostor(&host);
    let dest = host.upstream_v4(7004).to_string();
    let accepted = host.upstream_accepted();

    let r = agent(
        &host,
        "escape",
        "tfo",
        &["as-uid", NOBODY, "bind-device", &dev, &dest, "--tfo"],
    );
    assert_eq!(r["errno"], EPERM, "{r}");
    assert_eq!(r["stage"], "sendto", "{r}");
    let mut seen = Vec::new();
    let got = recv_until(&rx, &mut seen, Duration::from_secs(1), |v| {
        v.get("accepted").is_some() || v.get("line").is_some()
    });
    assert!(got.is_none(), "nothing reaches the on-link host: {seen:?}");
    assert_eq!(host.upstream_accepted(), accepted);
    kill(impostor);
}

#[test]
fn io_uring_connect_inline_async_sqpoll_and_socket_op_are_redirected() {
    let mut host = TestHost::with_config("io-uring", TUNNEL_CONFIG);
    host.start_daemon();
    // So that an ICMP socket refusal below is the enforcer's, not ping_group_range's (EACCES).
    host.allow_ping_sockets();
    let up4 = host.upstream_v4(7005).to_string();
    let up6 = host.upstream_v6(7005).to_string();
    let accepted = host.upstream_accepted();
    let variants: [&[&str]; 6] = [
        &[],
        &["--async"],
        &["--sqpoll"],
        &["--socket-op"],
        &["--socket-op", "--async"],
        &["--socket-op", "--sqpoll"],
    ];
    let mut n = 0;
    for (i, flags) in variants.iter().enumerate() {
        for (j, dest) in [&up4, &up6].into_iter().enumerate() {
            let instance = format!("v{i}-{j}");
            let mut args = vec!["io-uring", dest.as_str()];
            args.extend_from_slice(flags);
            let r = agent(&host, "uring", &instance, &args);
            if r.get("unsupported").is_some() {
                // Only a kernel before 5.19 lacks IORING_OP_SOCKET.
                assert!(kernel_before(5, 19), "IORING_OP_SOCKET unsupported: {r}");
                eprintln!("IORING_OP_SOCKET not supported by this kernel: skipped {flags:?}");
                continue;
            }
            assert_proxied(&r, dest, &format!("io_uring {flags:?}"));
            // The io-wq worker and the SQPOLL thread are threads of the agent process, in its
            // cgroup: the proxy gets the agent's pid and executable.
            let line = assert_relayed(&host, r["pid"].as_u64().unwrap(), "uring", &instance, dest);
            assert!(
                line["span"]["exe"].as_str().unwrap().ends_with("netprobe"),
                "{line}"
            );
            n += 1;
        }
    }
    assert_eq!(host.upstream_accepted(), accepted + n);
    // IORING_OP_SOCKET cannot make the sockets socket(2) may not: cgroup/sock_create runs.
    for kind in ["icmp", "icmp6", "raw", "mptcp"] {
        let r = agent(&host, "uring", "kinds", &["io-uring-socket", kind]);
        if r.get("unsupported").is_some() && kernel_before(5, 19) {
            continue;
        }
        assert_eq!(r["errno"], EPERM, "IORING_OP_SOCKET {kind}: {r}");
    }
    let r = agent(&host, "uring", "kinds", &["io-uring-socket", "tcp"]);
    assert_eq!(r["ok"], true, "{r}");
}

fn kernel_before(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (major, minor)
}

#[test]
fn udp_sendmmsg_delivers_only_dns_to_the_configured_resolvers() {
    let mut host = host_with_resolvers("sendmmsg");
    host.start_daemon();
    let (up4, up6) = (host.up_v4, host.up_v6);
    let dns4 = format!("{up4}:53");
    let quic4 = format!("{up4}:443");
    let dns6 = format!("[{up6}]:53");
    let quic6 = format!("[{up6}]:443");
    let mapped_dns = format!("[::ffff:{up4}]:53");
    let mapped_quic = format!("[::ffff:{up4}]:443");
    // A UDP upstream that logs every datagram it receives.
    let mut sink = host.spawn_probe_upstream(&["udp-sink", &dns4, &quic4, &dns6, &quic6]);
    let rx = collect(&mut sink);
    let mut seen = Vec::new();
    recv_until(&rx, &mut seen, Duration::from_secs(5), |v| {
        v.get("serving").is_some()
    })
    .expect("udp sink serving");

    // (destinations of one sendmmsg call, what it returns)
    let cases: [(&[&str], Value); 7] = [
        (&[&dns4, &dns4], json!({ "sent": 2 })),
        (&[&quic4, &quic4], json!({ "errno": EPERM })),
        // The kernel stops at the first refused datagram and reports the ones sent before it.
        (&[&dns4, &quic4], json!({ "sent": 1 })),
        (&[&quic4, &dns4], json!({ "errno": EPERM })),
        (&[&dns6, &quic6], json!({ "sent": 1 })),
        // IPv4-mapped destinations on an IPv6 socket go out as IPv4 and are checked as such.
        (&[&mapped_dns], json!({ "sent": 1 })),
        (&[&mapped_quic], json!({ "errno": EPERM })),
    ];
    for (i, (dests, want)) in cases.iter().enumerate() {
        let mut args = vec!["udp-mmsg"];
        args.extend_from_slice(dests);
        let r = agent(&host, "udp", &format!("c{i}"), &args);
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&r[k], v, "sendmmsg to {dests:?}: {r}");
        }
    }
    // Outside the subtree UDP is untouched: the sink really receives what is sent to 443.
    let r = result(&host.outside(&["udp-mmsg", &quic4]), "outside");
    assert_eq!(r["sent"], 1, "{r}");

    // What arrived, per address: DNS 2 + 1 + 1 (mapped) on IPv4, 1 on IPv6; on 443 only the
    // datagram from outside the subtree.
    let on = |seen: &[Value], addr: &str| seen.iter().filter(|v| v["on"] == addr).count();
    let want = [(&dns4, 4), (&dns6, 1), (&quic4, 1), (&quic6, 0)];
    let _ = recv_until(&rx, &mut seen, Duration::from_secs(2), |_| {
        false // drain for a moment: late datagrams must show up in the counts below
    });
    for (addr, n) in want {
        assert_eq!(on(&seen, addr), n, "datagrams on {addr}: {seen:?}");
    }
    kill(sink);
}

#[test]
fn children_fork_double_fork_and_exec_of_curl_are_redirected() {
    let mut host = TestHost::with_config("children", TUNNEL_CONFIG);
    host.start_daemon();
    let up4 = host.upstream_v4(7006).to_string();
    let up6 = host.upstream_v6(7006).to_string();
    let accepted = host.upstream_accepted();

    // fork: the child connects.
    let out = host.agent("kids", "fork", &["fork", &up4]);
    let child = result(&out, "fork");
    assert_proxied(&child, &up4, "forked child");
    assert_eq!(child["role"], "child", "{child}");
    let parent = out.iter().find(|v| v.get("forked").is_some()).unwrap();
    assert_eq!(parent["forked"], child["pid"]);
    assert_relayed(&host, child["pid"].as_u64().unwrap(), "kids", "fork", &up4);

    // Double fork + setsid: a daemon in its own session, reparented away from the agent's
    // process tree, is still in the instance's cgroup.
    let out = host.agent("kids", "daemon", &["double-fork", &up6]);
    let grandchild = result(&out, "double fork");
    assert_proxied(&grandchild, &up6, "double-forked daemon");
    assert_eq!(grandchild["role"], "grandchild", "{grandchild}");
    assert_eq!(grandchild["reparented"], true, "{grandchild}");
    let middle = out.iter().find(|v| v.get("forked").is_some()).unwrap();
    assert_eq!(
        grandchild["sid"], middle["forked"],
        "in the session setsid made: {out:?}"
    );
    assert_relayed(
        &host,
        grandchild["pid"].as_u64().unwrap(),
        "kids",
        "daemon",
        &up6,
    );

    // exec of curl (a different executable): its connect is redirected and attributed to it.
    for (i, dest) in [&up4, &up6].into_iter().enumerate() {
        let instance = format!("curl-{i}");
        let r = agent(
            &host,
            "kids",
            &instance,
            &[
                "spawn",
                "/usr/bin/curl",
                "--silent",
                "--max-time",
                "2",
                "--write-out",
                "\n%{remote_ip}\n",
                &format!("telnet://{dest}"),
            ],
        );
        // curl waits for the upstream to close, which it does not: --max-time ends it.
        let stdout = r["stdout"].as_str().unwrap_or_default();
        let greeting = spawned_lines(&r)
            .into_iter()
            .find(|v| v.get("upstream").is_some())
            .unwrap_or_else(|| panic!("curl got no greeting: {r}"));
        assert_eq!(greeting["upstream"], json!(dest), "{r}");
        // curl's own view of its peer (getpeername) is the proxy.
        let remote_ip = stdout.lines().last().unwrap_or_default();
        assert!(
            ["127.0.0.1", "::1"].contains(&remote_ip),
            "curl connected to the proxy: {r}"
        );
        let line = assert_relayed(
            &host,
            r["child_pid"].as_u64().unwrap(),
            "kids",
            &instance,
            dest,
        );
        assert!(
            line["span"]["exe"].as_str().unwrap().ends_with("/curl"),
            "{line}"
        );
    }
    assert_eq!(host.upstream_accepted(), accepted + 4);
}

#[test]
fn a_new_network_namespace_made_with_unshare_reaches_nothing() {
    let mut host = TestHost::with_config("unshare", TUNNEL_CONFIG);
    host.start_daemon();
    let np = netprobe();
    let up4 = host.upstream_v4(7007).to_string();
    let up6 = host.upstream_v6(7007).to_string();
    let accepted = host.upstream_accepted();
    let redirected = host.counter("redirected");
    let lo_up = |dest: &str| format!("ip link set lo up && exec {np} connect {dest}");
    // The cgroup hooks follow the process into any network namespace: the connect is still
    // redirected to the proxy's address — which, in a namespace of the agent's own making, is
    // either unreachable (lo down) or has no proxy listening (fail closed).
    let cases: Vec<(Vec<String>, i64)> = vec![
        (
            vec![
                "unshare".into(),
                "-n".into(),
                np.clone(),
                "connect".into(),
                up4.clone(),
            ],
            ENETUNREACH,
        ),
        // (::1 does not even exist until lo is up.)
        (
            vec![
                "unshare".into(),
                "-n".into(),
                np.clone(),
                "connect".into(),
                up6.clone(),
            ],
            EADDRNOTAVAIL,
        ),
        (
            vec![
                "unshare".into(),
                "-n".into(),
                "sh".into(),
                "-c".into(),
                lo_up(&up4),
            ],
            ECONNREFUSED,
        ),
        (
            vec![
                "unshare".into(),
                "-n".into(),
                "sh".into(),
                "-c".into(),
                lo_up(&up6),
            ],
            ECONNREFUSED,
        ),
        // Unprivileged: a user namespace owning a new network namespace.
        (
            vec![
                "unshare".into(),
                "-rn".into(),
                np.clone(),
                "connect".into(),
                up4.clone(),
            ],
            ENETUNREACH,
        ),
        (
            vec![
                "unshare".into(),
                "-rn".into(),
                "sh".into(),
                "-c".into(),
                lo_up(&up4),
            ],
            ECONNREFUSED,
        ),
    ];
    for (i, (cmd, want)) in cases.iter().enumerate() {
        let mut args = vec!["as-uid", NOBODY, "spawn"];
        if cmd[1] == "-n" {
            args.drain(..2); // root: plain unshare -n
        }
        args.extend(cmd.iter().map(String::as_str));
        let r = agent(&host, "ns", &format!("c{i}"), &args);
        let inner = spawned_lines(&r);
        assert_eq!(
            inner.first().map(|v| &v["errno"]),
            Some(&json!(want)),
            "{cmd:?}: {r}"
        );
    }
    assert_eq!(
        host.counter("redirected"),
        redirected + cases.len() as u64,
        "every one was redirected by the hooks"
    );
    // The user namespace grants CAP_NET_RAW over the new network namespace; outside the
    // subtree a raw socket opens there, inside it cgroup/sock_create still refuses it.
    let raw = [
        "as-uid", NOBODY, "spawn", "unshare", "-rn", &np, "socket", "raw",
    ];
    let outside = result(&host.outside(&raw), "outside");
    assert_eq!(spawned_lines(&outside)[0]["ok"], true, "{outside}");
    let inside = agent(&host, "ns", "raw", &raw);
    assert_eq!(spawned_lines(&inside)[0]["errno"], EPERM, "{inside}");
    assert_eq!(
        host.upstream_accepted(),
        accepted,
        "nothing reached the upstream"
    );
}

#[test]
fn icmp_ping_sockets_are_refused_for_an_unprivileged_user() {
    let mut host = TestHost::with_config("ping", TUNNEL_CONFIG);
    host.start_daemon();
    host.allow_ping_sockets();
    let v4 = format!("{}:0", host.up_v4);
    let v6 = format!("[{}]:0", host.up_v6);
    let refused = host.counter("socket_refused");
    for dest in [&v4, &v6] {
        // The namespace allows nobody's ping sockets and the upstream answers them...
        let r = result(&host.outside(&["as-uid", NOBODY, "ping", dest]), "outside");
        assert_eq!(r["ok"], true, "ping {dest} from outside: {r}");
        assert_eq!(r["uid"], 65534, "{r}");
        // ...but inside the subtree the socket is refused before anything is sent.
        let r = agent(&host, "ping", "i", &["as-uid", NOBODY, "ping", dest]);
        assert_eq!(r["errno"], EPERM, "ping {dest} from an agent: {r}");
        assert_eq!(r["stage"], "socket", "{r}");
    }
    let r = agent(
        &host,
        "ping",
        "uring",
        &["as-uid", NOBODY, "io-uring-socket", "icmp"],
    );
    assert_eq!(r["errno"], EPERM, "{r}");
    assert_eq!(host.counter("socket_refused"), refused + 3);
}

/// OUTSIDE THE HOOKS. Unix sockets are not inet sockets: connect4/6, sock_create and the
/// egress backstop never see them. An agent that reaches a relay running outside the subtree
/// (a local proxy, a container runtime socket, a deputy) gets the relay's flows, which carry
/// the relay's cgroup. Which local sockets agents may reach is a policy matter (filesystem
/// permissions, mount namespaces), not something these hooks can stop; this test records it.
#[test]
fn outside_hooks_unix_socket_to_a_relay_outside_the_subtree() {
    let mut host = TestHost::with_config("unix", TUNNEL_CONFIG);
    host.start_daemon();
    let dest = host.upstream_v4(7008).to_string();
    let path = host.dir.join("relay.sock").display().to_string();
    let mut relay = host.spawn_outside(&["unix-relay", &path, &dest]);
    let mut out = lines(&mut relay);
    read_until(&mut out, |v| v.get("serving").is_some()).expect("relay serving");
    let accepted = host.upstream_accepted();
    let redirected = host.counter("redirected");

    let r = agent(&host, "unix", "i", &["unix-connect", &path]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["greeting"]["upstream"], json!(dest), "{r}");
    assert_eq!(host.upstream_accepted(), accepted + 1);
    assert_eq!(
        host.counter("redirected"),
        redirected,
        "the relay's connect is outside the subtree: not redirected"
    );
    kill(relay);
}

/// OUTSIDE THE HOOKS. cgroup/sock_create runs for AF_INET/AF_INET6 sockets only, and the egress
/// backstop sees IP output only: an AF_PACKET socket writes frames past every hook here. Only
/// a process with CAP_NET_RAW over the host's network namespace can open one, so agents must
/// run unprivileged (in a user namespace of its own an agent gets CAP_NET_RAW only over its
/// own, empty network namespace). Recorded here: a root agent gets the socket; an unprivileged
/// one is refused by the kernel's capability check (as it is outside the subtree).
#[test]
fn outside_hooks_packet_sockets_of_a_privileged_agent() {
    let mut host = TestHost::with_config("packet", TUNNEL_CONFIG);
    host.start_daemon();
    let r = agent(&host, "pkt", "root", &["socket", "packet"]);
    assert_eq!(
        r["ok"], true,
        "root agent: AF_PACKET is not refused by the hooks: {r}"
    );
    let r = agent(
        &host,
        "pkt",
        "nobody",
        &["as-uid", NOBODY, "socket", "packet"],
    );
    assert_eq!(r["errno"], EPERM, "{r}");
    let r = result(
        &host.outside(&["as-uid", NOBODY, "socket", "packet"]),
        "outside",
    );
    assert_eq!(r["errno"], EPERM, "the kernel's own refusal: {r}");
}
