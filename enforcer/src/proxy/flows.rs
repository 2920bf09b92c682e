//! Original destination and identity for an accepted connection: the kernel indexed the
//! agent's connect by its 4-tuple (FLOWS); we look it up from the proxy's side.

use std::net::SocketAddr;

use aya::maps::{HashMap, MapData};
use enforcer_common::{ConnectRecord, FlowKey};

use crate::kernel::addr::to_words;

pub struct FlowTable {
    map: HashMap<MapData, FlowKey, ConnectRecord>,
    netns_cookie: u64,
}

impl FlowTable {
    pub fn new(map: HashMap<MapData, FlowKey, ConnectRecord>, netns_cookie: u64) -> Self {
        Self { map, netns_cookie }
    }

    /// The record for a connection accepted from `client` on `local`, if an agent made it.
    pub fn lookup(&self, client: SocketAddr, local: SocketAddr) -> Option<ConnectRecord> {
        let key = FlowKey {
            netns_cookie: self.netns_cookie,
            client_ip: to_words(client.ip()),
            proxy_ip: to_words(local.ip()),
            client_port: client.port(),
            proxy_port: local.port(),
            _pad: 0,
        };
        self.map.get(&key, 0).ok()
    }
}
