//! One request on an open connection (a planned read, or a coil write of the linkage), and
//! where a register's value sits in a reply.

use tokio_modbus::client::{Context, Reader, Writer};

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

/// Sends one request (no timeout here: the caller bounds it). A write answers with no data.
pub async fn run(ctx: &mut Context, op: &Op) -> tokio_modbus::Result<Data> {
    match op {
        Op::Read(r) => read(ctx, *r).await,
        Op::WriteCoil { address, on } => ctx
            .write_single_coil(*address, *on)
            .await
            .map(|r| r.map(|()| Data::Bits(Vec::new()))),
        Op::WriteCoils { start, values } => ctx
            .write_multiple_coils(*start, values)
            .await
            .map(|r| r.map(|()| Data::Bits(Vec::new()))),
    }
}

/// Sends one read (no timeout here: the caller bounds it).
pub async fn read(ctx: &mut Context, read: Read) -> tokio_modbus::Result<Data> {
    match read.table {
        Table::Holding => ctx
            .read_holding_registers(read.start, read.count)
            .await
            .map(|r| r.map(Data::Words)),
        Table::Input => ctx
            .read_input_registers(read.start, read.count)
            .await
            .map(|r| r.map(Data::Words)),
        Table::Coil => ctx
            .read_coils(read.start, read.count)
            .await
            .map(|r| r.map(Data::Bits)),
        Table::Discrete => ctx
            .read_discrete_inputs(read.start, read.count)
            .await
            .map(|r| r.map(Data::Bits)),
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
