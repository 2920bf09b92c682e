//! Typed access to the pinned maps, shared by the daemon and the CLI (status, revoke,
//! break-glass). Every map is opened from its pin, so any process with CAP_BPF sees the same
//! state the kernel programs use.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use enforcer_common::{
    counter, map_names, AddrKey, AgentSocket, ConnectRecord, FlowKey, ProxyLeg, Settings,
};

use super::KernelError;

pub struct KernelMaps {
    pub settings: Array<MapData, Settings>,
    pub connects: HashMap<MapData, u64, ConnectRecord>,
    pub flows: HashMap<MapData, FlowKey, ConnectRecord>,
    pub agent_sockets: HashMap<MapData, u64, AgentSocket>,
    pub proxy_legs: HashMap<MapData, u64, ProxyLeg>,
    pub revoked: HashMap<MapData, u64, u32>,
    pub allow: HashMap<MapData, AddrKey, u8>,
    pub resolvers: HashMap<MapData, AddrKey, u8>,
    pub counters: PerCpuArray<MapData, u64>,
}

fn open(pin_dir: &Path, name: &'static str) -> Result<Map, KernelError> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| KernelError::OpenMap {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| KernelError::OpenMap { path, source })
}

fn typed<T: TryFrom<Map, Error = MapError>>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<T, KernelError> {
    let map = open(pin_dir, name)?;
    T::try_from(map).map_err(|source| KernelError::OpenMap {
        path: pin_dir.join(name),
        source,
    })
}

impl KernelMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, KernelError> {
        Ok(Self {
            settings: typed(pin_dir, map_names::SETTINGS)?,
            connects: typed(pin_dir, map_names::CONNECTS)?,
            flows: typed(pin_dir, map_names::FLOWS)?,
            agent_sockets: typed(pin_dir, map_names::AGENT_SOCKETS)?,
            proxy_legs: typed(pin_dir, map_names::PROXY_LEGS)?,
            revoked: typed(pin_dir, map_names::REVOKED)?,
            allow: typed(pin_dir, map_names::ALLOW)?,
            resolvers: typed(pin_dir, map_names::RESOLVERS)?,
            counters: typed(pin_dir, map_names::COUNTERS)?,
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings.get(&0, 0).unwrap_or_default()
    }

    pub fn set_settings(&mut self, s: Settings) -> Result<(), KernelError> {
        self.settings
            .set(0, s, 0)
            .map_err(KernelError::map("SETTINGS"))
    }

    /// Counter totals summed over CPUs, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        (0..counter::COUNT)
            .map(|i| {
                let total = self
                    .counters
                    .get(&i, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (counter::NAMES[i as usize], total)
            })
            .collect()
    }

    /// Entry counts of the tracking maps (they must drain back to zero when flows close).
    pub fn entry_counts(&self) -> Vec<(&'static str, usize)> {
        vec![
            (map_names::CONNECTS, self.connects.keys().count()),
            (map_names::FLOWS, self.flows.keys().count()),
            (map_names::AGENT_SOCKETS, self.agent_sockets.keys().count()),
            (map_names::PROXY_LEGS, self.proxy_legs.keys().count()),
            (map_names::REVOKED, self.revoked.keys().count()),
        ]
    }

    /// Replace the whole content of an address map (allowlist, resolvers) with `entries`.
    pub fn replace_addrs(
        map: &mut HashMap<MapData, AddrKey, u8>,
        entries: &[AddrKey],
    ) -> Result<(), KernelError> {
        let stale: Vec<AddrKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !entries.contains(k))
            .collect();
        for k in stale {
            map.remove(&k).map_err(KernelError::map("address map"))?;
        }
        for k in entries {
            map.insert(k, 1, 0)
                .map_err(KernelError::map("address map"))?;
        }
        Ok(())
    }
}
