//! The proxy's threads: one per CPU (or `proxy.worker_threads`), each with its own
//! single-threaded runtime and its own listening socket on the proxy address
//! (`SO_REUSEPORT`: the kernel spreads new connections over them).
//!
//! Why not one multi-threaded runtime: every call crosses several tasks (the agent's
//! connection, the upstream connection, the audit append), and under work stealing each hop
//! may wake another thread: a futex wake and a context switch per hop, measured as the
//! largest single cost of a proxied call. Here a connection and everything it spawns (its
//! HTTP/2 streams, its upstream connections) stay on the thread that accepted it.

use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use tracing::error;

use super::ProxyContext;

/// Accept-queue depth of each listener (capped by net.core.somaxconn): a burst of agent
/// connects must not overflow it, since every dropped SYN costs the agent a one-second
/// retransmit.
const LISTEN_BACKLOG: i32 = 4096;

/// How many proxy threads `configured` asks for (0 = one per CPU).
pub fn count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// `n` listening sockets on `addr` in one `SO_REUSEPORT` group (the first binds; if the
/// address is taken by another process, that one fails with a clear error).
pub fn bind(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use nix::sys::socket::{
        bind as nix_bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
        SockType, SockaddrStorage,
    };
    (0..n.max(1))
        .map(|_| {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(
                family,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            setsockopt(&fd, sockopt::ReusePort, &true)?;
            if addr.is_ipv6() {
                setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            }
            nix_bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &SockaddrStorage::from(addr),
            )?;
            listen(
                &fd,
                Backlog::new(LISTEN_BACKLOG).unwrap_or(Backlog::MAXCONN),
            )?;
            Ok(std::net::TcpListener::from(fd))
        })
        .collect::<Result<Vec<_>, nix::Error>>()
        .map_err(std::io::Error::from)
}

/// Starts one thread per element of `groups[i]` (every group has the same length: one
/// listener per thread and address), each serving its listeners until the process exits.
pub fn start(
    per_thread: Vec<Vec<std::net::TcpListener>>,
    ctx: Arc<ProxyContext>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    per_thread
        .into_iter()
        .enumerate()
        .map(|(i, listeners)| {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{i}"))
                .spawn(move || run(listeners, ctx))
        })
        .collect()
}

fn run(listeners: Vec<std::net::TcpListener>, ctx: Arc<ProxyContext>) {
    // The receipts of a turn of this thread's event loop are written together when it has
    // nothing else to run (see `audit::turn`).
    crate::audit::turn::enable_on_this_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::audit::turn::flush_this_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "a proxy thread could not start its runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let mut serving = Vec::new();
        for l in listeners {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => serving.push(tokio::spawn(super::serve(l, ctx.clone()))),
                Err(e) => error!(error = %e, "a proxy listener could not be registered"),
            }
        }
        for s in serving {
            let _ = s.await;
        }
    });
}
