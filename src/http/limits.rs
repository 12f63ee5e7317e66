//! The HTTP listener's limits: a cap on connections served at once, and an idle timeout on each
//! (a connection that sends nothing for `idle_timeout` — slow headers, a parked keep-alive — is
//! closed). 1,100 idle sockets once took every file descriptor of the process, stopping Modbus
//! reconnects and `/healthz`. With the cap, a connection past it is accepted and closed at once
//! (it costs one descriptor for a moment), so the backlog never fills with idle sockets and a
//! monitor retrying `/healthz` gets in as soon as an idle connection times out.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A TCP listener that accepts a connection only while fewer than `max` are open.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
    /// When an accept error (EMFILE…) or a shed connection was last logged, so a storm logs
    /// once a minute.
    last_error_log: Option<Instant>,
    /// Connections closed at once because `max` were open.
    shed: u64,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle,
            last_error_log: None,
            shed: 0,
        }
    }

    fn log_once_a_minute(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if due {
            self.last_error_log = Some(now);
        }
        due
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let _ = stream.set_nodelay(true);
                        return (LimitedIo::new(stream, permit, self.idle), addr);
                    }
                    Err(_) => {
                        // Full: close it now rather than let it wait holding a descriptor.
                        drop(stream);
                        self.shed += 1;
                        if self.log_once_a_minute() {
                            tracing::warn!(
                                shed = self.shed,
                                "HTTP connection limit ([http].max_connections) reached: closing new connections"
                            );
                        }
                    }
                },
                Err(e) => {
                    if self.log_once_a_minute() {
                        tracing::warn!(error = %e, "HTTP accept failed (out of descriptors?); waiting");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slot, closed when it has been idle too long.
pub struct LimitedIo {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl LimitedIo {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP connection idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files to the hard limit the box allows (Debian's default soft
/// limit is 1,024), once at start. Returns (before, after).
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let mut raised = lim;
            raised.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        Some((before, lim.rlim_cur))
    }
}
