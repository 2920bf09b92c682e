//! systemd integration (Type=notify): READY when enforcement is in force and the proxy and
//! admin socket serve, RELOADING/READY around a reload, STOPPING at exit, STATUS lines an
//! operator sees in `systemctl status`, watchdog keep-alives, and the admin socket handed
//! over by `enforcer.socket`. Every call is a no-op outside systemd (no NOTIFY_SOCKET).

use std::os::fd::FromRawFd as _;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notification not sent");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (systemd 253+ wants the monotonic time with it).
pub fn reloading() {
    send(&[
        NotifyState::Reloading,
        NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
        NotifyState::Status("reloading the configuration and policy"),
    ]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; kernel enforcement stays in force"),
    ]);
}

/// Keep-alives at half the watchdog period, from the runtime the proxy runs on: if it
/// wedges, systemd notices and restarts the daemon (kernel enforcement stays meanwhile).
pub fn spawn_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled().filter(|p| !p.is_zero()) else {
        return;
    };
    let every = period / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

/// The admin socket passed by systemd socket activation (`enforcer.socket`), if any.
pub fn activated_admin_socket() -> Option<std::os::unix::net::UnixListener> {
    let mut fds = sd_notify::listen_fds().ok()?;
    let fd = fds.next()?;
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID is ours) and nothing else
    // owns it; it is a listening AF_UNIX stream socket per enforcer.socket.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}
