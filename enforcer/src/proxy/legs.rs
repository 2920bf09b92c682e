//! Registers the proxy's own sockets serving an agent in PROXY_LEGS, so a revocation (from the
//! daemon, the CLI or break-glass) can destroy both legs by cookie and 4-tuple.

use std::sync::{Arc, Mutex};

use aya::maps::{HashMap, MapData};
use enforcer_common::{ConnectRecord, ProxyLeg};

use crate::kernel::kill::own_socket_id;

#[derive(Clone)]
pub struct LegRegistry {
    map: Arc<Mutex<HashMap<MapData, u64, ProxyLeg>>>,
}

/// Removes its entry from PROXY_LEGS when the leg ends, however it ends.
pub struct LegGuard {
    registry: LegRegistry,
    cookie: u64,
}

impl LegRegistry {
    pub fn new(map: HashMap<MapData, u64, ProxyLeg>) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
        }
    }

    /// Forget legs left by an earlier daemon (their sockets died with it).
    pub fn clear(&self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<u64> = map.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = map.remove(&k);
        }
    }

    pub fn register(
        &self,
        socket: &impl std::os::fd::AsRawFd,
        rec: &ConnectRecord,
        leg: u32,
    ) -> std::io::Result<LegGuard> {
        let id = own_socket_id(socket)?;
        let value = ProxyLeg {
            agent_cgroup_id: rec.agent_cgroup_id,
            instance_cgroup_id: rec.instance_cgroup_id,
            local_ip: id.local_ip,
            remote_ip: id.remote_ip,
            local_port: id.local_port,
            remote_port: id.remote_port,
            family: id.family,
            _pad: 0,
            leg,
            _pad2: 0,
        };
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.cookie, value, 0)
            .map_err(std::io::Error::other)?;
        Ok(LegGuard {
            registry: self.clone(),
            cookie: id.cookie,
        })
    }
}

impl Drop for LegGuard {
    fn drop(&mut self) {
        let _ = self
            .registry
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.cookie);
    }
}
