//! Pure decisions made in the kernel hooks. Kept here, free of BPF helpers, so unit tests
//! reach them (the cgroup hooks cannot be driven by BPF_PROG_TEST_RUN).

use crate::{Settings, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM};

/// What connect4/6 does with an agent's TCP connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpVerdict {
    /// Rewrite the destination to the proxy and record the original.
    Redirect,
    /// The agent dialled the proxy itself: leave it, but record it (the proxy refuses loops).
    ToProxy,
    /// Allowlisted destination: leave it untouched.
    Allow,
    /// No proxy configured (daemon never started): refuse, fail closed.
    RefuseNoProxy,
}

/// An IPv4 address (network byte order, as the kernel gives it) in IPv4-mapped IPv6 form.
#[inline(always)]
pub const fn v4_mapped(ip4: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), ip4]
}

/// The IPv4 address inside an IPv4-mapped address, if it is one.
#[inline(always)]
pub const fn as_v4(ip: [u32; 4]) -> Option<u32> {
    if ip[0] == 0 && ip[1] == 0 && ip[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        Some(ip[3])
    } else {
        None
    }
}

/// Decide a TCP connect to `dst`:`port` (host order port, mapped address).
#[inline(always)]
pub fn tcp_verdict(settings: &Settings, dst: [u32; 4], port: u16, allowlisted: bool) -> TcpVerdict {
    if settings.proxy_port == 0 {
        return TcpVerdict::RefuseNoProxy;
    }
    if port == settings.proxy_port && is_proxy_addr(settings, dst) {
        return TcpVerdict::ToProxy;
    }
    if allowlisted {
        return TcpVerdict::Allow;
    }
    TcpVerdict::Redirect
}

/// Is `ip` one of the proxy's own listening addresses?
#[inline(always)]
pub fn is_proxy_addr(settings: &Settings, ip: [u32; 4]) -> bool {
    let v4 = v4_mapped(settings.proxy_ip4);
    (ip[0] == v4[0] && ip[1] == v4[1] && ip[2] == v4[2] && ip[3] == v4[3])
        || (ip[0] == settings.proxy_ip6[0]
            && ip[1] == settings.proxy_ip6[1]
            && ip[2] == settings.proxy_ip6[2]
            && ip[3] == settings.proxy_ip6[3])
}

/// The address an IPv6 connect is rewritten to: the configured IPv6 proxy address, or the
/// IPv4-mapped proxy address when none is configured.
#[inline(always)]
pub fn proxy_addr6(settings: &Settings) -> [u32; 4] {
    let p = settings.proxy_ip6;
    if p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0 {
        v4_mapped(settings.proxy_ip4)
    } else {
        p
    }
}

/// A socket bound to a device (SO_BINDTODEVICE) other than loopback must not be sent to the
/// proxy: the rewritten destination would be routed out of that device, where an on-link host
/// answering for the proxy's loopback address would get the flow instead of the proxy.
#[inline(always)]
pub fn redirect_allowed_on_device(bound_dev_if: u32) -> bool {
    bound_dev_if == 0 || bound_dev_if == crate::LOOPBACK_IFINDEX
}

/// Which sockets an agent may create at all: TCP and UDP over IPv4/IPv6. Raw sockets, ICMP
/// ping sockets, MPTCP and SCTP are refused at socket() (they could bypass the redirect).
#[inline(always)]
pub fn socket_allowed(sock_type: u32, protocol: u32) -> bool {
    (sock_type == SOCK_STREAM && protocol == IPPROTO_TCP)
        || (sock_type == SOCK_DGRAM && protocol == IPPROTO_UDP)
}

/// UDP from agents is allowed only to a configured resolver on port 53.
#[inline(always)]
pub fn udp_allowed(port: u16, is_resolver: bool) -> bool {
    port == crate::DNS_PORT && is_resolver
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_ne_bytes([a, b, c, d])
    }

    fn settings() -> Settings {
        Settings {
            proxy_ip4: ip4(127, 0, 0, 1),
            proxy_ip6: [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])],
            proxy_port: 15001,
            ..Default::default()
        }
    }

    #[test]
    fn unconfigured_proxy_refuses() {
        let s = Settings::default();
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(10, 0, 0, 1)), 443, false),
            TcpVerdict::RefuseNoProxy
        );
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(10, 0, 0, 1)), 443, true),
            TcpVerdict::RefuseNoProxy
        );
    }

    #[test]
    fn everything_else_is_redirected_including_loopback() {
        let s = settings();
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(10, 0, 0, 1)), 443, false),
            TcpVerdict::Redirect
        );
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(127, 0, 0, 1)), 8080, false),
            TcpVerdict::Redirect
        );
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(127, 0, 0, 2)), 15001, false),
            TcpVerdict::Redirect
        );
    }

    #[test]
    fn proxy_itself_and_allowlist_are_left_alone() {
        let s = settings();
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(127, 0, 0, 1)), 15001, false),
            TcpVerdict::ToProxy
        );
        assert_eq!(
            tcp_verdict(&s, s.proxy_ip6, 15001, false),
            TcpVerdict::ToProxy
        );
        assert_eq!(
            tcp_verdict(&s, v4_mapped(ip4(10, 0, 0, 9)), 5432, true),
            TcpVerdict::Allow
        );
    }

    #[test]
    fn v4_mapping_round_trips() {
        let a = ip4(192, 0, 2, 7);
        assert_eq!(as_v4(v4_mapped(a)), Some(a));
        assert_eq!(as_v4([0, 0, 0, 1]), None);
    }

    #[test]
    fn ipv6_falls_back_to_mapped_proxy() {
        let mut s = settings();
        assert_eq!(proxy_addr6(&s), s.proxy_ip6);
        s.proxy_ip6 = [0; 4];
        assert_eq!(proxy_addr6(&s), v4_mapped(s.proxy_ip4));
    }

    #[test]
    fn only_tcp_and_udp_sockets() {
        assert!(socket_allowed(SOCK_STREAM, IPPROTO_TCP));
        assert!(socket_allowed(SOCK_DGRAM, IPPROTO_UDP));
        assert!(!socket_allowed(SOCK_DGRAM, 1)); // ICMP ping socket
        assert!(!socket_allowed(SOCK_DGRAM, 58)); // ICMPv6 ping socket
        assert!(!socket_allowed(3, 255)); // raw
        assert!(!socket_allowed(SOCK_STREAM, 262)); // MPTCP
        assert!(!socket_allowed(SOCK_STREAM, 132)); // SCTP
    }

    #[test]
    fn redirects_only_unbound_or_loopback_bound_sockets() {
        assert!(redirect_allowed_on_device(0));
        assert!(redirect_allowed_on_device(1));
        assert!(!redirect_allowed_on_device(2));
    }

    #[test]
    fn udp_only_dns_to_resolvers() {
        assert!(udp_allowed(53, true));
        assert!(!udp_allowed(53, false));
        assert!(!udp_allowed(443, true));
    }
}
