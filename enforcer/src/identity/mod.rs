//! The actor chain, from the kernel's word only: cgroup id -> agent and instance, uid -> user,
//! pid -> executable (the client surface). Nothing here trusts what a client says.

use std::{collections::HashMap, fmt, path::PathBuf, sync::Mutex};

use enforcer_common::ConnectRecord;
use serde::Serialize;

use crate::cgroups::AgentsTree;

/// Who is calling, resolved from a kernel connect record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Actor {
    pub user: String,
    pub uid: u32,
    pub agent: String,
    pub instance: String,
    pub instance_id: u64,
    pub pid: u32,
    /// Executable of the connecting process (client surface); comm when it has exited.
    pub exe: String,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user={} agent={} instance={} pid={} exe={}",
            self.user, self.agent, self.instance, self.pid, self.exe
        )
    }
}

/// Resolves cgroup ids against the agents tree, caching what it has seen.
pub struct Resolver {
    tree: AgentsTree,
    names: Mutex<HashMap<u64, String>>,
}

impl Resolver {
    pub fn new(tree: AgentsTree) -> Self {
        Self {
            tree,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Name of the cgroup `id` (agent or instance directory), rescanning the tree on a miss.
    fn name_of(&self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.get(&id) {
            return Some(n.clone());
        }
        for (agent, agent_id) in self.tree.agents() {
            names.insert(agent_id, agent);
        }
        for (_, instance, instance_id) in self.tree.instances() {
            names.insert(instance_id, instance);
        }
        names.get(&id).cloned()
    }

    pub fn resolve(&self, rec: &ConnectRecord) -> Actor {
        let unknown = |id: u64| format!("cgroup:{id}");
        Actor {
            user: user_name(rec.uid),
            uid: rec.uid,
            agent: self
                .name_of(rec.agent_cgroup_id)
                .unwrap_or_else(|| unknown(rec.agent_cgroup_id)),
            instance: self
                .name_of(rec.instance_cgroup_id)
                .unwrap_or_else(|| unknown(rec.instance_cgroup_id)),
            instance_id: rec.instance_cgroup_id,
            pid: rec.pid,
            exe: exe_of(rec.pid).unwrap_or_else(|| comm(&rec.comm)),
        }
    }
}

pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid:{uid}"))
}

fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(PathBuf::from(format!("/proc/{pid}/exe")))
        .ok()
        .map(|p| p.display().to_string())
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_stops_at_nul() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(b"curl");
        assert_eq!(comm(&c), "curl");
        assert_eq!(comm(&[b'x'; 16]), "x".repeat(16));
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0), "root");
        assert!(user_name(4_000_000).starts_with("uid:"));
    }
}
