//! One platform's upstream task: the I/O shell around [`Periods`], [`frames`], [`Backlog`]
//! and [`Link`]. Readings come in on a channel; every frame the platform is owed goes into
//! its backlog first (durable), and from there over one TCP connection, reconnected with
//! backoff whenever it fails or the link gives up. One task a platform: one that is down or
//! slow never holds up another.
//!
//! Not wired into `dustgate run` yet (issue 13: the `[[hj212.upstream]]` keys come next); the
//! tests drive it directly against the Python platform peer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::backlog::{Backlog, BacklogError};
use super::frames::{self, Identity, Platform, Rtd};
use super::session::{Action, Link, LinkConfig, LinkCounts};
use crate::backoff::Backoff;
use crate::config::factors::FactorMap;
use crate::pipeline::periods::{Level, PeriodValue, Periods, Policy};

/// Everything one upstream task needs.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    /// `host:port`.
    pub address: String,
    pub identity: Identity,
    pub factors: Arc<FactorMap>,
    /// The site's zone (DataTime, period boundaries, QNs).
    pub tz: TimeZone,
    /// CN=2011 this often (`None`: off).
    pub realtime: Option<Duration>,
    /// The period levels sent (2051 at a minute level, 2061, 2031).
    pub levels: Vec<Level>,
    pub policy: Policy,
    pub link: LinkConfig,
    /// How long a frame waits in the backlog before it is expired (counted).
    pub keep: Duration,
    /// The backlog's file.
    pub backlog: PathBuf,
    /// The gateway's start (CN=2081's RestartTime).
    pub boot_ms: i64,
    /// How long a period waits for late readings after it ends.
    pub grace: Duration,
}

/// One device's values at one time, as the uplink takes them (canonical units).
#[derive(Debug, Clone)]
pub struct UpReading {
    pub device: Arc<str>,
    pub time_ms: i64,
    /// (metric, value, data flag: `N` when the instrument sent none).
    pub values: Vec<(Arc<str>, f64, char)>,
}

/// What the task counted, for the status page.
#[derive(Debug, Clone, Default)]
pub struct UpstreamCounts {
    pub link: LinkCounts,
    /// Connection attempts (successful or not).
    pub connects: u64,
    pub queued: u64,
    pub expired: u64,
    pub backlog: usize,
    pub oldest_ms: Option<i64>,
    pub late_readings: u64,
    /// Metrics the platform's map has no code for (not sent).
    pub no_code: Vec<String>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A metric's latest value: (time, value, flag).
type Latest = (i64, f64, char);

/// The task's state between connections.
struct Upstream {
    spec: UpstreamSpec,
    backlog: Backlog,
    periods: Periods,
    link: Link,
    /// Latest value of each (device, metric) for the next CN=2011.
    latest: HashMap<(Arc<str>, Arc<str>), Latest>,
    counts: UpstreamCounts,
    counts_out: watch::Sender<UpstreamCounts>,
}

impl Upstream {
    fn platform(&self) -> Platform<'_> {
        Platform {
            id: &self.spec.identity,
            tz: &self.spec.tz,
            factors: &self.spec.factors,
        }
    }

    fn publish(&mut self) {
        self.counts.link = self.link.counts();
        self.counts.backlog = self.backlog.len();
        self.counts.oldest_ms = self.backlog.oldest();
        self.counts.late_readings = self.periods.late();
        let _ = self.counts_out.send(self.counts.clone());
    }

    fn note_no_code(&mut self, metrics: Vec<String>) {
        for m in metrics {
            if !self.counts.no_code.contains(&m) {
                warn!(upstream = %self.spec.name, metric = %m, "the platform's factor map has no code for this metric: it is not sent");
                self.counts.no_code.push(m);
            }
        }
    }

    fn queue(
        &mut self,
        now: i64,
        p: &crate::hj212::segment::Packet<'_>,
    ) -> Result<(), BacklogError> {
        tokio::task::block_in_place(|| self.backlog.push(now, p))?;
        self.counts.queued += 1;
        Ok(())
    }

    fn take(&mut self, r: UpReading) -> Result<(), BacklogError> {
        let mut closed = Vec::new();
        for (metric, v, flag) in &r.values {
            let f = (*flag != 'N').then_some(*flag);
            self.periods
                .reading(&r.device, metric, r.time_ms, *v, f, &mut closed);
            self.latest
                .insert((r.device.clone(), metric.clone()), (r.time_ms, *v, *flag));
        }
        self.queue_periods(closed)
    }

    /// One frame per closed (level, period start).
    fn queue_periods(&mut self, closed: Vec<PeriodValue>) -> Result<(), BacklogError> {
        let mut groups: Vec<((Level, i64), Vec<PeriodValue>)> = Vec::new();
        for v in closed {
            let key = (v.level, v.start_ms);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(v),
                None => groups.push((key, vec![v])),
            }
        }
        groups.sort_by_key(|((_, start), _)| *start);
        let now = now_ms();
        for ((level, start), values) in groups {
            let refs: Vec<&PeriodValue> = values.iter().collect();
            let b = frames::period(self.platform(), String::new(), level, start, &refs, false);
            self.note_no_code(b.no_code);
            self.queue(now, &b.packet)?;
        }
        Ok(())
    }

    fn queue_realtime(&mut self, now: i64) -> Result<(), BacklogError> {
        let Some(every) = self.spec.realtime else {
            return Ok(());
        };
        let fresh = 2 * every.as_millis() as i64;
        let mut values: Vec<(Arc<str>, f64, char)> = self
            .latest
            .iter()
            .filter(|(_, (t, _, _))| now - t <= fresh)
            .map(|((_, m), (_, v, f))| (m.clone(), *v, *f))
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let rtd: Vec<Rtd<'_>> = values
            .iter()
            .map(|(m, v, f)| Rtd {
                metric: m,
                value: *v,
                flag: *f,
            })
            .collect();
        let b = frames::realtime(self.platform(), String::new(), now - now % 1000, &rtd);
        let (packet, no_code) = (b.packet, b.no_code);
        self.note_no_code(no_code);
        self.queue(now, &packet)
    }

    /// Period ends and expiry.
    fn housekeeping(&mut self, now: i64) -> Result<(), BacklogError> {
        let mut closed = Vec::new();
        self.periods
            .tick(now - self.spec.grace.as_millis() as i64, &mut closed);
        self.queue_periods(closed)?;
        let keep = self.spec.keep.as_millis() as i64;
        let expired = tokio::task::block_in_place(|| self.backlog.expire(now, keep))?;
        if expired > 0 {
            warn!(upstream = %self.spec.name, frames = expired, "HJ 212 backlog frames expired (older than keep): never delivered");
            self.counts.expired += expired;
        }
        Ok(())
    }
}

/// Runs one platform's uplink until `stop`; `counts` shows what it did. Fails only when the
/// backlog cannot be opened or written (the disk), which the caller reports.
pub async fn run(
    spec: UpstreamSpec,
    mut rx: mpsc::Receiver<UpReading>,
    mut stop: watch::Receiver<bool>,
    counts: watch::Sender<UpstreamCounts>,
) -> Result<(), BacklogError> {
    let backlog = tokio::task::block_in_place(|| Backlog::open(&spec.backlog))?;
    let mut up = Upstream {
        periods: Periods::new(spec.tz.clone(), &spec.levels, spec.policy),
        link: Link::new(spec.link, spec.tz.clone()),
        backlog,
        latest: HashMap::new(),
        counts: UpstreamCounts::default(),
        counts_out: counts,
        spec,
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).jittered(0.2);
    let mut realtime = up.spec.realtime.map(|d| {
        let mut i = tokio::time::interval(d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut inputs_open = true;
    loop {
        // Not connected: take readings and keep time until the next attempt.
        let attempt = tokio::time::sleep(if up.counts.connects == 0 {
            Duration::ZERO
        } else {
            backoff.next_delay()
        });
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                _ = &mut attempt => break,
                _ = stop.changed() => return Ok(()),
                r = rx.recv(), if inputs_open => match r {
                    Some(r) => up.take(r)?,
                    None => inputs_open = false,
                },
                _ = async { realtime.as_mut().expect("guarded").tick().await }, if realtime.is_some() => {
                    up.queue_realtime(now_ms())?;
                }
                _ = tick.tick() => { up.housekeeping(now_ms())?; up.publish(); }
            }
        }
        let sock = match tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(up.spec.address.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(upstream = %up.spec.name, address = %up.spec.address, error = %e, "HJ 212 platform: cannot connect (will retry)");
                up.counts.connects += 1;
                continue;
            }
            Err(_) => {
                warn!(upstream = %up.spec.name, address = %up.spec.address, "HJ 212 platform: connect timed out (will retry)");
                up.counts.connects += 1;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        up.counts.connects += 1;
        info!(upstream = %up.spec.name, address = %up.spec.address, backlog = up.backlog.len(), "HJ 212 platform connected");
        let live_since = now_ms();
        let delivered_before = up.link.counts().delivered;
        up.link.connected();
        match connected(
            &mut up,
            sock,
            live_since,
            &mut rx,
            &mut inputs_open,
            &mut realtime,
            &mut tick,
            &mut stop,
        )
        .await?
        {
            Ended::Stop => return Ok(()),
            Ended::Lost(why) => {
                warn!(upstream = %up.spec.name, why, "HJ 212 platform connection lost (will reconnect)");
                // A connection that carried frames resets the backoff (one that is taken
                // and dropped at once keeps backing off).
                if up.link.counts().delivered > delivered_before {
                    backoff.reset();
                }
            }
        }
        up.publish();
    }
}

/// The link's id of the boot-time frame: not a backlog id (those start at 1), so that its
/// delivery deletes nothing.
const BOOT_ID: u64 = 0;

enum Ended {
    Stop,
    Lost(&'static str),
}

#[allow(clippy::too_many_arguments)]
async fn connected(
    up: &mut Upstream,
    mut sock: TcpStream,
    live_since: i64,
    rx: &mut mpsc::Receiver<UpReading>,
    inputs_open: &mut bool,
    realtime: &mut Option<tokio::time::Interval>,
    tick: &mut tokio::time::Interval,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended, BacklogError> {
    let mut busy: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut actions: Vec<Action> = Vec::new();
    // The boot time first, on every connect, written directly: an old one in the backlog
    // would say nothing after a later connect.
    let boot = frames::boot_time(up.platform(), String::new(), live_since, up.spec.boot_ms);
    if let Some(Action::Write(f)) = up.link.send(now_ms(), BOOT_ID, &boot) {
        if sock.write_all(f.as_bytes()).await.is_err() {
            return Ok(Ended::Lost("write failed"));
        }
        up.link.written(BOOT_ID, &mut actions);
    }
    loop {
        // Fill the window from the backlog: live first, then the past newest first.
        while up.link.has_room() {
            let Some(due) = tokio::task::block_in_place(|| up.backlog.next(live_since, &busy))?
            else {
                break;
            };
            let mut template = due.template;
            if due.resend && up.spec.identity.version == crate::hj212::segment::Version::V2025 {
                template.rf = Some("1".into());
            }
            match up.link.send(now_ms(), due.id, &template) {
                Some(Action::Write(f)) => {
                    if sock.write_all(f.as_bytes()).await.is_err() {
                        return Ok(Ended::Lost("write failed"));
                    }
                    busy.push(due.id);
                    up.link.written(due.id, &mut actions);
                }
                _ => break,
            }
            if !up.spec.link.ack {
                // Without acks nothing stays in flight: the frame is delivered.
                apply(up, &mut actions, &mut busy)?;
            }
        }
        tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stop),
            n = sock.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Ok(Ended::Lost("closed by the platform")),
                Ok(n) => {
                    // Commands are answered in a later step of issue 13; they are logged.
                    for c in up.link.read(&buf[..n], &mut actions) {
                        warn!(upstream = %up.spec.name, cn = c.cn(), "HJ 212 platform command not handled yet");
                    }
                }
            },
            r = rx.recv(), if *inputs_open => match r {
                Some(r) => up.take(r)?,
                None => *inputs_open = false,
            },
            _ = async { realtime.as_mut().expect("guarded").tick().await }, if realtime.is_some() => {
                up.queue_realtime(now_ms())?;
            }
            _ = tick.tick() => {
                let now = now_ms();
                up.link.tick(now, &mut actions);
                up.housekeeping(now)?;
                up.publish();
            }
        }
        for a in &actions {
            if let Action::Write(f) = a
                && sock.write_all(f.as_bytes()).await.is_err()
            {
                return Ok(Ended::Lost("write failed"));
            }
        }
        if actions.contains(&Action::Close) {
            return Ok(Ended::Lost("no answer after the retries"));
        }
        apply(up, &mut actions, &mut busy)?;
    }
}

/// Deletes what was delivered; clears the actions.
fn apply(
    up: &mut Upstream,
    actions: &mut Vec<Action>,
    busy: &mut Vec<u64>,
) -> Result<(), BacklogError> {
    for a in actions.drain(..) {
        if let Action::Delivered(id) = a {
            tokio::task::block_in_place(|| up.backlog.delivered(id))?;
            busy.retain(|b| *b != id);
        }
    }
    Ok(())
}
