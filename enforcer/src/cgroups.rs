//! The agents' cgroup v2 tree: `<agents root>/<agent>/<instance>`. An agent instance is one
//! cgroup and its id is the kernel cgroup id (the directory's inode number on cgroup2).

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("invalid {what} name {name:?}: use 1-64 of [A-Za-z0-9_.@-], not starting with '.' or \"cgroup.\"")]
    BadName { what: &'static str, name: String },
    #[error("agents root {path} is not inside the cgroup2 mount {mount}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.into(),
        source,
    }
}

/// Where cgroup2 is mounted, read from /proc/self/mountinfo (on hybrid hosts it is
/// /sys/fs/cgroup/unified, on unified hosts /sys/fs/cgroup: never assume either).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
    parse_cgroup2_mount(&text).ok_or(CgroupError::NoCgroup2)
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> <src> <opts>"
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// Is systemd managing cgroups on this host (PID 1 is systemd)?
pub fn systemd_managed() -> bool {
    fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

const AGENT_UNIT_PREFIX: &str = "enforcer-agent@";
const AGENT_UNIT_SUFFIX: &str = ".service";

/// The agent a directory of the tree stands for (a systemd agent unit, or a plain name).
fn agent_name(dir: &str) -> String {
    dir.strip_prefix(AGENT_UNIT_PREFIX)
        .and_then(|r| r.strip_suffix(AGENT_UNIT_SUFFIX))
        .unwrap_or(dir)
        .to_string()
}

/// The agents tree, rooted at a cgroup2 directory.
#[derive(Debug, Clone)]
pub struct AgentsTree {
    root: PathBuf,
    level: u16,
}

impl AgentsTree {
    /// The configured root, or the default subtree of the detected cgroup2 mount.
    pub fn new(configured: Option<&Path>) -> Result<Self, CgroupError> {
        let mount = cgroup2_mount()?;
        let root = match configured {
            Some(p) => p.to_path_buf(),
            None if systemd_managed() => mount.join("enforcer.slice/enforcer-agents.slice"),
            None => mount.join("enforcer-agents"),
        };
        let rel = root
            .strip_prefix(&mount)
            .map_err(|_| CgroupError::OutsideMount {
                path: root.clone(),
                mount: mount.clone(),
            })?;
        let level = rel.components().count() as u16;
        Ok(Self { root, level })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// cgroup level of the root (the cgroup2 root is level 0).
    pub fn level(&self) -> u16 {
        self.level
    }

    /// Create the root if needed and return its cgroup id.
    pub fn ensure_root(&self) -> Result<u64, CgroupError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        cgroup_id(&self.root)
    }

    /// Under a systemd slice, each agent is a unit with its own delegated cgroup
    /// (`enforcer-agent@NAME.service`, see dist/systemd): the agent's directory carries the
    /// unit's name, so an agent revoked before its unit starts is refused by the very cgroup
    /// id systemd then uses.
    fn systemd_layout(&self) -> bool {
        self.root.extension().is_some_and(|e| e == "slice")
    }

    pub fn agent_dir(&self, agent: &str) -> Result<PathBuf, CgroupError> {
        validate_name("agent", agent)?;
        Ok(if self.systemd_layout() {
            self.root
                .join(format!("{AGENT_UNIT_PREFIX}{agent}{AGENT_UNIT_SUFFIX}"))
        } else {
            self.root.join(agent)
        })
    }

    pub fn instance_dir(&self, agent: &str, instance: &str) -> Result<PathBuf, CgroupError> {
        validate_name("instance", instance)?;
        Ok(self.agent_dir(agent)?.join(instance))
    }

    /// Create `<root>/<agent>` (kept across instances, so an agent-level revocation keyed on
    /// its id also covers instances created later) and return its id.
    pub fn ensure_agent(&self, agent: &str) -> Result<u64, CgroupError> {
        let dir = self.agent_dir(agent)?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        cgroup_id(&dir)
    }

    /// Create a fresh instance cgroup; fails if it already exists.
    pub fn create_instance(
        &self,
        agent: &str,
        instance: &str,
    ) -> Result<(PathBuf, u64), CgroupError> {
        self.ensure_agent(agent)?;
        let dir = self.instance_dir(agent, instance)?;
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        let id = cgroup_id(&dir)?;
        Ok((dir, id))
    }

    /// Every `(agent, instance, id)` currently in the tree.
    pub fn instances(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for dir in subdirs(&self.root) {
            let agent = agent_name(&dir);
            for inst in subdirs(&self.root.join(&dir)) {
                if let Ok(id) = cgroup_id(&self.root.join(&dir).join(&inst)) {
                    out.push((agent.clone(), inst, id));
                }
            }
        }
        out
    }

    /// Every `(agent, id)` currently in the tree.
    pub fn agents(&self) -> Vec<(String, u64)> {
        subdirs(&self.root)
            .into_iter()
            .filter_map(|d| {
                cgroup_id(&self.root.join(&d))
                    .ok()
                    .map(|id| (agent_name(&d), id))
            })
            .collect()
    }

    /// Pids in a cgroup and all of its descendants.
    pub fn pids_under(dir: &Path) -> Vec<i32> {
        let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for sub in subdirs(dir) {
            pids.extend(Self::pids_under(&dir.join(sub)));
        }
        pids
    }
}

/// Move the calling process into `dir`. Used between fork and exec, so it only writes.
pub fn join(dir: &Path) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    f.write_all(b"0\n")
}

/// The kernel's id for a cgroup2 directory (its inode number).
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    Ok(fs::metadata(dir).map_err(io_err(dir))?.ino())
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

pub fn validate_name(what: &'static str, name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with("cgroup.")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName {
            what,
            name: name.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_mountinfo() {
        let mi = "25 24 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                  31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_cgroup2_mount("25 24 0:22 / /x rw - tmpfs tmpfs rw\n"),
            None
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("agent", "code-review").is_ok());
        assert!(validate_name("agent", "a@1.x_y").is_ok());
        for bad in ["", ".", "..", "a/b", "cgroup.procs", "x y", &"a".repeat(65)] {
            assert!(validate_name("agent", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn under_a_systemd_slice_agents_are_their_units() {
        let slice = AgentsTree {
            root: PathBuf::from("/sys/fs/cgroup/enforcer.slice/enforcer-agents.slice"),
            level: 2,
        };
        assert_eq!(
            slice.agent_dir("code-review").unwrap(),
            PathBuf::from(
                "/sys/fs/cgroup/enforcer.slice/enforcer-agents.slice/enforcer-agent@code-review.service"
            )
        );
        let plain = AgentsTree {
            root: PathBuf::from("/sys/fs/cgroup/enforcer-agents"),
            level: 1,
        };
        assert_eq!(
            plain.agent_dir("code-review").unwrap(),
            PathBuf::from("/sys/fs/cgroup/enforcer-agents/code-review")
        );
        assert_eq!(
            agent_name("enforcer-agent@code-review.service"),
            "code-review"
        );
        assert_eq!(agent_name("code-review"), "code-review");
    }
}
