//! connect4/6: every agent TCP connect goes to the proxy (identity and original destination
//! recorded by socket cookie); UDP goes nowhere but DNS to configured resolvers.
//! Returning 0 from these hooks refuses the syscall with EPERM; 1 lets it proceed.

use core::ptr::write_volatile;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_netns_cookie,
            bpf_get_socket_cookie,
        },
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use aya_log_ebpf::debug;
use enforcer_common::{
    counter,
    decide::{
        proxy_addr6, redirect_allowed_on_device, tcp_verdict, udp_allowed, v4_mapped, TcpVerdict,
    },
    ConnectRecord, Settings, AF_INET, AF_INET6, RECORD_ALLOWLISTED, SOCK_DGRAM, SOCK_STREAM,
};

use crate::{
    ctx::ip6,
    maps::{addr_listed, count, settings, ALLOW, CONNECTS, RESOLVERS},
    refuse::current_revoked,
};

const ALLOW_SYSCALL: i32 = 1;
const REFUSE_SYSCALL: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn enforcer_connect4(ctx: SockAddrContext) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let dst = v4_mapped(sa.user_ip4);
    let port = u16::from_be(sa.user_port as u16);
    on_connect(&ctx, dst, port, AF_INET, sa.type_)
}

#[cgroup_sock_addr(connect6)]
pub fn enforcer_connect6(ctx: SockAddrContext) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let dst = user_ip6(&ctx);
    let port = u16::from_be(sa.user_port as u16);
    on_connect(&ctx, dst, port, AF_INET6, sa.type_)
}

/// Unconnected UDP (sendto / sendmsg / sendmmsg with an address).
#[cgroup_sock_addr(sendmsg4)]
pub fn enforcer_sendmsg4(ctx: SockAddrContext) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    on_udp(
        &ctx,
        v4_mapped(sa.user_ip4),
        u16::from_be(sa.user_port as u16),
    )
}

#[cgroup_sock_addr(sendmsg6)]
pub fn enforcer_sendmsg6(ctx: SockAddrContext) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    on_udp(&ctx, user_ip6(&ctx), u16::from_be(sa.user_port as u16))
}

#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    unsafe { ip6(&raw const (*ctx.sock_addr).user_ip6) }
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, dst: [u32; 4], port: u16, family: u16, sock_type: u32) -> i32 {
    let Some(settings) = settings() else {
        count(counter::REFUSED_NO_PROXY);
        return REFUSE_SYSCALL;
    };
    if current_revoked(settings) {
        count(counter::REFUSED_REVOKED);
        debug!(ctx, "refused connect from a revoked cgroup");
        return REFUSE_SYSCALL;
    }
    if sock_type == SOCK_DGRAM {
        return on_udp(ctx, dst, port);
    }
    if sock_type != SOCK_STREAM {
        count(counter::SOCKET_REFUSED);
        return REFUSE_SYSCALL;
    }
    let verdict = tcp_verdict(settings, dst, port, addr_listed(&ALLOW, dst, port));
    if matches!(verdict, TcpVerdict::Redirect | TcpVerdict::ToProxy)
        && !redirect_allowed_on_device(bound_device(ctx))
    {
        count(counter::REFUSED_BOUND_DEVICE);
        debug!(
            ctx,
            "refused connect on a socket bound to a non-loopback device"
        );
        return REFUSE_SYSCALL;
    }
    match verdict {
        TcpVerdict::RefuseNoProxy => {
            count(counter::REFUSED_NO_PROXY);
            REFUSE_SYSCALL
        }
        TcpVerdict::Allow => {
            count(counter::ALLOWLISTED);
            // Recorded too (not indexed for the proxy), so the socket can still be killed.
            let _ = record(ctx, settings, dst, port, family, RECORD_ALLOWLISTED);
            ALLOW_SYSCALL
        }
        TcpVerdict::ToProxy => {
            count(counter::TO_PROXY);
            let _ = record(ctx, settings, dst, port, family, 0);
            ALLOW_SYSCALL
        }
        TcpVerdict::Redirect => {
            if record(ctx, settings, dst, port, family, 0).is_err() {
                // Without a record the proxy could not tell who is calling: refuse.
                count(counter::REFUSED_NO_PROXY);
                return REFUSE_SYSCALL;
            }
            rewrite_to_proxy(ctx, settings, family);
            count(counter::REDIRECTED);
            ALLOW_SYSCALL
        }
    }
}

/// SO_BINDTODEVICE of the connecting socket (0 when unbound).
#[inline(always)]
fn bound_device(ctx: &SockAddrContext) -> u32 {
    unsafe {
        let sk = (*ctx.sock_addr).__bindgen_anon_1.sk;
        if sk.is_null() {
            0
        } else {
            (*sk).bound_dev_if
        }
    }
}

#[inline(always)]
fn on_udp(ctx: &SockAddrContext, dst: [u32; 4], port: u16) -> i32 {
    if let Some(settings) = settings() {
        if current_revoked(settings) {
            count(counter::REFUSED_REVOKED);
            return REFUSE_SYSCALL;
        }
    }
    if udp_allowed(port, addr_listed(&RESOLVERS, dst, port)) {
        count(counter::UDP_DNS_ALLOWED);
        ALLOW_SYSCALL
    } else {
        count(counter::UDP_REFUSED);
        debug!(ctx, "refused UDP to port {}", port);
        REFUSE_SYSCALL
    }
}

#[inline(always)]
fn record(
    ctx: &SockAddrContext,
    settings: &Settings,
    dst: [u32; 4],
    port: u16,
    family: u16,
    flags: u32,
) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let level = settings.agents_level as i32;
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rec = ConnectRecord {
        cookie,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        agent_cgroup_id: unsafe { bpf_get_current_ancestor_cgroup_id(level + 1) },
        instance_cgroup_id: unsafe { bpf_get_current_ancestor_cgroup_id(level + 2) },
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.as_ptr()) },
        orig_ip: dst,
        orig_port: port,
        family,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        flags,
    };
    CONNECTS.insert(&cookie, &rec, 0)
}

#[inline(always)]
fn rewrite_to_proxy(ctx: &SockAddrContext, settings: &Settings, family: u16) {
    let sa = ctx.sock_addr;
    let port_be = u32::from(settings.proxy_port.to_be());
    // One field at a time: adjacent u32 stores may be merged into an 8-byte store that the
    // verifier rejects for this context (KERNEL-NOTES).
    unsafe {
        if family == AF_INET {
            write_volatile(&mut (*sa).user_ip4, settings.proxy_ip4);
        } else {
            let p = proxy_addr6(settings);
            write_volatile(&mut (*sa).user_ip6[0], p[0]);
            write_volatile(&mut (*sa).user_ip6[1], p[1]);
            write_volatile(&mut (*sa).user_ip6[2], p[2]);
            write_volatile(&mut (*sa).user_ip6[3], p[3]);
        }
        write_volatile(&mut (*sa).user_port, port_be);
    }
}
