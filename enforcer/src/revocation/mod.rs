//! Revocation, in layers: persist it, deny new connects in the kernel (REVOKED map, checked
//! through the ancestor cgroup), then destroy every live socket of the target: the agent's
//! own sockets in its network namespace and the proxy's legs serving it.

pub mod store;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use enforcer_common::{REVOKED_AGENT, REVOKED_INSTANCE};
use serde::Serialize;
pub use store::{Revocation, RevocationStore, Target};

use crate::{
    cgroups::{AgentsTree, CgroupError},
    kernel::{
        kill::{self, DestroyReport, SocketId},
        netns, KernelError, KernelMaps,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(
        "no agent instance {0:?} exists (give `agent/instance`, an instance name, or a cgroup id)"
    )]
    UnknownInstance(String),
    #[error("instance name {name:?} is ambiguous: {candidates}; give `agent/instance`")]
    AmbiguousInstance { name: String, candidates: String },
}

/// Find an instance by `agent/instance`, by unique instance name, or by cgroup id.
pub fn find_instance(tree: &AgentsTree, spec: &str) -> Result<Target, RevokeError> {
    let all = tree.instances();
    let hits: Vec<_> = all
        .iter()
        .filter(|(agent, inst, id)| {
            spec == format!("{agent}/{inst}")
                || spec == inst
                || spec.parse::<u64>().ok() == Some(*id)
        })
        .collect();
    match hits.as_slice() {
        [] => Err(RevokeError::UnknownInstance(spec.into())),
        [(agent, instance, id)] => Ok(Target::Instance {
            agent: agent.clone(),
            instance: instance.clone(),
            cgroup_id: *id,
        }),
        many => Err(RevokeError::AmbiguousInstance {
            name: spec.into(),
            candidates: many
                .iter()
                .map(|(a, i, _)| format!("{a}/{i}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The cgroup id the kernel checks for `target` (creating an agent's directory if needed, so a
/// revoked agent's future instances land under the revoked id).
pub fn cgroup_of(tree: &AgentsTree, target: &Target) -> Result<(u64, u32), RevokeError> {
    Ok(match target {
        Target::Agent { agent } => (tree.ensure_agent(agent)?, REVOKED_AGENT),
        Target::Instance { cgroup_id, .. } => (*cgroup_id, REVOKED_INSTANCE),
    })
}

/// Put every stored revocation into the kernel map (daemon start, and after a break-glass
/// revoke). Instances whose cgroup is gone are skipped: their id can never come back.
pub fn sync_kernel(
    tree: &AgentsTree,
    store: &RevocationStore,
    maps: &mut KernelMaps,
) -> Result<usize, RevokeError> {
    let mut applied = 0;
    for rev in store.load()? {
        if let Target::Instance { cgroup_id, .. } = &rev.target {
            if !tree.instances().iter().any(|(_, _, id)| id == cgroup_id) {
                continue;
            }
        }
        let (id, scope) = cgroup_of(tree, &rev.target)?;
        maps.revoked
            .insert(id, scope, 0)
            .map_err(KernelError::map("REVOKED"))?;
        applied += 1;
    }
    Ok(applied)
}

/// What a kill did, for the operator and the admin record.
#[derive(Debug, Default, Clone, Serialize)]
pub struct KillReport {
    pub agent_sockets_found: usize,
    pub agent_sockets_destroyed: usize,
    pub proxy_legs_found: usize,
    pub proxy_legs_destroyed: usize,
    pub failed: usize,
    #[serde(serialize_with = "micros")]
    pub elapsed: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// Revoke `target`: persist, deny in the kernel, destroy live sockets. Idempotent.
pub fn revoke(
    tree: &AgentsTree,
    store: &RevocationStore,
    maps: &mut KernelMaps,
    rev: Revocation,
) -> Result<KillReport, RevokeError> {
    let (id, scope) = cgroup_of(tree, &rev.target)?;
    store.add(rev.clone())?;
    maps.revoked
        .insert(id, scope, 0)
        .map_err(KernelError::map("REVOKED"))?;
    let dir = match &rev.target {
        Target::Agent { agent } => tree.agent_dir(agent)?,
        Target::Instance {
            agent, instance, ..
        } => tree.instance_dir(agent, instance)?,
    };
    Ok(kill_cgroups(maps, &[id], AgentsTree::pids_under(&dir))?)
}

/// Lift a revocation: forget it and stop denying in the kernel.
pub fn reinstate(
    tree: &AgentsTree,
    store: &RevocationStore,
    maps: &mut KernelMaps,
    target: &Target,
) -> Result<bool, RevokeError> {
    let (id, _) = cgroup_of(tree, target)?;
    let existed = store.remove(target)?;
    let _ = maps.revoked.remove(&id);
    Ok(existed)
}

/// The agent-side sockets of cgroups `ids` (agent, instance or the socket's own cgroup).
fn agent_sockets_of(maps: &KernelMaps, ids: &HashSet<u64>) -> Vec<SocketId> {
    maps.agent_sockets
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, s)| {
            ids.contains(&s.cgroup_id)
                || ids.contains(&s.agent_cgroup_id)
                || ids.contains(&s.instance_cgroup_id)
        })
        .map(|(cookie, s)| SocketId {
            family: s.family,
            local_ip: s.local_ip,
            local_port: s.local_port,
            remote_ip: s.remote_ip,
            remote_port: s.remote_port,
            cookie,
        })
        .collect()
}

/// The proxy's legs (client and upstream) serving cgroups `ids`.
fn proxy_legs_of(maps: &KernelMaps, ids: &HashSet<u64>) -> Vec<SocketId> {
    maps.proxy_legs
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, l)| ids.contains(&l.agent_cgroup_id) || ids.contains(&l.instance_cgroup_id))
        .map(|(cookie, l)| SocketId {
            family: l.family,
            local_ip: l.local_ip,
            local_port: l.local_port,
            remote_ip: l.remote_ip,
            remote_port: l.remote_port,
            cookie,
        })
        .collect()
}

/// Live sockets of cgroups `ids`: (agent-side, proxy legs).
pub fn count_sockets(maps: &KernelMaps, ids: &[u64]) -> (usize, usize) {
    let ids: HashSet<u64> = ids.iter().copied().collect();
    (
        agent_sockets_of(maps, &ids).len(),
        proxy_legs_of(maps, &ids).len(),
    )
}

/// Destroy every live socket belonging to cgroups `ids` (any of agent, instance or the
/// socket's own cgroup), on both legs. `pids` are the target's processes: their network
/// namespaces are where the agent sockets live.
pub fn kill_cgroups(
    maps: &KernelMaps,
    ids: &[u64],
    pids: Vec<i32>,
) -> Result<KillReport, KernelError> {
    let started = Instant::now();
    let ids: HashSet<u64> = ids.iter().copied().collect();
    let agent_sockets = agent_sockets_of(maps, &ids);
    let proxy_legs = proxy_legs_of(maps, &ids);

    let mut report = KillReport {
        agent_sockets_found: agent_sockets.len(),
        proxy_legs_found: proxy_legs.len(),
        ..Default::default()
    };
    if !agent_sockets.is_empty() {
        let r = destroy_across(netns::distinct(pids), &agent_sockets)?;
        report.agent_sockets_destroyed = r.destroyed;
        report.failed += r.failed;
    }
    if !proxy_legs.is_empty() {
        let daemon_pid = maps.settings().daemon_pid as i32;
        let r = destroy_across(
            netns::distinct((daemon_pid > 0).then_some(daemon_pid)),
            &proxy_legs,
        )?;
        report.proxy_legs_destroyed = r.destroyed;
        report.failed += r.failed;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Try `ids` in each namespace: a socket lives in exactly one and answers ENOENT elsewhere,
/// so each is destroyed once.
fn destroy_across(
    namespaces: Vec<netns::Netns>,
    ids: &[SocketId],
) -> Result<DestroyReport, KernelError> {
    let mut total = DestroyReport::default();
    for ns in namespaces {
        let diag = netns::socket_in(&ns, kill::diag_socket).map_err(|e| {
            KernelError::Kill(format!("netlink socket in {}: {e}", ns.source.display()))
        })?;
        let r = kill::destroy(&diag, ids).map_err(|e| {
            KernelError::Kill(format!("SOCK_DESTROY in {}: {e}", ns.source.display()))
        })?;
        total.destroyed += r.destroyed;
        total.failed += r.failed;
    }
    Ok(total)
}
