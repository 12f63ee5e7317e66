//! Opening a Modbus connection over any of the three transports, behind one client type.
//!
//! tokio-modbus is generic over the byte stream, so TCP, RTU on a serial line and RTU over a
//! TCP socket all give the same [`Context`]; the bus task never knows which one it holds.

use std::time::Duration;

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
    let slave = Slave(unit);
    match transport {
        Transport::Tcp { address } => {
            let stream = connect_tcp(address, timeout).await?;
            Ok(tcp::attach_slave(stream, slave))
        }
        Transport::RtuOverTcp { address } => {
            let stream = connect_tcp(address, timeout).await?;
            Ok(rtu::attach_slave(stream, slave))
        }
        Transport::Rtu(line) => {
            let port = open_serial(line)?;
            Ok(rtu::attach_slave(port, slave))
        }
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
