//! Who may use the admin socket: root and members of the `enforcer-admin` group. The peer's
//! uid and gid come from the kernel (SO_PEERCRED), never from the request.

use nix::unistd::{Gid, Group, Uid, User};

pub const ADMIN_GROUP: &str = "enforcer-admin";

/// The verified identity of a control-socket peer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub user: String,
}

impl Peer {
    pub fn new(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        Self {
            uid,
            gid,
            pid,
            user: crate::identity::user_name(uid),
        }
    }
}

/// Root, or a member (primary or supplementary) of the admin group.
pub fn is_admin(peer: &Peer) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Ok(Some(group)) = Group::from_name(ADMIN_GROUP) else {
        return false;
    };
    if peer.gid == group.gid.as_raw() {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) else {
        return false;
    };
    group.mem.contains(&user.name)
        || nix::unistd::getgrouplist(
            &std::ffi::CString::new(user.name.as_str()).unwrap_or_default(),
            user.gid,
        )
        .is_ok_and(|gs| gs.contains(&Gid::from_raw(group.gid.as_raw())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_and_nobody_is_not() {
        assert!(is_admin(&Peer::new(0, 0, None)));
        // nobody is not in enforcer-admin (the group does not even exist on test hosts).
        assert!(!is_admin(&Peer::new(65534, 65534, None)));
    }
}
