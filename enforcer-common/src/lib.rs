//! Types shared by the enforcer's kernel programs and its userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding so the kernel and userspace agree on
//! layout byte for byte. Addresses are kept as four 32-bit words exactly as the kernel hands
//! them over (network byte order in memory); IPv4 addresses are stored IPv4-mapped
//! (`::ffff:a.b.c.d`) so one key type covers both families. Ports are host byte order.
//!
//! The decision helpers at the bottom are pure functions: the kernel programs call them and
//! the unit tests below exercise them, since BPF_PROG_TEST_RUN cannot run the cgroup hooks.
#![no_std]

pub mod decide;

/// Default bpffs directory holding the enforcer's pinned programs, links and maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enforcer";

/// Names of the maps, as they appear in the object file and under the pin directory.
pub mod map_names {
    pub const SETTINGS: &str = "SETTINGS";
    pub const CONNECTS: &str = "CONNECTS";
    pub const FLOWS: &str = "FLOWS";
    pub const AGENT_SOCKETS: &str = "AGENT_SOCKETS";
    pub const PROXY_LEGS: &str = "PROXY_LEGS";
    pub const REVOKED: &str = "REVOKED";
    pub const ALLOW: &str = "ALLOW";
    pub const RESOLVERS: &str = "RESOLVERS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ALL: [&str; 9] = [
        SETTINGS,
        CONNECTS,
        FLOWS,
        AGENT_SOCKETS,
        PROXY_LEGS,
        REVOKED,
        ALLOW,
        RESOLVERS,
        COUNTERS,
    ];
}

/// Names of the programs (the functions in enforcer-ebpf).
pub mod program_names {
    pub const CONNECT4: &str = "enforcer_connect4";
    pub const CONNECT6: &str = "enforcer_connect6";
    pub const SENDMSG4: &str = "enforcer_sendmsg4";
    pub const SENDMSG6: &str = "enforcer_sendmsg6";
    pub const SOCK_CREATE: &str = "enforcer_sock_create";
    pub const TRACK: &str = "enforcer_track";
    pub const EGRESS: &str = "enforcer_egress";
}

/// Map sizes. LRU maps evict the oldest entries if a close is ever missed.
pub const MAX_CONNECTS: u32 = 65_536;
pub const MAX_FLOWS: u32 = 65_536;
pub const MAX_AGENT_SOCKETS: u32 = 65_536;
pub const MAX_PROXY_LEGS: u32 = 131_072;
pub const MAX_REVOKED: u32 = 16_384;
pub const MAX_ALLOW: u32 = 1_024;
pub const MAX_RESOLVERS: u32 = 64;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
pub const DNS_PORT: u16 = 53;
/// The loopback device's index, the same in every network namespace.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Runtime settings written by the daemon into the single-slot SETTINGS array.
/// A zero `proxy_port` means "no proxy configured": agent TCP is refused (fail closed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Proxy IPv4 address, network byte order.
    pub proxy_ip4: u32,
    /// Proxy IPv6 address, network-order words. All zero: IPv6 connects go to the
    /// IPv4-mapped form of `proxy_ip4`.
    pub proxy_ip6: [u32; 4],
    /// Proxy port, host byte order.
    pub proxy_port: u16,
    /// cgroup v2 level of the agents root; agent = level + 1, instance = level + 2.
    pub agents_level: u16,
    pub flags: u32,
    /// pid of the running daemon (0 when none): break-glass tools find its netns through it.
    pub daemon_pid: u32,
    /// Hash of the loaded eBPF object, so a newer daemon knows the pinned programs are stale.
    pub object_hash: u64,
}

/// Identity and original destination of one agent connect, captured in connect4/6
/// (the only hook that runs in the caller's context) and joined on the socket cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectRecord {
    pub cookie: u64,
    pub cgroup_id: u64,
    pub agent_cgroup_id: u64,
    pub instance_cgroup_id: u64,
    pub netns_cookie: u64,
    /// Destination the agent asked for, network-order words (IPv4 mapped).
    pub orig_ip: [u32; 4],
    /// Host byte order.
    pub orig_port: u16,
    /// Address family the agent used (AF_INET or AF_INET6).
    pub family: u16,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; 16],
    /// RECORD_* flags.
    pub flags: u32,
}

/// The connect went to an allowlisted destination, not through the proxy.
pub const RECORD_ALLOWLISTED: u32 = 1;

/// One TCP flow as the proxy sees it on accept: the client's address and the proxy's own,
/// within one network namespace. Full 4-tuple plus netns, so two flows never share a key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub netns_cookie: u64,
    pub client_ip: [u32; 4],
    pub proxy_ip: [u32; 4],
    pub client_port: u16,
    pub proxy_port: u16,
    pub _pad: u32,
}

/// A live TCP socket opened by an agent, keyed by its cookie (AGENT_SOCKETS):
/// enough to destroy it with SOCK_DESTROY and to count it in an impact preview.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentSocket {
    pub netns_cookie: u64,
    pub cgroup_id: u64,
    pub agent_cgroup_id: u64,
    pub instance_cgroup_id: u64,
    pub local_ip: [u32; 4],
    pub remote_ip: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    pub family: u16,
    pub _pad: u16,
}

/// Which side of the proxy a proxy-owned socket is on.
pub const LEG_CLIENT: u32 = 0;
pub const LEG_UPSTREAM: u32 = 1;

/// A proxy-owned socket serving an agent (PROXY_LEGS, written by the daemon), keyed by cookie,
/// so a revocation can destroy the proxy's legs even when the daemon does not answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyLeg {
    pub agent_cgroup_id: u64,
    pub instance_cgroup_id: u64,
    pub local_ip: [u32; 4],
    pub remote_ip: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    pub family: u16,
    pub _pad: u16,
    pub leg: u32,
    pub _pad2: u32,
}

/// Scope of a revocation entry (REVOKED value).
pub const REVOKED_AGENT: u32 = 1;
pub const REVOKED_INSTANCE: u32 = 2;
pub const REVOKED_USER: u32 = 3;

/// REVOKED keys for users share the map with cgroup ids: the top bit tags them (cgroup ids are
/// kernfs inode numbers, which never reach it).
pub const REVOKED_UID_TAG: u64 = 1 << 63;

/// The REVOKED key that revokes every agent process running as `uid`.
pub const fn revoked_uid_key(uid: u32) -> u64 {
    REVOKED_UID_TAG | uid as u64
}

/// An allowlisted destination (ALLOW) or a DNS resolver (RESOLVERS). `port == 0` matches any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub ip: [u32; 4],
    pub port: u16,
    pub _pad: u16,
}

/// Indexes into the per-CPU COUNTERS array.
pub mod counter {
    pub const REDIRECTED: u32 = 0;
    pub const ALLOWLISTED: u32 = 1;
    pub const TO_PROXY: u32 = 2;
    pub const REFUSED_REVOKED: u32 = 3;
    pub const REFUSED_NO_PROXY: u32 = 4;
    pub const UDP_DNS_ALLOWED: u32 = 5;
    pub const UDP_REFUSED: u32 = 6;
    pub const SOCKET_REFUSED: u32 = 7;
    pub const SKB_DROPPED: u32 = 8;
    pub const FLOWS_INDEXED: u32 = 9;
    pub const REFUSED_BOUND_DEVICE: u32 = 10;
    pub const COUNT: u32 = 11;
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected",
        "allowlisted",
        "to_proxy",
        "refused_revoked",
        "refused_no_proxy",
        "udp_dns_allowed",
        "udp_refused",
        "socket_refused",
        "skb_dropped",
        "flows_indexed",
        "refused_bound_device",
    ];
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers, with explicit padding.
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for ConnectRecord {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for AgentSocket {}
    unsafe impl aya::Pod for ProxyLeg {}
    unsafe impl aya::Pod for AddrKey {}
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_have_no_hidden_padding() {
        assert_eq!(size_of::<Settings>(), 40);
        assert_eq!(size_of::<ConnectRecord>(), 96);
        assert_eq!(size_of::<FlowKey>(), 48);
        assert_eq!(size_of::<AgentSocket>(), 72);
        assert_eq!(size_of::<ProxyLeg>(), 64);
        assert_eq!(size_of::<AddrKey>(), 20);
    }
}
