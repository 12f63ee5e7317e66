//! The owner task of one bus: the only code that talks on it, one request in flight.
//!
//! Devices are polled on their own intervals, starts staggered. After any timeout, transport or
//! protocol error the connection is thrown away and reopened before the next request:
//! tokio-modbus may otherwise hand a late reply to the next request, and over RTU (no
//! transaction id) silently as valid data (rust-crates.md §1.1). A device that fails backs off
//! exponentially, so a dead device costs its bus one timeout per backoff period, not one per
//! interval, and the other devices keep their cadence.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_modbus::client::Context;
use tokio_modbus::slave::{Slave, SlaveContext};
use tracing::{debug, info, warn};

use super::link;
use super::planner::{self, Plan, Read};
use super::registers::Table;
use super::request::{self, Data, Op};
use crate::backoff::Backoff;
use crate::config::{BusConfig, DeviceConfig};
use crate::health::{DeviceHealth, DeviceState, Health};
use crate::model::{DeviceMeta, Readings, now_ms};
use crate::pipeline::{CoilWrite, Pipeline};

/// Longest pause between attempts on a failing device (or its interval, if longer).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A device as its bus task sees it.
struct Device {
    cfg: DeviceConfig,
    meta: Arc<DeviceMeta>,
    plan: Plan,
    /// Per read, the registers (slot indices) whose data it carries.
    slots_by_read: Vec<Vec<usize>>,
    next_due: Instant,
    /// Failed polls in a row (for `down_after`).
    failures: u32,
    /// The pause after a failed poll: its interval doubling, see [`device_backoff`].
    backoff: Backoff,
    health: Arc<DeviceHealth>,
    last_problem: Option<String>,
}

/// What one poll of a device came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every read answered with data.
    Ok,
    /// The device answered, but refused some reads (exceptions): counted, not a link fault.
    Partial,
    /// No answer, or a broken link: the device backs off.
    Failed,
}

pub struct BusTask {
    cfg: BusConfig,
    devices: Vec<Device>,
    conn: Option<Context>,
    last_exchange: Option<Instant>,
    pipeline: Arc<Pipeline>,
    /// Coil writes of the linkage, carried out between polls.
    commands: Option<mpsc::UnboundedReceiver<CoilWrite>>,
}

impl BusTask {
    pub fn new(
        cfg: BusConfig,
        site_id: &str,
        site_tags: &[(String, String)],
        health: &Health,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        let start = Instant::now();
        let n = cfg.devices.len().max(1) as u32;
        let devices = cfg
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut tags = site_tags.to_vec();
                tags.extend(d.tags.iter().cloned());
                let metrics: Vec<(&str, &str)> = d
                    .profile
                    .registers
                    .iter()
                    .map(|r| (r.metric.as_str(), r.measurement.as_str()))
                    .collect();
                let meta = Arc::new(DeviceMeta::new(&d.id, site_id, &tags, &metrics));
                let spans: Vec<_> = d.profile.registers.iter().map(|r| r.span()).collect();
                let plan = planner::plan(&spans, &d.limits);
                let mut slots_by_read = vec![Vec::new(); plan.reads.len()];
                for (slot, loc) in plan.locations.iter().enumerate() {
                    slots_by_read[loc.read].push(slot);
                }
                let dh = Arc::new(DeviceHealth::new(&d.id, &cfg.name));
                health.add_device(dh.clone());
                // Stagger first polls across the interval so devices do not all fire at once.
                let offset =
                    crate::clock::real(d.interval).mul_f64(f64::from(i as u32) / f64::from(n));
                Device {
                    cfg: d.clone(),
                    meta,
                    plan,
                    slots_by_read,
                    next_due: start + offset,
                    failures: 0,
                    backoff: device_backoff(crate::clock::real(d.interval)),
                    health: dh,
                    last_problem: None,
                }
            })
            .collect();
        Self {
            cfg,
            devices,
            conn: None,
            last_exchange: None,
            pipeline,
            commands: None,
        }
    }

    /// Carries out the linkage's coil writes for devices on this bus.
    pub fn with_commands(mut self, rx: mpsc::UnboundedReceiver<CoilWrite>) -> Self {
        self.commands = Some(rx);
        self
    }

    /// Polls until shutdown is signalled.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if self.devices.is_empty() {
            return;
        }
        info!(bus = %self.cfg.name, link = %self.cfg.transport.describe(), devices = self.devices.len(), "bus started");
        loop {
            let Some(idx) = (0..self.devices.len()).min_by_key(|&i| self.devices[i].next_due)
            else {
                return;
            };
            let due = self.devices[idx].next_due;
            let command = async {
                match self.commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            // A write waits for the request in flight, then goes before the next poll.
            tokio::select! {
                biased;
                Some(w) = command => {
                    self.write_coils(w).await;
                    continue;
                }
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
            // A poll in progress is finished (it is bounded by its timeouts), so what it read
            // is delivered and the counters match what was sent.
            self.poll(idx).await;
        }
        self.conn = None;
        info!(bus = %self.cfg.name, "bus stopped");
    }

    /// Polls one device, hands its readings to the pipeline, reschedules it.
    async fn poll(&mut self, idx: usize) {
        let time_ms = now_ms();
        let nslots = self.devices[idx].meta.slots.len();
        let mut values: Vec<Option<f64>> = vec![None; nslots];
        let mut outcome = Outcome::Ok;
        let mut problem: Option<String> = None;

        for read_idx in 0..self.devices[idx].plan.reads.len() {
            let read = self.devices[idx].plan.reads[read_idx];
            match self.exchange(idx, &Op::Read(read)).await {
                Ok(Ok(data)) => {
                    self.decode_into(idx, read_idx, &data, &mut values);
                }
                Ok(Err(exception)) => {
                    self.devices[idx].health.exceptions.fetch_add(1, Relaxed);
                    problem = Some(format!(
                        "exception {exception} on FC{:02} {} {}..+{}",
                        read.table.read_function(),
                        read.table,
                        read.start,
                        read.count
                    ));
                    outcome = Outcome::Partial;
                }
                Err(e) => {
                    problem = Some(e);
                    outcome = Outcome::Failed;
                    break;
                }
            }
        }
        // Exceptions on every read: the device is alive but gave nothing.
        if outcome == Outcome::Partial && values.iter().all(Option::is_none) {
            self.devices[idx].health.poll_errors.fetch_add(1, Relaxed);
        }
        self.finish_poll(idx, &outcome, problem);

        if values.iter().any(Option::is_some) {
            let readings = Readings {
                device: self.devices[idx].meta.clone(),
                time_ms,
                values,
            };
            self.pipeline.readings(&readings);
        }
    }

    /// One request on the bus, with reconnect, pacing and timeout. The outer error is a link
    /// fault (connection already dropped); the inner one a Modbus exception.
    async fn exchange(
        &mut self,
        idx: usize,
        op: &Op,
    ) -> Result<Result<Data, tokio_modbus::ExceptionCode>, String> {
        let unit = self.devices[idx].cfg.unit;
        let timeout = self.cfg.timeout;
        if let Some(last) = self.last_exchange {
            tokio::time::sleep_until(last + self.cfg.request_gap).await;
        }
        if self.conn.is_none() {
            match link::open(&self.cfg.transport, unit, timeout).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.last_exchange = Some(Instant::now());
                    return Err(e.to_string());
                }
            }
        }
        let Some(ctx) = self.conn.as_mut() else {
            return Err("no connection".to_string());
        };
        ctx.set_slave(Slave(unit));
        let result = tokio::time::timeout(timeout, request::run(ctx, op)).await;
        self.last_exchange = Some(Instant::now());
        let fault = match result {
            Ok(Ok(Ok(data))) if data.len() >= op.expected() => return Ok(Ok(data)),
            Ok(Ok(Ok(data))) => format!(
                "short reply: {} of {} values for {}",
                data.len(),
                op.expected(),
                op.describe()
            ),
            Ok(Ok(Err(exception))) => return Ok(Err(exception)),
            Ok(Err(e)) => format!("{e}"),
            Err(_) => {
                self.devices[idx].health.timeouts.fetch_add(1, Relaxed);
                format!("no valid reply within {timeout:?}")
            }
        };
        // Never reuse a connection after a fault: a late reply could be read as the next answer.
        self.conn = None;
        Err(fault)
    }

    /// Sets an actuator's coils and reads them back; the pipeline learns what came of it. Only
    /// coils the device's profile marks writable are ever written.
    async fn write_coils(&mut self, w: CoilWrite) {
        let result = self.try_write_coils(&w).await;
        if let Err(e) = &result {
            warn!(bus = %self.cfg.name, device = %w.device, coils = ?w.coils, on = w.switch.on, error = %e, "coil write failed");
        }
        self.pipeline.switched(&w.switch, result);
    }

    async fn try_write_coils(&mut self, w: &CoilWrite) -> Result<Vec<bool>, String> {
        let idx = self
            .devices
            .iter()
            .position(|d| d.cfg.id == w.device)
            .ok_or_else(|| format!("device {} is not on bus {}", w.device, self.cfg.name))?;
        let regs = &self.devices[idx].cfg.profile.registers;
        for a in &w.coils {
            if !regs
                .iter()
                .any(|r| r.table == Table::Coil && r.address == *a && r.writable)
            {
                return Err(format!("coil {a} is not marked writable in the profile"));
            }
        }
        let (Some(&lo), Some(&hi)) = (w.coils.iter().min(), w.coils.iter().max()) else {
            return Err("no coils to write".into());
        };
        let on = w.switch.on;
        let contiguous = usize::from(hi - lo) + 1 == w.coils.len();
        let ops: Vec<Op> = if w.coils.len() == 1 {
            vec![Op::WriteCoil { address: lo, on }]
        } else if contiguous {
            vec![Op::WriteCoils {
                start: lo,
                values: vec![on; w.coils.len()],
            }]
        } else {
            w.coils
                .iter()
                .map(|&address| Op::WriteCoil { address, on })
                .collect()
        };
        for op in &ops {
            match self.exchange(idx, op).await? {
                Ok(_) => {}
                Err(ex) => return Err(format!("exception {ex} on {}", op.describe())),
            }
        }
        let back = Op::Read(Read {
            table: Table::Coil,
            start: lo,
            count: hi - lo + 1,
        });
        match self.exchange(idx, &back).await? {
            Ok(Data::Bits(bits)) => Ok(w
                .coils
                .iter()
                .map(|a| bits.get(usize::from(a - lo)).copied().unwrap_or(false))
                .collect()),
            Ok(Data::Words(_)) => Err("coils read back as registers".into()),
            Err(ex) => Err(format!("exception {ex} reading the coils back")),
        }
    }

    fn decode_into(&self, idx: usize, read_idx: usize, data: &Data, values: &mut [Option<f64>]) {
        let dev = &self.devices[idx];
        for &slot in &dev.slots_by_read[read_idx] {
            let reg = &dev.cfg.profile.registers[slot];
            let offset = usize::from(dev.plan.locations[slot].offset);
            values[slot] = Some(request::value_of(reg, data, offset));
        }
    }

    fn finish_poll(&mut self, idx: usize, outcome: &Outcome, problem: Option<String>) {
        let bus = self.cfg.name.clone();
        let dev = &mut self.devices[idx];
        let now = Instant::now();
        // The interval is a site duration: shorter waits in a demo replay (see `clock`).
        let interval = crate::clock::real(dev.cfg.interval);
        let mut link = None;
        dev.health.polls.fetch_add(1, Relaxed);
        match outcome {
            Outcome::Ok | Outcome::Partial => {
                if dev.failures > 0 || dev.health.state() != DeviceState::Up {
                    info!(bus = %bus, device = %dev.cfg.id, unit = dev.cfg.unit, "device up");
                    link = Some(true);
                }
                dev.failures = 0;
                dev.backoff.reset();
                dev.health.set_state(DeviceState::Up);
                dev.health.last_ok_ms.store(now_ms(), Relaxed);
                let mut next = dev.next_due + interval;
                if next <= now {
                    next = now + interval;
                }
                dev.next_due = next;
            }
            Outcome::Failed => {
                dev.failures += 1;
                dev.health.poll_errors.fetch_add(1, Relaxed);
                if dev.failures >= dev.cfg.down_after && dev.health.state() != DeviceState::Down {
                    warn!(bus = %bus, device = %dev.cfg.id, unit = dev.cfg.unit, failures = dev.failures, "device down");
                    dev.health.set_state(DeviceState::Down);
                    link = Some(false);
                }
                let (initial, cap) = device_backoff_bounds(interval);
                dev.backoff.set_bounds(initial, cap);
                dev.next_due = now + dev.backoff.next_delay();
            }
        }
        match (&problem, &dev.last_problem) {
            (Some(p), Some(last)) if p == last => {
                debug!(bus = %bus, device = %dev.cfg.id, unit = dev.cfg.unit, problem = %p, "poll problem (repeated)");
            }
            (Some(p), _) => {
                warn!(bus = %bus, device = %dev.cfg.id, unit = dev.cfg.unit, problem = %p, "poll problem");
            }
            (None, Some(_)) => {
                info!(bus = %bus, device = %dev.cfg.id, "poll problem cleared");
            }
            (None, None) => {}
        }
        dev.last_problem = problem;
        if let Some(up) = link {
            self.pipeline.device_link(&dev.cfg.id, up);
        }
    }
}

/// The pause after failed polls in a row: the device's interval, doubling, capped at
/// [`MAX_BACKOFF`] (or the interval, if longer); no jitter (the bus is the device's own).
fn device_backoff(interval: Duration) -> Backoff {
    let (initial, cap) = device_backoff_bounds(interval);
    Backoff::new(initial, cap)
}

fn device_backoff_bounds(interval: Duration) -> (Duration, Duration) {
    (interval, MAX_BACKOFF.max(interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs = |interval: u64, failures: usize| {
            let mut b = device_backoff(Duration::from_secs(interval));
            (0..failures)
                .map(|_| b.next_delay().as_secs())
                .last()
                .unwrap_or(0)
        };
        assert_eq!(secs(5, 1), 5);
        assert_eq!(secs(5, 2), 10);
        assert_eq!(secs(5, 4), 40);
        assert_eq!(secs(5, 5), 60);
        assert_eq!(secs(5, 500), 60);
        assert_eq!(secs(300, 3), 300);
    }
}
