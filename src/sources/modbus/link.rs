//! Opening a Modbus connection over any of the three transports, behind one client type.
//!
//! tokio-modbus is generic over the byte stream, so TCP, RTU on a serial line and RTU over a
//! TCP socket all give the same [`Context`]; the bus task never knows which one it holds.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context, rtu, tcp};
use tokio_modbus::slave::Slave;
use tokio_serial::{ClearBuffer, DataBits, SerialPort, SerialStream, StopBits};

use crate::config::{Parity, SerialLine, Transport};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connect to {target} timed out after {timeout:?}")]
    ConnectTimeout { target: String, timeout: Duration },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("cannot open serial port {path}: {source}")]
    Serial {
        path: String,
        source: tokio_serial::Error,
    },
}

/// Opens a connection; `unit` is the first device addressed (changed per request later).
pub async fn open(
    transport: &Transport,
    unit: u8,
    timeout: Duration,
) -> Result<Context, LinkError> {
    open_counted(transport, unit, timeout).await.map(|(c, _)| c)
}

/// Opens a connection, and gives the count of stale bytes discarded on it. Over RTU (no
/// transaction id) the byte stream is wrapped in [`Draining`]: whatever is pending on the
/// connection when a request goes out (a duplicated or late reply) is read and discarded
/// first, so it cannot be taken for the answer.
pub async fn open_counted(
    transport: &Transport,
    unit: u8,
    timeout: Duration,
) -> Result<(Context, Arc<Drained>), LinkError> {
    let slave = Slave(unit);
    let drained = Arc::new(Drained::default());
    let ctx = match transport {
        Transport::Tcp { address } => {
            let stream = connect_tcp(address, timeout).await?;
            tcp::attach_slave(stream, slave)
        }
        Transport::RtuOverTcp { address } => {
            let stream = connect_tcp(address, timeout).await?;
            rtu::attach_slave(Draining::new(stream, drained.clone()), slave)
        }
        Transport::Rtu(line) => {
            let port = open_serial(line)?;
            rtu::attach_slave(Draining::new(port, drained.clone()), slave)
        }
    };
    Ok((ctx, drained))
}

/// Stale bytes discarded on one connection, read by the bus task after each request.
#[derive(Debug, Default)]
pub struct Drained {
    /// Bytes discarded.
    pub bytes: AtomicU64,
    /// Requests before which something was discarded.
    pub times: AtomicU64,
}

/// Most bytes discarded before one request; more is a flooding peer, and the request fails
/// (a link error: the connection is dropped).
pub const DRAIN_LIMIT: usize = 64 * 1024;

/// A byte stream that, before each write, reads and discards what is already readable.
///
/// In a request/response protocol nothing may be pending when a request goes out: anything
/// that is, is a reply to an earlier request (sent twice by a serial server, or late). Reading
/// it only as far as the stream has it now (until the read would block) never waits.
#[derive(Debug)]
pub struct Draining<T> {
    inner: T,
    drained: Arc<Drained>,
}

impl<T> Draining<T> {
    pub fn new(inner: T, drained: Arc<Drained>) -> Self {
        Self { inner, drained }
    }
}

impl<T: AsyncRead + Unpin> Draining<T> {
    /// Reads and discards until the stream has nothing more right now, or it ends.
    fn drain(&mut self, cx: &mut TaskContext<'_>) -> std::io::Result<()> {
        // Large enough that a drain is a read or two: tokio's cooperative budget can make a
        // long run of reads return Pending early (what is left then is still refused: a reply
        // must match its request in unit, function and length, else the link is reset).
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        loop {
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => break, // end of stream
                Poll::Ready(Ok(())) => {
                    total += rb.filled().len();
                    if total > DRAIN_LIMIT {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("more than {DRAIN_LIMIT} unrequested bytes pending"),
                        ));
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if total > 0 {
            self.drained.bytes.fetch_add(total as u64, Relaxed);
            self.drained.times.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Draining<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Draining<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // A request may take several writes; no reply can be due between them, so draining
        // before each is draining before the request.
        if let Err(e) = self.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect_tcp(address: &str, timeout: Duration) -> Result<TcpStream, LinkError> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => Err(LinkError::ConnectTimeout {
            target: address.to_string(),
            timeout,
        }),
        Ok(Err(source)) => Err(LinkError::Connect {
            target: address.to_string(),
            source,
        }),
        Ok(Ok(s)) => {
            // Requests are small and latency matters more than packing.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

fn open_serial(line: &SerialLine) -> Result<SerialStream, LinkError> {
    let builder = tokio_serial::new(&line.path, line.baud)
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if line.data_bits == 7 {
            DataBits::Seven
        } else {
            DataBits::Eight
        })
        .stop_bits(if line.stop_bits == 2 {
            StopBits::Two
        } else {
            StopBits::One
        });
    let port = SerialStream::open(&builder).map_err(|source| LinkError::Serial {
        path: line.path.clone(),
        source,
    })?;
    // A late reply to a request that timed out may still sit in the buffers: drop it, so it
    // cannot be taken for the answer to the next request.
    let _ = port.clear(ClearBuffer::All);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn what_is_pending_before_a_write_is_discarded_and_counted() {
        let (near, mut far) = tokio::io::duplex(1024);
        let drained = Arc::new(Drained::default());
        let mut link = Draining::new(near, drained.clone());

        // A fresh link: nothing pending, nothing counted.
        link.write_all(b"req1").await.unwrap();
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"req1");
        assert_eq!(drained.times.load(Relaxed), 0);

        // The reply, read; then its copy arrives before the next request.
        far.write_all(b"reply1").await.unwrap();
        let mut reply = [0u8; 6];
        link.read_exact(&mut reply).await.unwrap();
        far.write_all(b"reply1").await.unwrap();
        tokio::task::yield_now().await;

        link.write_all(b"req2").await.unwrap();
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"req2");
        assert_eq!(drained.bytes.load(Relaxed), 6);
        assert_eq!(drained.times.load(Relaxed), 1);

        // Only the answer to req2 is read now.
        far.write_all(b"reply2").await.unwrap();
        link.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply2");
    }

    #[tokio::test]
    async fn a_flood_of_unrequested_bytes_fails_the_write() {
        let (near, mut far) = tokio::io::duplex(4 * DRAIN_LIMIT);
        let mut link = Draining::new(near, Arc::new(Drained::default()));
        far.write_all(&vec![0u8; DRAIN_LIMIT + 1]).await.unwrap();
        let e = link.write_all(b"req").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
