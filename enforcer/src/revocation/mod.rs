//! Revocation, in layers: persist it, deny new connects in the kernel (REVOKED map, checked
//! through the ancestor cgroup), then destroy every live socket of the target: the agent's
//! own sockets in its network namespace and the proxy's legs serving it.

pub mod store;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use enforcer_common::{revoked_uid_key, REVOKED_AGENT, REVOKED_INSTANCE, REVOKED_USER};
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
    #[error("name a target: agent, instance, user, binding or connector")]
    NoTarget,
    #[error("no user {0:?} on this host (give a user name or a uid)")]
    UnknownUser(String),
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

/// A target as an operator names it (CLI flags, admin API body): exactly one field set.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct TargetSpec {
    #[serde(default)]
    pub agent: Option<String>,
    /// `agent/instance`, a unique instance name, or a cgroup id.
    #[serde(default)]
    pub instance: Option<String>,
    /// A user name or uid.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub binding: Option<String>,
    #[serde(default)]
    pub connector: Option<String>,
}

impl TargetSpec {
    /// Resolve against the agents tree (and, for an instance that has exited, the stored
    /// revocations, so it can still be lifted). Binding and connector ids are taken as given:
    /// the caller checks them against its configuration.
    pub fn resolve(
        &self,
        tree: &AgentsTree,
        store: &RevocationStore,
    ) -> Result<Target, RevokeError> {
        if let Some(agent) = &self.agent {
            crate::cgroups::validate_name("agent", agent)?;
            return Ok(Target::Agent {
                agent: agent.clone(),
            });
        }
        if let Some(spec) = &self.instance {
            return find_instance(tree, spec).or_else(|e| {
                store
                    .load()?
                    .into_iter()
                    .map(|r| r.target)
                    .find(|t| matches!(t, Target::Instance { agent, instance, .. } if spec == instance || *spec == format!("{agent}/{instance}")))
                    .ok_or(e)
            });
        }
        if let Some(user) = &self.user {
            return find_user(user);
        }
        if let Some(binding) = &self.binding {
            return Ok(Target::Binding {
                binding: binding.clone(),
            });
        }
        if let Some(connector) = &self.connector {
            return Ok(Target::Connector {
                connector: connector.clone(),
            });
        }
        Err(RevokeError::NoTarget)
    }
}

/// The REVOKED entry the kernel checks for `target` (creating an agent's directory if needed,
/// so a revoked agent's future instances land under the revoked id). Bindings and connectors
/// have none: the proxy enforces them.
pub fn kernel_key(tree: &AgentsTree, target: &Target) -> Result<Option<(u64, u32)>, RevokeError> {
    Ok(match target {
        Target::Agent { agent } => Some((tree.ensure_agent(agent)?, REVOKED_AGENT)),
        Target::Instance { cgroup_id, .. } => Some((*cgroup_id, REVOKED_INSTANCE)),
        Target::User { uid, .. } => Some((revoked_uid_key(*uid), REVOKED_USER)),
        Target::Binding { .. } | Target::Connector { .. } => None,
    })
}

/// Resolve `--user NAME|UID` to a target.
pub fn find_user(spec: &str) -> Result<Target, RevokeError> {
    use nix::unistd::{Uid, User};
    let found = match spec.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => User::from_name(spec).ok().flatten(),
    };
    found
        .map(|u| Target::User {
            user: u.name,
            uid: u.uid.as_raw(),
        })
        .ok_or_else(|| RevokeError::UnknownUser(spec.into()))
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
        if let Some((id, scope)) = kernel_key(tree, &rev.target)? {
            maps.revoked
                .insert(id, scope, 0)
                .map_err(KernelError::map("REVOKED"))?;
            applied += 1;
        }
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
    /// Found in the map but gone by the time the kill reached them: closed by their peer's
    /// reset (one leg's death ends the other) or by the protocol-level session end.
    pub already_closed: usize,
    pub failed: usize,
    #[serde(serialize_with = "micros")]
    pub elapsed: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// Revoke, first half: persist and deny new connects in the kernel. Idempotent. The daemon
/// ends the target's sessions at the protocol level next, then calls `kill`.
pub fn deny(
    tree: &AgentsTree,
    store: &RevocationStore,
    maps: &mut KernelMaps,
    rev: &Revocation,
) -> Result<(), RevokeError> {
    // The kernel first (new connects are refused from this instant), then the file that
    // makes it survive restarts (an fsync: milliseconds).
    deny_in_kernel(tree, maps, &rev.target)?;
    store.add(rev.clone())?;
    Ok(())
}

/// The kernel half of `deny`: new connects of `target` are refused from now on (the daemon
/// persists the revocation while it kills, off the critical path).
pub fn deny_in_kernel(
    tree: &AgentsTree,
    maps: &mut KernelMaps,
    target: &Target,
) -> Result<(), RevokeError> {
    if let Some((id, scope)) = kernel_key(tree, target)? {
        maps.revoked
            .insert(id, scope, 0)
            .map_err(KernelError::map("REVOKED"))?;
    }
    Ok(())
}

/// The cgroups (agent or instance ids) whose sockets a kill of `target` destroys, and the
/// processes whose network namespaces hold them. A user's are the instances running any
/// process as that uid. Bindings and connectors have none: their flows are the proxy's own
/// and end with their sessions.
pub fn kill_scope(tree: &AgentsTree, target: &Target) -> Result<(Vec<u64>, Vec<i32>), RevokeError> {
    Ok(match target {
        Target::Agent { agent } => {
            let ids = tree
                .agents()
                .into_iter()
                .filter(|(a, _)| a == agent)
                .map(|(_, id)| id)
                .collect();
            (ids, AgentsTree::pids_under(&tree.agent_dir(agent)?))
        }
        Target::Instance {
            agent,
            instance,
            cgroup_id,
        } => (
            vec![*cgroup_id],
            AgentsTree::pids_under(&tree.instance_dir(agent, instance)?),
        ),
        Target::User { uid, .. } => {
            let (mut ids, mut pids) = (Vec::new(), Vec::new());
            for (agent, instance, id) in tree.instances() {
                let dir = tree.instance_dir(&agent, &instance)?;
                let theirs: Vec<i32> = AgentsTree::pids_under(&dir)
                    .into_iter()
                    .filter(|p| uid_of(*p) == Some(*uid))
                    .collect();
                if !theirs.is_empty() {
                    ids.push(id);
                    pids.extend(theirs);
                }
            }
            (ids, pids)
        }
        Target::Binding { .. } | Target::Connector { .. } => (Vec::new(), Vec::new()),
    })
}

/// Real uid of a process, from /proc.
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Revoke `target` in one go: persist, deny in the kernel, destroy live sockets (break-glass
/// and tests; the daemon interleaves the protocol-level end). Idempotent.
pub fn revoke(
    tree: &AgentsTree,
    store: &RevocationStore,
    maps: &mut KernelMaps,
    rev: Revocation,
) -> Result<KillReport, RevokeError> {
    deny(tree, store, maps, &rev)?;
    let (ids, pids) = kill_scope(tree, &rev.target)?;
    Ok(kill_cgroups(maps, &ids, pids)?)
}

/// Lift a revocation: forget it and stop denying in the kernel.
pub fn reinstate(
    tree: &AgentsTree,
    store: &RevocationStore,
    maps: &mut KernelMaps,
    target: &Target,
) -> Result<bool, RevokeError> {
    let key = kernel_key(tree, target)?;
    let existed = store.remove(target)?;
    if let Some((id, _)) = key {
        let _ = maps.revoked.remove(&id);
    }
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
    // The agent's sockets first: they are what must stop. Each destroy also runs the peer's
    // reset, so the work is split over two threads (two cores). The proxy legs follow; most
    // have died of their peer's reset by then (counted as already closed).
    let agent_sockets = agent_sockets_of(maps, &ids);
    let agents = destroy_split(&agent_sockets, || netns::distinct(pids.iter().copied()))?;
    let proxy_legs = proxy_legs_of(maps, &ids);
    let daemon_pid = maps.settings().daemon_pid as i32;
    let legs = destroy_split(&proxy_legs, || {
        netns::distinct((daemon_pid > 0).then_some(daemon_pid))
    })?;
    let mut report = KillReport {
        agent_sockets_found: agent_sockets.len(),
        proxy_legs_found: proxy_legs.len(),
        agent_sockets_destroyed: agents.destroyed,
        proxy_legs_destroyed: legs.destroyed,
        already_closed: agents.absent + legs.absent,
        failed: agents.failed + legs.failed,
        ..Default::default()
    };
    report.elapsed = started.elapsed();
    Ok(report)
}

/// `destroy_across` with the work halved over two threads (each with its own netlink socket).
fn destroy_split(
    ids: &[SocketId],
    namespaces: impl Fn() -> Vec<netns::Netns> + Sync,
) -> Result<DestroyReport, KernelError> {
    if ids.len() < 64 {
        return if ids.is_empty() {
            Ok(DestroyReport::default())
        } else {
            destroy_across(namespaces(), ids)
        };
    }
    let (left, right) = ids.split_at(ids.len() / 2);
    let (a, b) = std::thread::scope(|scope| {
        let other = scope.spawn(|| destroy_across(namespaces(), right));
        let mine = destroy_across(namespaces(), left);
        let other = other
            .join()
            .unwrap_or_else(|_| Err(KernelError::Kill("a kill thread panicked".into())));
        (mine, other)
    });
    let (a, b) = (a?, b?);
    Ok(DestroyReport {
        destroyed: a.destroyed + b.destroyed,
        absent: a.absent + b.absent,
        failed: a.failed + b.failed,
    })
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
    // Each socket lives in one namespace: those destroyed in none were already gone.
    total.absent = ids.len().saturating_sub(total.destroyed + total.failed);
    Ok(total)
}
