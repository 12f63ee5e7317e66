//! Simulated Modbus devices, served over Modbus TCP on loopback, for `dustgate demo`.
//!
//! A [`Bank`] holds the registers of several units behind one server, like a serial server
//! with an RS-485 bus behind it. Values are set through the device's own profile, so the
//! gateway reads them back through exactly the code that reads a real device. Tests use
//! pymodbus, a simulator we did not write; this one is for the demo only.

pub mod hj212_monitor;
pub mod scenario;
pub mod story;

use std::collections::BTreeMap;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::config::profile::Register;
use crate::sources::modbus::registers::{Table, ValueType, encode};

/// The data tables of one simulated unit.
#[derive(Debug, Default, Clone)]
pub struct Regs {
    pub words: BTreeMap<(Table, u16), u16>,
    pub bits: BTreeMap<(Table, u16), bool>,
}

/// The units behind one simulated server.
#[derive(Debug, Default)]
pub struct Bank {
    units: Mutex<BTreeMap<u8, Regs>>,
    /// Units taken off the bus: they do not answer (the story's sensor outage).
    silent: Mutex<std::collections::BTreeSet<u8>>,
}

impl Bank {
    fn units(&self) -> std::sync::MutexGuard<'_, BTreeMap<u8, Regs>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a unit off the bus (it stops answering) or puts it back.
    pub fn set_silent(&self, unit: u8, silent: bool) {
        let mut s = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        if silent {
            s.insert(unit);
        } else {
            s.remove(&unit);
        }
    }

    fn is_silent(&self, unit: u8) -> bool {
        self.silent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&unit)
    }

    /// Stores `value` in the register of `unit` as its profile describes it.
    pub fn set(&self, unit: u8, reg: &Register, value: f64) {
        let raw = (value - reg.offset) / reg.scale;
        let raw = match reg.ty {
            ValueType::F32 | ValueType::F64 => raw,
            _ => raw.round(),
        };
        let mut units = self.units();
        let regs = units.entry(unit).or_default();
        if reg.table.is_bits() {
            regs.bits.insert((reg.table, reg.address), raw != 0.0);
        } else {
            for (i, w) in encode(raw, reg.ty, reg.order).into_iter().enumerate() {
                regs.words.insert((reg.table, reg.address + i as u16), w);
            }
        }
    }

    /// Reads back a bit (for coils the gateway may write).
    pub fn bit(&self, unit: u8, table: Table, address: u16) -> Option<bool> {
        self.units()
            .get(&unit)
            .and_then(|r| r.bits.get(&(table, address)).copied())
    }

    /// Reads `count` values of one table; an address the unit does not have is exception 2.
    fn read<T: Copy>(
        &self,
        unit: u8,
        map: impl Fn(&Regs) -> &BTreeMap<(Table, u16), T>,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Vec<T>, ExceptionCode> {
        let units = self.units();
        let regs = units.get(&unit).ok_or(ExceptionCode::GatewayTargetDevice)?;
        (0..count)
            .map(|i| {
                let a = start
                    .checked_add(i)
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                map(regs)
                    .get(&(table, a))
                    .copied()
                    .ok_or(ExceptionCode::IllegalDataAddress)
            })
            .collect()
    }

    /// Writes values of one table; only addresses the unit has can be written.
    fn write<T: Copy>(
        &self,
        unit: u8,
        map: impl Fn(&mut Regs) -> &mut BTreeMap<(Table, u16), T>,
        table: Table,
        start: u16,
        values: &[T],
    ) -> Result<(), ExceptionCode> {
        let mut units = self.units();
        let regs = units
            .get_mut(&unit)
            .ok_or(ExceptionCode::GatewayTargetDevice)?;
        let m = map(regs);
        for (i, v) in values.iter().enumerate() {
            let a = start
                .checked_add(i as u16)
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            *m.get_mut(&(table, a))
                .ok_or(ExceptionCode::IllegalDataAddress)? = *v;
        }
        Ok(())
    }

    fn answer(&self, unit: u8, req: Request<'_>) -> Result<Response, ExceptionCode> {
        Ok(match req {
            Request::ReadHoldingRegisters(a, n) => Response::ReadHoldingRegisters(self.read(
                unit,
                |r| &r.words,
                Table::Holding,
                a,
                n,
            )?),
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(self.read(unit, |r| &r.words, Table::Input, a, n)?)
            }
            Request::ReadCoils(a, n) => {
                Response::ReadCoils(self.read(unit, |r| &r.bits, Table::Coil, a, n)?)
            }
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(self.read(unit, |r| &r.bits, Table::Discrete, a, n)?)
            }
            Request::WriteSingleCoil(a, v) => {
                self.write(unit, |r| &mut r.bits, Table::Coil, a, &[v])?;
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteMultipleCoils(a, v) => {
                self.write(unit, |r| &mut r.bits, Table::Coil, a, &v)?;
                Response::WriteMultipleCoils(a, v.len() as u16)
            }
            Request::WriteSingleRegister(a, v) => {
                self.write(unit, |r| &mut r.words, Table::Holding, a, &[v])?;
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleRegisters(a, v) => {
                self.write(unit, |r| &mut r.words, Table::Holding, a, &v)?;
                Response::WriteMultipleRegisters(a, v.len() as u16)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        })
    }
}

struct BankService(Arc<Bank>);

impl Service for BankService {
    type Request = SlaveRequest<'static>;
    /// `None`: a unit that is not on the bus stays silent, as on a real RS-485 line.
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let known = self.0.units().contains_key(&req.slave);
        if !known || self.0.is_silent(req.slave) {
            return ready(Ok(None));
        }
        ready(self.0.answer(req.slave, req.request).map(Some))
    }
}

/// Serves the bank on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, bank: Arc<Bank>) -> std::io::Result<()> {
    let server = Server::new(listener);
    let on_connected = |stream, addr: SocketAddr| {
        let bank = bank.clone();
        async move { accept_tcp_connection(stream, addr, |_| Ok(Some(BankService(bank.clone())))) }
    };
    server
        .serve(
            &on_connected,
            |e| tracing::debug!(error = %e, "simulator connection ended"),
        )
        .await
}
