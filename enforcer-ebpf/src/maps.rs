//! Every map, pinned by name under the pin directory so it outlives the daemon.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use enforcer_common::{
    counter, AddrKey, AgentSocket, ConnectRecord, FlowKey, ProxyLeg, Settings, MAX_AGENT_SOCKETS,
    MAX_ALLOW, MAX_CONNECTS, MAX_FLOWS, MAX_PROXY_LEGS, MAX_RESOLVERS, MAX_REVOKED,
};

#[map]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Socket cookie -> identity and original destination, from connect4/6 until sock_ops indexes it.
#[map]
pub static CONNECTS: LruHashMap<u64, ConnectRecord> = LruHashMap::pinned(MAX_CONNECTS, 0);

/// Client 4-tuple (+ netns) -> identity and original destination, read by the proxy on accept.
#[map]
pub static FLOWS: LruHashMap<FlowKey, ConnectRecord> = LruHashMap::pinned(MAX_FLOWS, 0);

/// Socket cookie -> every live TCP socket an agent opened (kill, impact preview).
#[map]
pub static AGENT_SOCKETS: LruHashMap<u64, AgentSocket> = LruHashMap::pinned(MAX_AGENT_SOCKETS, 0);

/// Socket cookie -> proxy-owned sockets serving agents; written by the daemon only.
#[map]
pub static PROXY_LEGS: HashMap<u64, ProxyLeg> = HashMap::pinned(MAX_PROXY_LEGS, 0);

/// cgroup id (agent or instance) -> REVOKED_AGENT / REVOKED_INSTANCE.
#[map]
pub static REVOKED: HashMap<u64, u32> = HashMap::pinned(MAX_REVOKED, 0);

/// Destinations agents may reach without the proxy (explicit allowlist from config).
#[map]
pub static ALLOW: HashMap<AddrKey, u8> = HashMap::pinned(MAX_ALLOW, 0);

/// DNS resolvers agents may send UDP to (port 53 only).
#[map]
pub static RESOLVERS: HashMap<AddrKey, u8> = HashMap::pinned(MAX_RESOLVERS, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer can race this increment.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

/// Is `ip`:`port` (or `ip` on any port) in `map`?
#[inline(always)]
pub fn addr_listed(map: &HashMap<AddrKey, u8>, ip: [u32; 4], port: u16) -> bool {
    let exact = AddrKey { ip, port, _pad: 0 };
    let any_port = AddrKey {
        ip,
        port: 0,
        _pad: 0,
    };
    unsafe { map.get(&exact).is_some() || map.get(&any_port).is_some() }
}
