//! Refusals: revoked cgroups, socket types that could bypass the redirect, and the cgroup_skb
//! egress backstop (it silently stalls a flow, so it is a backstop, never the kill).

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_uid_gid,
        bpf_get_socket_uid, bpf_sk_fullsock, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
    },
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};
use aya_log_ebpf::debug;
use enforcer_common::{
    counter,
    decide::{is_proxy_addr, socket_allowed, v4_mapped},
    revoked_uid_key, Settings, AF_INET, IPPROTO_TCP, LOOPBACK_IFINDEX,
};

use crate::{
    ctx::ip6,
    maps::{addr_listed, count, settings, ALLOW, REVOKED},
};

/// Is the calling task's cgroup, its instance, its agent or its user revoked? The agent is
/// checked through the ancestor cgroup, so an instance created after an agent-level
/// revocation is refused as well, with no window.
#[inline(always)]
pub fn current_revoked(settings: &Settings) -> bool {
    let level = settings.agents_level as i32;
    unsafe {
        let own = bpf_get_current_cgroup_id();
        let agent = bpf_get_current_ancestor_cgroup_id(level + 1);
        let instance = bpf_get_current_ancestor_cgroup_id(level + 2);
        let uid = bpf_get_current_uid_gid() as u32;
        REVOKED.get(&own).is_some()
            || (agent != 0 && REVOKED.get(&agent).is_some())
            || (instance != 0 && REVOKED.get(&instance).is_some())
            || REVOKED.get(&revoked_uid_key(uid)).is_some()
    }
}

/// socket(): refuse raw, ICMP ping, MPTCP, SCTP (anything but TCP and UDP), and every socket of
/// a revoked cgroup.
#[cgroup_sock(sock_create)]
pub fn enforcer_sock_create(ctx: SockContext) -> i32 {
    let sk = unsafe { &*ctx.sock };
    if let Some(settings) = settings() {
        if current_revoked(settings) {
            count(counter::REFUSED_REVOKED);
            debug!(&ctx, "refused socket() in a revoked cgroup");
            return 0;
        }
    }
    if socket_allowed(sk.type_, sk.protocol) {
        1
    } else {
        count(counter::SOCKET_REFUSED);
        debug!(
            &ctx,
            "refused socket() type {} protocol {}", sk.type_, sk.protocol
        );
        0
    }
}

/// Egress backstop: drop everything from a revoked cgroup, agent TCP whose peer is neither
/// the proxy nor allowlisted (a flow that somehow escaped the connect hooks), and traffic for
/// the proxy that is leaving through anything but loopback.
#[cgroup_skb(egress)]
pub fn enforcer_egress(ctx: SkBuffContext) -> i32 {
    const PASS: i32 = 1;
    const DROP: i32 = 0;
    let Some(settings) = settings() else {
        return PASS;
    };
    let level = settings.agents_level as i32;
    let revoked = unsafe {
        let own = bpf_skb_cgroup_id(ctx.skb.skb);
        let agent = bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level + 1);
        let instance = bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level + 2);
        let uid = bpf_get_socket_uid(ctx.skb.skb);
        REVOKED.get(&own).is_some()
            || (agent != 0 && REVOKED.get(&agent).is_some())
            || (instance != 0 && REVOKED.get(&instance).is_some())
            || REVOKED.get(&revoked_uid_key(uid)).is_some()
    };
    if revoked {
        count(counter::SKB_DROPPED);
        return DROP;
    }
    let skb = unsafe { &*ctx.skb.skb };
    let sk = unsafe { skb.__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() || unsafe { (*full).protocol } != IPPROTO_TCP {
        return PASS;
    }
    let remote = if skb.family == u32::from(AF_INET) {
        v4_mapped(skb.remote_ip4)
    } else {
        unsafe { ip6(&raw const (*ctx.skb.skb).remote_ip6) }
    };
    let port = remote_port(skb.remote_port);
    let to_proxy = port == settings.proxy_port && is_proxy_addr(settings, remote);
    // Traffic for the proxy only ever leaves through loopback; anything else is a socket
    // steered onto a real device (SO_BINDTODEVICE after connect) and must not leave.
    if (to_proxy && skb.ifindex == LOOPBACK_IFINDEX)
        || (!to_proxy && addr_listed(&ALLOW, remote, port))
    {
        PASS
    } else {
        count(counter::SKB_DROPPED);
        DROP
    }
}

/// `remote_port` in __sk_buff and bpf_sock_ops holds the network-order port, shifted into the
/// upper half on little-endian kernels; accept either placement.
#[inline(always)]
pub fn remote_port(raw: u32) -> u16 {
    let be = if raw > 0xffff {
        (raw >> 16) as u16
    } else {
        raw as u16
    };
    u16::from_be(be)
}
