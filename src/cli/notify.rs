//! systemd's readiness protocol (sd_notify(3)) without libsystemd: datagrams of `KEY=VALUE`
//! lines to the socket in `$NOTIFY_SOCKET`. Outside systemd (no variable) every call does
//! nothing. Used for `Type=notify`: READY=1 once the gateway runs, RELOADING=1 / READY=1
//! around a reload, STOPPING=1 at shutdown, WATCHDOG=1 while the core answers.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd in containers).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

pub fn ready() {
    send("READY=1\nSTATUS=running");
}

/// A reload starts; [`ready`] ends it. (Debian 12's systemd 252 has no `Type=notify-reload`:
/// the unit's `ExecReload` sends SIGHUP, and these two frame the reload for `systemctl status`.)
pub fn reloading() {
    send("RELOADING=1\nSTATUS=reloading");
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: flushing");
}

pub fn watchdog() {
    send("WATCHDOG=1");
}

/// Half the watchdog period systemd asks for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
