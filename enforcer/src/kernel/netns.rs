//! Network namespaces: SOCK_DESTROY acts only in the caller's namespace, so the kill opens its
//! netlink socket inside the target's. setns affects one thread: it is done on a short-lived
//! thread, and the socket keeps its namespace after the thread ends.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::PathBuf,
};

use nix::sched::{setns, CloneFlags};

/// A network namespace, identified by its nsfs inode.
pub struct Netns {
    pub inode: u64,
    pub file: File,
    pub source: PathBuf,
}

/// Open the network namespace of `pid` (None if the process is gone).
pub fn of_pid(pid: i32) -> Option<Netns> {
    let source = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let file = File::open(&source).ok()?;
    let inode = file.metadata().ok()?.ino();
    Some(Netns {
        inode,
        file,
        source,
    })
}

/// The namespaces of `pids` (plus our own), one per distinct namespace.
pub fn distinct(pids: impl IntoIterator<Item = i32>) -> Vec<Netns> {
    let mut seen = BTreeMap::new();
    for ns in std::iter::once(of_pid(std::process::id() as i32))
        .chain(pids.into_iter().map(of_pid))
        .flatten()
    {
        seen.entry(ns.inode).or_insert(ns);
    }
    seen.into_values().collect()
}

/// Create a socket inside `ns` with `make`, from a thread that enters the namespace.
pub fn socket_in(
    ns: &Netns,
    make: impl FnOnce() -> std::io::Result<OwnedFd> + Send + 'static,
) -> std::io::Result<OwnedFd> {
    let fd = ns.file.try_clone()?;
    std::thread::spawn(move || {
        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        make()
    })
    .join()
    .map_err(|_| std::io::Error::other("netns thread panicked"))?
}
