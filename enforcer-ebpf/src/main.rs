//! The enforcer's kernel programs, attached once to the agents' cgroup subtree.
//!
//! - `redirect`: connect4/6 send every agent TCP connect to the proxy and record who and where;
//!   sendmsg4/6 and UDP connects allow only DNS to configured resolvers.
//! - `track`: sock_ops indexes each redirected flow by its 4-tuple for the proxy, and keeps
//!   every live agent socket by cookie for the kill and the impact preview.
//! - `refuse`: revocation checks, socket-type refusals and the cgroup_skb egress backstop.
#![no_std]
#![no_main]

mod ctx;
mod maps;
mod redirect;
mod refuse;
mod track;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
