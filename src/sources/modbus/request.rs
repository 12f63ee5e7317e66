//! One read request on an open connection, and where a register's value sits in its reply.

use tokio_modbus::client::{Context, Reader};

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
