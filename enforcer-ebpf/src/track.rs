//! sock_ops: when an agent's TCP connect goes out, index its record by the client 4-tuple for
//! the proxy (FLOWS) and keep the live socket by cookie (AGENT_SOCKETS); remove both on close.
//! The current pid is not available here: identity was captured in connect4/6 and is joined
//! on the socket cookie.

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie, macros::sock_ops, programs::SockOpsContext,
    EbpfContext,
};
use enforcer_common::{
    counter, decide::v4_mapped, AgentSocket, FlowKey, AF_INET, RECORD_ALLOWLISTED,
};

use crate::{
    ctx::ip6,
    maps::{count, AGENT_SOCKETS, CONNECTS, FLOWS},
    refuse::remote_port,
};

const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
const BPF_SOCK_OPS_STATE_CB: u32 = 10;
const BPF_SOCK_OPS_STATE_CB_FLAG: i32 = 4;
const TCP_CLOSE: u32 = 7;

#[sock_ops]
pub fn enforcer_track(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    0
}

#[inline(always)]
fn tuple(ctx: &SockOpsContext) -> ([u32; 4], [u32; 4], u16, u16, u16) {
    let family = ctx.family() as u16;
    let (local, remote) = if family == AF_INET {
        (v4_mapped(ctx.local_ip4()), v4_mapped(ctx.remote_ip4()))
    } else {
        unsafe {
            (
                ip6(&raw const (*ctx.ops).local_ip6),
                ip6(&raw const (*ctx.ops).remote_ip6),
            )
        }
    };
    (
        local,
        remote,
        ctx.local_port() as u16,
        remote_port(ctx.remote_port()),
        family,
    )
}

#[inline(always)]
fn on_connect(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(rec) = (unsafe { CONNECTS.get(&cookie) }) else {
        return; // not an agent connect we recorded (e.g. opened before the hooks attached)
    };
    let rec = *rec;
    let _ = CONNECTS.remove(&cookie);
    let (local_ip, remote_ip, local_port, rport, family) = tuple(ctx);
    // Ask for state callbacks so the entries below are removed when the socket closes.
    let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 | BPF_SOCK_OPS_STATE_CB_FLAG);
    let sock = AgentSocket {
        netns_cookie: rec.netns_cookie,
        cgroup_id: rec.cgroup_id,
        agent_cgroup_id: rec.agent_cgroup_id,
        instance_cgroup_id: rec.instance_cgroup_id,
        local_ip,
        remote_ip,
        local_port,
        remote_port: rport,
        family,
        _pad: 0,
    };
    let _ = AGENT_SOCKETS.insert(&cookie, &sock, 0);
    if rec.flags & RECORD_ALLOWLISTED == 0 {
        let key = FlowKey {
            netns_cookie: rec.netns_cookie,
            client_ip: local_ip,
            proxy_ip: remote_ip,
            client_port: local_port,
            proxy_port: rport,
            _pad: 0,
        };
        if FLOWS.insert(&key, &rec, 0).is_ok() {
            count(counter::FLOWS_INDEXED);
        }
    }
}

#[inline(always)]
fn on_close(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(sock) = (unsafe { AGENT_SOCKETS.get(&cookie) }) else {
        return;
    };
    let key = FlowKey {
        netns_cookie: sock.netns_cookie,
        client_ip: sock.local_ip,
        proxy_ip: sock.remote_ip,
        client_port: sock.local_port,
        proxy_port: sock.remote_port,
        _pad: 0,
    };
    // Only this socket's entry: a new connect that reused the 4-tuple owns it now.
    if unsafe { FLOWS.get(&key) }.is_some_and(|rec| rec.cookie == cookie) {
        let _ = FLOWS.remove(&key);
    }
    let _ = AGENT_SOCKETS.remove(&cookie);
}
