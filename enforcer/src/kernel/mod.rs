//! The kernel side, from userspace: load the programs once, attach them to the agents root,
//! pin programs, links and maps under the pin directory, and adopt that pinned state on later
//! starts instead of attaching twice. Pinned state outlives the daemon: with no daemon the
//! redirected connects find a closed port, so agents fail closed.

pub mod addr;
pub mod kill;
pub mod maps;
pub mod netns;

use std::{
    fs,
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        cgroup_skb::CgroupSkbAttachType,
        links::{CgroupAttachMode, FdLink, PinnedLink},
        CgroupSkb, CgroupSock, CgroupSockAddr, SockOps,
    },
    Ebpf, EbpfLoader,
};
use enforcer_common::program_names as prog;
pub use maps::KernelMaps;

/// The compiled kernel programs, embedded at build time by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

const ALL_PROGRAMS: [&str; 7] = [
    prog::CONNECT4,
    prog::CONNECT6,
    prog::SENDMSG4,
    prog::SENDMSG6,
    prog::SOCK_CREATE,
    prog::TRACK,
    prog::EGRESS,
];

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{path} is not on a bpf filesystem: mount it with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs { path: PathBuf },
    #[error("cannot open pinned map {path}: {source} (is the daemon set up? run `enforcer daemon` once)")]
    OpenMap {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("map {what}: {source}")]
    Map {
        what: &'static str,
        source: aya::maps::MapError,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("pinning {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket kill: {0}")]
    Kill(String),
}

impl KernelError {
    pub fn map(what: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map { what, source }
    }
}

/// Forwards kernel-side logs (aya-log) into tracing.
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// How the daemon came by its kernel state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Loaded and attached now.
    Attached,
    /// Found pinned from an earlier run and adopted.
    Adopted,
}

/// A hash of the embedded object, recorded in SETTINGS so a daemon can tell whether the pinned
/// programs came from its own build.
pub fn object_hash() -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    EBPF_OBJECT.hash(&mut h);
    h.finish()
}

fn link_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("link_{name}"))
}

fn prog_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("prog_{name}"))
}

/// Is everything we attach already pinned in `pin_dir`?
pub fn is_pinned(pin_dir: &Path) -> bool {
    ALL_PROGRAMS.iter().all(|p| link_pin(pin_dir, p).exists())
}

/// Fail with a clear message unless `pin_dir` is on bpffs (creating it if needed).
pub fn check_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    fs::create_dir_all(pin_dir).map_err(|source| KernelError::Io {
        path: pin_dir.into(),
        source,
    })?;
    let st = nix::sys::statfs::statfs(pin_dir).map_err(|e| KernelError::Io {
        path: pin_dir.into(),
        source: e.into(),
    })?;
    if st.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        return Err(KernelError::NoBpffs {
            path: pin_dir.into(),
        });
    }
    Ok(())
}

/// Load, attach and pin everything on first start; adopt the pinned state afterwards.
/// Returns the logger for kernel-side logs (aya-log) when it can be attached.
pub fn load_or_adopt(
    pin_dir: &Path,
    agents_root: &Path,
) -> Result<(Attachment, Option<KernelLogger>), KernelError> {
    check_bpffs(pin_dir)?;
    if is_pinned(pin_dir) {
        let logger = PinnedLink::from_pin(link_pin(pin_dir, prog::CONNECT4))
            .ok()
            .and_then(|l| FdLink::from(l).info().ok())
            .and_then(|info| aya_log::EbpfLogger::init_from_id(info.program_id()).ok());
        return Ok((Attachment::Adopted, logger));
    }
    // A partial pin set (an interrupted start) is cleared before attaching again.
    cleanup(pin_dir)?;
    check_bpffs(pin_dir)?;
    let cgroup = fs::File::open(agents_root).map_err(|source| KernelError::Io {
        path: agents_root.into(),
        source,
    })?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(EBPF_OBJECT)?;
    let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
    for name in [
        prog::CONNECT4,
        prog::CONNECT6,
        prog::SENDMSG4,
        prog::SENDMSG6,
    ] {
        let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        p.load().map_err(perr(name))?;
        let id = p
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(perr(name))?;
        let link = FdLink::try_from(p.take_link(id).map_err(perr(name))?).map_err(lerr(name))?;
        pin(pin_dir, name, link)?;
        p.pin(prog_pin(pin_dir, name))
            .map_err(pin_err(pin_dir, name))?;
    }
    {
        let name = prog::SOCK_CREATE;
        let p: &mut CgroupSock = program(&mut ebpf, name)?;
        p.load().map_err(perr(name))?;
        let id = p
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(perr(name))?;
        let link = FdLink::try_from(p.take_link(id).map_err(perr(name))?).map_err(lerr(name))?;
        pin(pin_dir, name, link)?;
        p.pin(prog_pin(pin_dir, name))
            .map_err(pin_err(pin_dir, name))?;
    }
    {
        let name = prog::TRACK;
        let p: &mut SockOps = program(&mut ebpf, name)?;
        p.load().map_err(perr(name))?;
        let id = p
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(perr(name))?;
        let link = FdLink::try_from(p.take_link(id).map_err(perr(name))?).map_err(lerr(name))?;
        pin(pin_dir, name, link)?;
        p.pin(prog_pin(pin_dir, name))
            .map_err(pin_err(pin_dir, name))?;
    }
    {
        let name = prog::EGRESS;
        let p: &mut CgroupSkb = program(&mut ebpf, name)?;
        p.load().map_err(perr(name))?;
        let id = p
            .attach(
                &cgroup,
                CgroupSkbAttachType::Egress,
                CgroupAttachMode::Single,
            )
            .map_err(perr(name))?;
        let link = FdLink::try_from(p.take_link(id).map_err(perr(name))?).map_err(lerr(name))?;
        pin(pin_dir, name, link)?;
        p.pin(prog_pin(pin_dir, name))
            .map_err(pin_err(pin_dir, name))?;
    }
    Ok((Attachment::Attached, logger))
}

/// Remove every pin: links detach, programs unload, maps are freed once no process holds
/// them. Agents connect unenforced afterwards: this is the deliberate off switch.
pub fn cleanup(pin_dir: &Path) -> Result<(), KernelError> {
    if !pin_dir.exists() {
        return Ok(());
    }
    let rd = fs::read_dir(pin_dir).map_err(|source| KernelError::Io {
        path: pin_dir.into(),
        source,
    })?;
    for entry in rd.filter_map(Result::ok) {
        let path = entry.path();
        fs::remove_file(&path).map_err(|source| KernelError::Io { path, source })?;
    }
    fs::remove_dir(pin_dir).map_err(|source| KernelError::Io {
        path: pin_dir.into(),
        source,
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(KernelError::MissingProgram { name })?
        .try_into()
        .map_err(perr(name))
}

fn pin(pin_dir: &Path, name: &'static str, link: FdLink) -> Result<(), KernelError> {
    // Dropping the PinnedLink closes our fd; the pin keeps the link attached.
    link.pin(link_pin(pin_dir, name))
        .map(drop)
        .map_err(pin_err(pin_dir, name))
}

fn perr(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
}

fn lerr(name: &'static str) -> impl FnOnce(aya::programs::links::LinkError) -> KernelError {
    move |e| KernelError::Pin {
        path: PathBuf::from(name),
        message: e.to_string(),
    }
}

fn pin_err<'a>(
    pin_dir: &'a Path,
    name: &'a str,
) -> impl FnOnce(aya::pin::PinError) -> KernelError + 'a {
    move |e| KernelError::Pin {
        path: pin_dir.join(name),
        message: e.to_string(),
    }
}
