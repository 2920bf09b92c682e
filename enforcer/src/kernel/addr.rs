//! Conversions between std addresses and the kernel's form: four network-order words with
//! IPv4 addresses IPv4-mapped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use enforcer_common::decide::{as_v4, v4_mapped};

pub fn to_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => v4_mapped(u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_mapped(u32::from_ne_bytes(v4.octets())),
            None => words_of(v6.octets()),
        },
    }
}

pub fn from_words(w: [u32; 4]) -> IpAddr {
    match as_v4(w) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_ne_bytes())),
        None => {
            let mut b = [0u8; 16];
            for (i, word) in w.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    }
}

pub fn v6_words(ip: Ipv6Addr) -> [u32; 4] {
    words_of(ip.octets())
}

fn words_of(b: [u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, word) in w.iter_mut().enumerate() {
        *word = u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
    }
    w
}

/// IPv4 address as the kernel's network-order u32.
pub fn v4_word(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// Normalise an address the way the kernel records it (IPv4-mapped IPv6 becomes IPv4).
pub fn canonical(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(from_words(to_words(sa.ip())), sa.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["10.1.2.3", "::1", "fd00::2", "::ffff:127.0.0.1"] {
            let ip: IpAddr = s.parse().unwrap();
            let back = from_words(to_words(ip));
            let expect = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            assert_eq!(back, expect, "{s}");
        }
    }
}
