//! One request on an open connection (a planned read, or a coil write of the linkage), and
//! where a register's value sits in a reply.

use tokio_modbus::client::{Client, Context, Writer};
use tokio_modbus::{Request, Response};

use super::planner::Read;
use super::registers::{Table, decode};
use crate::config::profile::Register;

/// The data of one reply: words for register tables, bits for coils and discrete inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Words(w) => w.len(),
            Data::Bits(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Read(Read),
    /// FC05.
    WriteCoil {
        address: u16,
        on: bool,
    },
    /// FC15.
    WriteCoils {
        start: u16,
        values: Vec<bool>,
    },
}

impl Op {
    /// Values a reply must carry (writes carry none).
    pub fn expected(&self) -> usize {
        match self {
            Op::Read(r) => usize::from(r.count),
            _ => 0,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Op::Read(r) => format!(
                "FC{:02} {} {}..+{}",
                r.table.read_function(),
                r.table,
                r.start,
                r.count
            ),
            Op::WriteCoil { address, on } => format!("FC05 coil {address} := {on}"),
            Op::WriteCoils { start, values } => {
                format!("FC15 coils {start}..+{} := {:?}", values.len(), values)
            }
        }
    }
}

/// Why a request came to nothing, short of an exception.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// tokio-modbus' own: I/O, or a reply whose unit or function code does not match.
    #[error(transparent)]
    Modbus(#[from] tokio_modbus::Error),
    /// A well-formed reply that does not fit the request (too many or too few values).
    #[error("{0}")]
    Misfit(String),
}

/// What a request answered: data, or the device's exception.
pub type Answer = Result<Result<Data, tokio_modbus::ExceptionCode>, RequestError>;

/// Sends one request (no timeout here: the caller bounds it). A write answers with no data.
pub async fn run(ctx: &mut Context, op: &Op) -> Answer {
    match op {
        Op::Read(r) => read_checked(ctx, *r).await,
        Op::WriteCoil { address, on } => Ok(ctx
            .write_single_coil(*address, *on)
            .await?
            .map(|()| Data::Bits(Vec::new()))),
        Op::WriteCoils { start, values } => Ok(ctx
            .write_multiple_coils(*start, values)
            .await?
            .map(|()| Data::Bits(Vec::new()))),
    }
}

/// Sends one read (no timeout here: the caller bounds it); a reply that does not fit the
/// request comes back as an `InvalidData` transport error (for `probe`, which prints it).
pub async fn read(ctx: &mut Context, read: Read) -> tokio_modbus::Result<Data> {
    match read_checked(ctx, read).await {
        Ok(answer) => Ok(answer),
        Err(RequestError::Modbus(e)) => Err(e),
        Err(RequestError::Misfit(m)) => Err(tokio_modbus::Error::Transport(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            m,
        ))),
    }
}

/// Sends one read and checks the reply against it. The raw request is used, not
/// tokio-modbus' `Reader` methods: those hand back a register reply of any length (asserting
/// only in debug builds, which panics the bus task) and cut a coil reply to the requested
/// count, so the byte count can no longer be checked.
pub async fn read_checked(ctx: &mut Context, read: Read) -> Answer {
    let request = match read.table {
        Table::Holding => Request::ReadHoldingRegisters(read.start, read.count),
        Table::Input => Request::ReadInputRegisters(read.start, read.count),
        Table::Coil => Request::ReadCoils(read.start, read.count),
        Table::Discrete => Request::ReadDiscreteInputs(read.start, read.count),
    };
    match Client::call(ctx, request).await? {
        Err(exception) => Ok(Err(exception)),
        Ok(response) => fit(read, response).map(Ok).map_err(RequestError::Misfit),
    }
}

/// The data of a reply to `read`, if it is exactly what was asked: as many registers as
/// requested, or for bits the byte count that goes with the bit count (`ceil(count / 8)`
/// bytes; the padding bits are dropped). Anything else is refused: taken as is, a longer
/// register reply shifts every value after the surplus.
pub fn fit(read: Read, response: Response) -> Result<Data, String> {
    let what = || {
        format!(
            "FC{:02} {} {}..+{}",
            read.table.read_function(),
            read.table,
            read.start,
            read.count
        )
    };
    let count = usize::from(read.count);
    match (read.table, response) {
        (Table::Holding, Response::ReadHoldingRegisters(words))
        | (Table::Input, Response::ReadInputRegisters(words)) => {
            if words.len() == count {
                Ok(Data::Words(words))
            } else {
                Err(format!(
                    "reply carries {} registers for {} requested ({})",
                    words.len(),
                    count,
                    what()
                ))
            }
        }
        (Table::Coil, Response::ReadCoils(mut bits))
        | (Table::Discrete, Response::ReadDiscreteInputs(mut bits)) => {
            // tokio-modbus unpacks every byte of the reply: 8 bits a byte.
            let bytes = bits.len() / 8;
            if bytes == count.div_ceil(8) {
                bits.truncate(count);
                Ok(Data::Bits(bits))
            } else {
                Err(format!(
                    "reply carries {} bytes for {} bits requested ({} bytes expected, {})",
                    bytes,
                    count,
                    count.div_ceil(8),
                    what()
                ))
            }
        }
        (_, other) => Err(format!(
            "reply to {} is a {:?} reply",
            what(),
            other.function_code()
        )),
    }
}

/// The value of `reg` found at `offset` in a reply, scaled; NaN if the reply is too short.
pub fn value_of(reg: &Register, data: &Data, offset: usize) -> f64 {
    let raw = match data {
        Data::Words(w) => w
            .get(offset..)
            .map_or(f64::NAN, |w| decode(w, reg.ty, reg.order, reg.bit)),
        Data::Bits(b) => b
            .get(offset)
            .map_or(f64::NAN, |&on| if on { 1.0 } else { 0.0 }),
    };
    reg.apply_scale(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(table: Table, count: u16) -> Read {
        Read {
            table,
            start: 10,
            count,
        }
    }

    #[test]
    fn a_register_reply_must_carry_exactly_the_requested_count() {
        let ok = fit(
            rd(Table::Holding, 2),
            Response::ReadHoldingRegisters(vec![1, 2]),
        );
        assert_eq!(ok, Ok(Data::Words(vec![1, 2])));
        let long = fit(
            rd(Table::Holding, 2),
            Response::ReadHoldingRegisters(vec![9, 9, 1, 2]),
        )
        .unwrap_err();
        assert!(long.contains("4 registers for 2 requested"), "{long}");
        assert!(fit(rd(Table::Input, 2), Response::ReadInputRegisters(vec![1])).is_err());
        // A reply of another table is no answer to this read.
        assert!(
            fit(
                rd(Table::Input, 2),
                Response::ReadHoldingRegisters(vec![1, 2])
            )
            .is_err()
        );
    }

    #[test]
    fn a_bit_reply_must_carry_the_byte_count_of_its_bit_count() {
        // 10 coils: 2 bytes; tokio-modbus unpacks them into 16 bits, the padding is dropped.
        let mut two_bytes = vec![true; 10];
        two_bytes.extend([false; 6]);
        assert_eq!(
            fit(rd(Table::Coil, 10), Response::ReadCoils(two_bytes)),
            Ok(Data::Bits(vec![true; 10]))
        );
        let three_bytes = vec![true; 24];
        let e = fit(rd(Table::Coil, 10), Response::ReadCoils(three_bytes)).unwrap_err();
        assert!(e.contains("3 bytes for 10 bits"), "{e}");
        assert!(
            fit(
                rd(Table::Discrete, 9),
                Response::ReadDiscreteInputs(vec![true; 8])
            )
            .is_err()
        );
        assert_eq!(
            fit(
                rd(Table::Discrete, 8),
                Response::ReadDiscreteInputs(vec![false; 8])
            ),
            Ok(Data::Bits(vec![false; 8]))
        );
    }
}
