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
use super::request::{self, Data, Op, RequestError};
use crate::backoff::Backoff;
use crate::config::{BusConfig, DeviceConfig};
use crate::health::{DeviceHealth, DeviceState, Health};
use crate::model::{DeviceMeta, Readings, now_ms};
use crate::pipeline::CoilWrite;
use crate::sources::ingest::Ingest;

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

/// Why one request on the bus came to nothing. Only an exception leaves the link as it is:
/// the device answered in step; everything else drops the connection (see the module doc).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The device answered with a Modbus exception ("device said no"): alive, refused this.
    #[error("exception {0}")]
    Exception(tokio_modbus::ExceptionCode),
    /// No valid reply in time.
    #[error("no valid reply within {0:?}")]
    Timeout(Duration),
    /// The connection could not be opened.
    #[error(transparent)]
    Open(#[from] link::LinkError),
    /// The link broke under the request ("link broken": I/O on the socket or serial line).
    #[error("link broken: {0}")]
    Link(#[source] std::io::Error),
    /// A reply that does not fit the request: mismatched header or function code, too few
    /// values.
    #[error("{0}")]
    Decode(String),
}

impl PollError {
    /// Whether the connection must be thrown away before the next request: after anything but
    /// an exception, a late or garbled reply could be read as the next answer.
    pub fn reconnects(&self) -> bool {
        !matches!(self, PollError::Exception(_))
    }

    /// Counts it in the device's health: exceptions, timeouts, link faults (opening or I/O)
    /// and replies that did not fit, each apart.
    fn count(&self, h: &DeviceHealth) {
        let counter = match self {
            PollError::Exception(_) => &h.exceptions,
            PollError::Timeout(_) => &h.timeouts,
            PollError::Open(_) | PollError::Link(_) => &h.link_errors,
            PollError::Decode(_) => &h.protocol_errors,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// What a request came to: `None` when it timed out. A reply that does not fit the request
/// (more or fewer values than asked, see [`request::fit`]) is a protocol error: nothing of it
/// is used, and the connection is dropped.
fn request_outcome(
    result: Option<request::Answer>,
    op: &Op,
    timeout: Duration,
) -> Result<Data, PollError> {
    match result {
        Some(Ok(Ok(data))) if data.len() == op.expected() => Ok(data),
        Some(Ok(Ok(data))) => Err(PollError::Decode(format!(
            "reply carries {} values for {} requested ({})",
            data.len(),
            op.expected(),
            op.describe()
        ))),
        Some(Ok(Err(exception))) => Err(PollError::Exception(exception)),
        Some(Err(RequestError::Misfit(m))) => Err(PollError::Decode(m)),
        Some(Err(RequestError::Modbus(tokio_modbus::Error::Transport(e)))) => {
            Err(PollError::Link(e))
        }
        Some(Err(RequestError::Modbus(tokio_modbus::Error::Protocol(e)))) => {
            Err(PollError::Decode(e.to_string()))
        }
        None => Err(PollError::Timeout(timeout)),
    }
}

/// Why a coil write came to nothing.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("device {device} is not on bus {bus}")]
    NotOnBus { device: String, bus: String },
    #[error("coil {0} is not marked writable in the profile")]
    NotWritable(u16),
    #[error("no coils to write")]
    NoCoils,
    #[error("{error} on {op}")]
    Request {
        op: String,
        #[source]
        error: PollError,
    },
    #[error("coils read back as registers")]
    ReadBackWords,
}

pub struct BusTask {
    cfg: BusConfig,
    devices: Vec<Device>,
    conn: Option<Context>,
    /// Stale bytes discarded on `conn` before requests (see [`link::Draining`]): the total
    /// so far, and how many times it happened when last looked at.
    drained: Option<(Arc<link::Drained>, u64)>,
    /// The device of the last exchange: stale bytes found before the next request are most
    /// likely a copy of its reply, and are counted in its health.
    last_device: Option<usize>,
    /// When stale bytes were last logged at warn level (once a minute; debug otherwise).
    drain_warned: Option<Instant>,
    last_exchange: Option<Instant>,
    ingest: Arc<dyn Ingest>,
    /// Coil writes of the linkage, carried out between polls.
    commands: Option<mpsc::UnboundedReceiver<CoilWrite>>,
}

impl BusTask {
    pub fn new(
        cfg: BusConfig,
        site_id: &str,
        site_tags: &[(String, String)],
        health: &Health,
        ingest: Arc<dyn Ingest>,
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
                let meta = Arc::new(
                    DeviceMeta::new(&d.id, site_id, &tags, &metrics)
                        .with_ranges(d.profile.registers.iter().map(|r| r.range)),
                );
                let spans: Vec<_> = d.profile.registers.iter().map(|r| r.span()).collect();
                let plan = planner::plan(&spans, &d.limits);
                let mut slots_by_read = vec![Vec::new(); plan.reads.len()];
                for (slot, loc) in plan.locations.iter().enumerate() {
                    slots_by_read[loc.read].push(slot);
                }
                let dh = health.add_device(Arc::new(DeviceHealth::new(&d.id, &cfg.name)));
                dh.interval_ms.store(d.interval.as_millis() as i64, Relaxed);
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
            drained: None,
            last_device: None,
            drain_warned: None,
            last_exchange: None,
            ingest,
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
        self.drained = None;
        info!(bus = %self.cfg.name, "bus stopped");
    }

    /// Polls one device, hands its readings in, reschedules it.
    async fn poll(&mut self, idx: usize) {
        let time_ms = now_ms();
        let nslots = self.devices[idx].meta.slots.len();
        let mut values: Vec<Option<f64>> = vec![None; nslots];
        let mut outcome = Outcome::Ok;
        let mut problem: Option<String> = None;

        for read_idx in 0..self.devices[idx].plan.reads.len() {
            let read = self.devices[idx].plan.reads[read_idx];
            match self.exchange(idx, &Op::Read(read)).await {
                Ok(data) => {
                    self.decode_into(idx, read_idx, &data, &mut values);
                }
                Err(PollError::Exception(exception)) => {
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
                    problem = Some(e.to_string());
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
                flags: Vec::new(),
            };
            self.ingest.readings(&readings);
        }
    }

    /// One request on the bus, with reconnect, pacing and timeout; counted in the device's
    /// health when it fails, and the connection dropped unless the device answered with an
    /// exception.
    async fn exchange(&mut self, idx: usize, op: &Op) -> Result<Data, PollError> {
        let unit = self.devices[idx].cfg.unit;
        let timeout = self.cfg.timeout;
        if let Some(last) = self.last_exchange {
            tokio::time::sleep_until(last + self.cfg.request_gap).await;
        }
        let ctx = match self.conn.as_mut() {
            Some(c) => c,
            None => match link::open_counted(&self.cfg.transport, unit, timeout).await {
                Ok((c, drained)) => {
                    self.drained = Some((drained, 0));
                    self.conn.insert(c)
                }
                Err(e) => {
                    self.last_exchange = Some(Instant::now());
                    let e = PollError::Open(e);
                    e.count(&self.devices[idx].health);
                    return Err(e);
                }
            },
        };
        ctx.set_slave(Slave(unit));
        let result = tokio::time::timeout(timeout, request::run(ctx, op))
            .await
            .ok();
        self.last_exchange = Some(Instant::now());
        self.count_drained(idx);
        self.last_device = Some(idx);
        let outcome = request_outcome(result, op, timeout);
        if let Err(e) = &outcome {
            e.count(&self.devices[idx].health);
            if e.reconnects() {
                // Never reuse a connection after a fault: a late reply could be read as the
                // next answer.
                self.conn = None;
                self.drained = None;
            }
        }
        outcome
    }

    /// Counts the stale bytes discarded before the request just sent (a duplicated or late
    /// reply), as a protocol error of the device that was asked before.
    fn count_drained(&mut self, idx: usize) {
        let Some((drained, seen)) = self.drained.as_mut() else {
            return;
        };
        let times = drained.times.load(Relaxed);
        if times == *seen {
            return;
        }
        let new = times - *seen;
        *seen = times;
        let bytes = drained.bytes.load(Relaxed);
        let culprit = self.last_device.unwrap_or(idx);
        let dev = &self.devices[culprit];
        dev.health.protocol_errors.fetch_add(new, Relaxed);
        let now = Instant::now();
        if self
            .drain_warned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.drain_warned = Some(now);
            warn!(bus = %self.cfg.name, device = %dev.cfg.id, unit = dev.cfg.unit, discarded_bytes_total = bytes, "unrequested bytes pending before a request (a duplicated or late reply): discarded (logged once a minute)");
        } else {
            debug!(bus = %self.cfg.name, device = %dev.cfg.id, discarded_bytes_total = bytes, "unrequested bytes discarded");
        }
    }

    /// Sets an actuator's coils and reads them back; the site learns what came of it. Only
    /// coils the device's profile marks writable are ever written.
    async fn write_coils(&mut self, w: CoilWrite) {
        let result = self.try_write_coils(&w).await;
        if let Err(e) = &result {
            warn!(bus = %self.cfg.name, device = %w.device, coils = ?w.coils, on = w.switch.on, error = %e, "coil write failed");
        }
        self.ingest
            .switched(&w.switch, result.map_err(|e| e.to_string()));
    }

    async fn try_write_coils(&mut self, w: &CoilWrite) -> Result<Vec<bool>, SwitchError> {
        let idx = self
            .devices
            .iter()
            .position(|d| d.cfg.id == w.device)
            .ok_or_else(|| SwitchError::NotOnBus {
                device: w.device.clone(),
                bus: self.cfg.name.clone(),
            })?;
        let regs = &self.devices[idx].cfg.profile.registers;
        for a in &w.coils {
            if !regs
                .iter()
                .any(|r| r.table == Table::Coil && r.address == *a && r.writable)
            {
                return Err(SwitchError::NotWritable(*a));
            }
        }
        let (Some(&lo), Some(&hi)) = (w.coils.iter().min(), w.coils.iter().max()) else {
            return Err(SwitchError::NoCoils);
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
            self.exchange(idx, op)
                .await
                .map_err(|error| SwitchError::Request {
                    op: op.describe(),
                    error,
                })?;
        }
        let back = Op::Read(Read {
            table: Table::Coil,
            start: lo,
            count: hi - lo + 1,
        });
        match self.exchange(idx, &back).await {
            Ok(Data::Bits(bits)) => Ok(w
                .coils
                .iter()
                .map(|a| bits.get(usize::from(a - lo)).copied().unwrap_or(false))
                .collect()),
            Ok(Data::Words(_)) => Err(SwitchError::ReadBackWords),
            Err(error) => Err(SwitchError::Request {
                op: format!("reading the coils back ({})", back.describe()),
                error,
            }),
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
            self.ingest.device_link(&dev.cfg.id, up);
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

    fn read(count: u16) -> Op {
        Op::Read(Read {
            table: Table::Holding,
            start: 10,
            count,
        })
    }

    #[test]
    fn an_exception_keeps_the_link_and_everything_else_drops_it() {
        use tokio_modbus::ExceptionCode;
        let t = Duration::from_millis(300);
        let h = DeviceHealth::new("d", "bus");
        let ok = request_outcome(Some(Ok(Ok(Data::Words(vec![1, 2])))), &read(2), t);
        assert!(matches!(ok, Ok(Data::Words(ref w)) if w == &[1, 2]));

        let ex = request_outcome(
            Some(Ok(Err(ExceptionCode::IllegalDataAddress))),
            &read(2),
            t,
        )
        .unwrap_err();
        assert!(matches!(
            ex,
            PollError::Exception(ExceptionCode::IllegalDataAddress)
        ));
        assert!(!ex.reconnects(), "the device answered: keep the connection");
        assert!(ex.to_string().starts_with("exception "), "{ex}");
        ex.count(&h);

        let broken = request_outcome(
            Some(Err(RequestError::Modbus(tokio_modbus::Error::Transport(
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe"),
            )))),
            &read(2),
            t,
        )
        .unwrap_err();
        assert!(matches!(broken, PollError::Link(_)));
        assert!(broken.reconnects());
        assert_eq!(broken.to_string(), "link broken: broken pipe");
        broken.count(&h);

        let late = request_outcome(None, &read(2), t).unwrap_err();
        assert!(matches!(late, PollError::Timeout(_)) && late.reconnects());
        assert_eq!(late.to_string(), "no valid reply within 300ms");
        late.count(&h);

        let short = request_outcome(Some(Ok(Ok(Data::Words(vec![1])))), &read(2), t).unwrap_err();
        assert!(matches!(short, PollError::Decode(_)) && short.reconnects());
        assert!(
            short
                .to_string()
                .contains("reply carries 1 values for 2 requested"),
            "{short}"
        );
        short.count(&h);

        // More values than asked is no better: refused, not cut.
        let long =
            request_outcome(Some(Ok(Ok(Data::Words(vec![1, 2, 3])))), &read(2), t).unwrap_err();
        assert!(matches!(long, PollError::Decode(_)) && long.reconnects());
        long.count(&h);
        let misfit = request_outcome(
            Some(Err(RequestError::Misfit(
                "reply carries 4 registers".into(),
            ))),
            &read(2),
            t,
        )
        .unwrap_err();
        assert!(matches!(misfit, PollError::Decode(_)) && misfit.reconnects());
        misfit.count(&h);

        let refused = PollError::from(link::LinkError::ConnectTimeout {
            target: "127.0.0.1:1".into(),
            timeout: t,
        });
        assert!(refused.reconnects());
        refused.count(&h);

        // Each kind counted apart.
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        assert_eq!(
            (
                n(&h.exceptions),
                n(&h.link_errors),
                n(&h.timeouts),
                n(&h.protocol_errors)
            ),
            (1, 2, 1, 3)
        );
    }

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
