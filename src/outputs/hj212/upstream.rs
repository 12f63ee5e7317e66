//! One platform's upstream task: the I/O shell around [`Periods`], [`frames`], [`Backlog`]
//! and [`Link`]. Readings come in on a channel; every frame the platform is owed goes into
//! its backlog first (durable), and from there over one TCP connection, reconnected with
//! backoff whenever it fails or the link gives up. One task a platform: one that is down or
//! slow never holds up another.
//!
//! Period values are sent once per period and level: a value closed early (by a later reading
//! of its device) is held until the period's end plus `grace`, so that every device's value of
//! one period goes in one frame. They are also written to `<measurement>_minute|hour|day` with
//! the tag `upstream` (what this platform got), durably before their frame is queued. The
//! open periods and held values are kept in the backlog's file (once a second while readings
//! come, and with the frames they become), so a restart or a kill -9 resumes them.

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
use super::commands;
use super::frames::{self, Identity, Platform, Rtd};
use super::session::{Action, Link, LinkConfig, LinkCounts, Sm4};
use crate::backoff::Backoff;
use crate::config::factors::FactorMap;
use crate::hj212::encode::split_packets;
use crate::hj212::segment::Packet;
use crate::model::{FieldKey, FieldValue, Point, SeriesKey};
use crate::outputs::blocking;
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::PointQueue;
use crate::pipeline::periods::{Level, PeriodValue, Periods, PeriodsSnapshot, Policy};

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
    /// Devices' reading intervals (their poll interval): the readings a period expects.
    pub intervals: Vec<(String, Duration)>,
    /// HJ 212-2025: data frames (CN 2000-2999) SM4-encrypted.
    pub sm4: Option<Sm4>,
    /// HJ 212-2025: CN=9015 after this long without a frame written.
    pub heartbeat: Option<Duration>,
}

/// One value of an [`UpReading`].
#[derive(Debug, Clone)]
pub struct UpValue {
    pub metric: Arc<str>,
    /// In the canonical unit.
    pub value: f64,
    /// The data flag: `N` when the instrument sent none and the range check found nothing.
    pub flag: char,
    /// The reading's own series (its measurement and tags), from which the period series are
    /// named.
    pub series: SeriesKey,
}

/// One device's values at one time, as the uplink takes them.
#[derive(Debug, Clone)]
pub struct UpReading {
    pub device: Arc<str>,
    pub time_ms: i64,
    pub values: Vec<UpValue>,
}

/// What the task counted, for the status page.
#[derive(Debug, Clone, Default)]
pub struct UpstreamCounts {
    pub link: LinkCounts,
    /// Connection attempts (successful or not).
    pub connects: u64,
    pub connected: bool,
    /// When the platform last answered a frame (ms).
    pub last_ack_ms: Option<i64>,
    pub queued: u64,
    pub expired: u64,
    pub backlog: usize,
    pub oldest_ms: Option<i64>,
    pub late_readings: u64,
    /// Commands from the platform, answered.
    pub commands: u64,
    /// The platform's clock minus the gateway's, as its last CN=1012 said (ms).
    pub clock_offset_ms: Option<i64>,
    /// In force now (the config's, or what the platform set): seconds between real-time
    /// frames (`None`: off) and the minute level's minutes.
    pub realtime_s: Option<u64>,
    pub minutes: Option<u32>,
    /// Metrics the platform's map has no code for (not sent).
    pub no_code: Vec<String>,
}

/// Site time (what DataTime and periods are of; a demo replays it faster).
fn site_now() -> i64 {
    crate::model::now_ms()
}

/// The wall clock: what measures the link and the backlog (timeouts, queue times, `keep`).
fn wall() -> i64 {
    crate::clock::wall_ms()
}

/// A metric's latest value: (time, value, flag).
type Latest = (i64, f64, char);

/// What the task keeps across a restart (in the backlog's file, key [`STATE_KEY`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    periods: PeriodsSnapshot,
    /// (device, metric, the reading's series) of every metric with periods.
    series: Vec<(String, String, String)>,
}

const STATE_KEY: &str = "periods";

/// How often the open periods are committed while readings come: a kill -9 loses at most
/// this much of their readings (a clean stop none).
const SAVE_EVERY_MS: i64 = 1000;

/// Frames taken from the backlog and written in one pass of the connection's loop.
const FILL_BATCH: usize = 256;

/// The standard's longest data segment (HJ 212-2017 §6.3.2 [P]) less what a send adds to a
/// template (its QN's 17 digits, `RF=1;` on a 2025 resend) and a margin: longer frames go as
/// parts (PNUM/PNO), each with the DataTime, each its own frame in the backlog.
const MAX_SEGMENT: usize = 1024 - 17 - 5 - 2;

/// The task's state between connections.
struct Upstream {
    spec: UpstreamSpec,
    backlog: Backlog,
    periods: Periods,
    /// Closed period values waiting for their period's end plus the grace.
    held: Vec<PeriodValue>,
    /// The series each (device, metric) reading was written to.
    series: HashMap<(Arc<str>, Arc<str>), SeriesKey>,
    /// Readings taken since the state was last saved, and when it was (wall ms).
    dirty: bool,
    saved_ms: i64,
    /// Where period values are written (the gateway's store); `None` in tests of the link.
    points: Option<Arc<dyn PointQueue>>,
    link: Link,
    /// Latest value of each (device, metric) for the next CN=2011.
    latest: HashMap<(Arc<str>, Arc<str>), Latest>,
    counts: UpstreamCounts,
    counts_out: watch::Sender<UpstreamCounts>,
    /// What the platform changed (kept in the backlog's file, over the config's values).
    settings: Settings,
    /// The real-time interval changed: the run loop makes a new timer.
    realtime_changed: bool,
    /// History frames in the backlog (their ids) and the 9012 that follows their delivery.
    history: Vec<(std::ops::Range<u64>, Packet<'static>)>,
    /// When the archive was last expired (wall ms).
    archive_expired_ms: i64,
}

/// What a platform set with its commands; `None`: the config's value.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Settings {
    /// CN=1062/2011/2012: seconds between real-time frames (`Some(None)`: stopped).
    realtime_s: Option<Option<u64>>,
    /// CN=1064.
    minutes: Option<u32>,
    /// CN=1072: the platform's new password (in the backlog's file, never in the config or
    /// a log).
    password: Option<String>,
}

const SETTINGS_KEY: &str = "settings";

impl Upstream {
    fn platform(&self) -> Platform<'_> {
        Platform {
            id: &self.spec.identity,
            tz: &self.spec.tz,
            factors: &self.spec.factors,
        }
    }

    fn publish(&mut self) {
        let link = self.link.counts();
        if link.delivered > self.counts.link.delivered {
            self.counts.last_ack_ms = Some(wall());
        }
        self.counts.link = link;
        self.counts.backlog = self.backlog.len();
        self.counts.oldest_ms = self.backlog.oldest();
        self.counts.late_readings = self.periods.late();
        self.counts.realtime_s = self.spec.realtime.map(|d| d.as_secs());
        self.counts.minutes = self.minutes();
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

    fn saved_state(&self) -> Vec<u8> {
        let saved = Saved {
            periods: self.periods.snapshot(&self.held),
            series: self
                .series
                .iter()
                .map(|((d, m), s)| (d.to_string(), m.to_string(), s.as_str().to_string()))
                .collect(),
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// Resumes the open periods kept before a restart.
    fn restore(&mut self) -> Result<(), BacklogError> {
        let Some(bytes) = blocking(|| self.backlog.state(STATE_KEY))? else {
            return Ok(());
        };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(saved) => {
                self.held = self.periods.restore(saved.periods);
                for (d, m, s) in saved.series {
                    self.series.insert(
                        (crate::model::device_key(&d), Arc::from(m.as_str())),
                        SeriesKey::from_escaped(&s),
                    );
                }
                info!(upstream = %self.spec.name, held = self.held.len(), "HJ 212 open periods resumed from before the restart");
            }
            Err(e) => {
                tracing::error!(upstream = %self.spec.name, error = %e, "HJ 212 open periods kept before the restart are unreadable: started afresh");
            }
        }
        Ok(())
    }

    fn queue(&mut self, p: &crate::hj212::segment::Packet<'_>) -> Result<(), BacklogError> {
        let parts = split_packets(p, MAX_SEGMENT);
        blocking(|| self.backlog.push_all(wall(), &parts, None))?;
        self.counts.queued += parts.len() as u64;
        Ok(())
    }

    fn take(&mut self, r: UpReading) {
        for v in &r.values {
            let f = (v.flag != 'N').then_some(v.flag);
            self.periods
                .reading(&r.device, &v.metric, r.time_ms, v.value, f, &mut self.held);
            let key = (r.device.clone(), v.metric.clone());
            self.latest
                .insert(key.clone(), (r.time_ms, v.value, v.flag));
            if self.series.get(&key) != Some(&v.series) {
                self.series.insert(key, v.series.clone());
            }
        }
        self.dirty = true;
    }

    /// The period values due (their period ended `grace` ago): written to the store (waited
    /// for until durable), then their frames queued with the state that no longer holds them,
    /// in one commit. Otherwise the state alone, when readings came since it was saved.
    async fn close_periods(&mut self, now: i64) -> Result<(), BacklogError> {
        let horizon = now - self.spec.grace.as_millis() as i64;
        self.periods.tick(horizon, &mut self.held);
        let (due, held): (Vec<PeriodValue>, Vec<PeriodValue>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|v| v.start_ms + v.level.len_ms() <= horizon);
        self.held = held;
        if due.is_empty() {
            // The open periods at most once a second (a commit each: an SD card's wear).
            if wall() - self.saved_ms >= SAVE_EVERY_MS {
                self.save()?;
            }
            return Ok(());
        }
        self.write_points(&due).await;
        let mut groups: Vec<((Level, i64), Vec<&PeriodValue>)> = Vec::new();
        for v in &due {
            let key = (v.level, v.start_ms);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(v),
                None => groups.push((key, vec![v])),
            }
        }
        groups.sort_by_key(|((_, start), _)| *start);
        let mut packets = Vec::with_capacity(groups.len());
        let mut whole = Vec::with_capacity(groups.len());
        let mut no_code = Vec::new();
        for ((level, start), values) in groups {
            let b = frames::period(self.platform(), String::new(), level, start, &values, false);
            no_code.extend(b.no_code);
            if b.packet.cp.factors.is_empty() {
                continue; // nothing the platform has a code for
            }
            packets.extend(split_packets(&b.packet, MAX_SEGMENT));
            let cn = frames::period_cn(level).parse::<u16>().unwrap_or(0);
            whole.push((cn, start, b.packet));
        }
        self.note_no_code(no_code);
        let state = self.saved_state();
        let archive: Vec<(u16, i64, &crate::hj212::segment::Packet<'_>)> = whole
            .iter()
            .map(|(cn, start, p)| (*cn, *start, p))
            .collect();
        blocking(|| {
            self.backlog
                .push_archived(wall(), &packets, Some((STATE_KEY, &state)), &archive)
        })?;
        self.counts.queued += packets.len() as u64;
        self.dirty = false;
        Ok(())
    }

    /// Period values as points (`air_minute`, … with the tag `upstream`), appended to the
    /// store and waited for until durable: a frame is never queued for a value the database
    /// could miss after a crash.
    async fn write_points(&mut self, values: &[PeriodValue]) {
        let Some(q) = &self.points else { return };
        let mut points: Vec<Point> = Vec::new();
        for v in values {
            let Some(reading) = self.series.get(&(v.device.clone(), v.metric.clone())) else {
                continue;
            };
            let suffix = match v.level {
                Level::Minutes(_) => "_minute",
                Level::Hour => "_hour",
                Level::Day => "_day",
            };
            let series = reading.derived(suffix, ("upstream", &self.spec.name));
            let i = match points
                .iter()
                .position(|p| p.series == series && p.time_ms == v.start_ms)
            {
                Some(i) => i,
                None => {
                    points.push(Point {
                        series,
                        fields: Vec::new(),
                        time_ms: v.start_ms,
                    });
                    points.len() - 1
                }
            };
            let f = &mut points[i].fields;
            let m = &v.metric;
            for (name, x) in [
                (m.to_string(), v.avg),
                (format!("{m}_min"), v.min),
                (format!("{m}_max"), v.max),
            ] {
                if let Some(x) = x {
                    f.push((FieldKey::new(&name), FieldValue::Float(x)));
                }
            }
            if v.flag != 'N' {
                f.push((
                    FieldKey::new(&format!("{m}_flag")),
                    FieldValue::Str(v.flag.to_string()),
                ));
            }
        }
        if points.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for p in &points {
            encode_point(p, &mut lines);
        }
        let mut durable = q.durable();
        let ticket = blocking(|| q.append(lines, points.len()));
        q.commit_soon();
        let _ = durable.wait_for(|d| *d >= ticket).await;
    }

    fn queue_realtime(&mut self, now: i64) -> Result<(), BacklogError> {
        let Some(every) = self.spec.realtime else {
            return Ok(());
        };
        let fresh = 2 * every.as_millis() as i64;
        // Of a metric two devices report, the first device by id is sent (one value a code):
        // the same one every time.
        let mut values: Vec<(&Arc<str>, &Arc<str>, f64, char)> = self
            .latest
            .iter()
            .filter(|(_, (t, _, _))| now - t <= fresh)
            .map(|((d, m), (_, v, f))| (m, d, *v, *f))
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        values.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let rtd: Vec<Rtd<'_>> = values
            .iter()
            .map(|(m, _, v, f)| Rtd {
                metric: m,
                value: *v,
                flag: *f,
            })
            .collect();
        let b = frames::realtime(self.platform(), String::new(), now - now % 1000, &rtd);
        let (packet, no_code) = (b.packet, b.no_code);
        self.note_no_code(no_code);
        // Nothing the platform has a code for: no frame (an empty one says nothing).
        if packet.cp.factors.is_empty() {
            return Ok(());
        }
        self.queue(&packet)
    }

    /// Period ends, the state, expiry.
    async fn housekeeping(&mut self, now: i64) -> Result<(), BacklogError> {
        self.close_periods(now).await?;
        let keep = self.spec.keep.as_millis() as i64;
        let expired = blocking(|| self.backlog.expire(wall(), keep))?;
        if expired > 0 {
            warn!(upstream = %self.spec.name, frames = expired, "HJ 212 backlog frames expired (older than keep): never delivered");
            self.counts.expired += expired;
        }
        // The archive (for history requests) keeps what was made within `keep`.
        if wall() - self.archive_expired_ms >= 60_000 {
            self.archive_expired_ms = wall();
            blocking(|| self.backlog.expire_archive(wall(), keep))?;
        }
        Ok(())
    }

    /// The minute level in force, in minutes (`None`: minute values off).
    fn minutes(&self) -> Option<u32> {
        self.spec.levels.iter().find_map(|l| match l {
            Level::Minutes(m) => Some(u32::from(*m)),
            _ => None,
        })
    }

    /// What a platform reads with CN=1061/1063.
    fn current(&self) -> commands::Current {
        commands::Current {
            rtd_interval_s: self.spec.realtime.map(|d| d.as_secs()),
            min_interval_m: self.minutes(),
        }
    }

    fn save_settings(&mut self) -> Result<(), BacklogError> {
        let bytes = serde_json::to_vec(&self.settings).unwrap_or_default();
        blocking(|| {
            self.backlog
                .push_all(wall(), &[], Some((SETTINGS_KEY, &bytes)))
        })?;
        Ok(())
    }

    /// Takes up what the platform set before a restart.
    fn restore_settings(&mut self) -> Result<(), BacklogError> {
        if let Some(bytes) = blocking(|| self.backlog.state(SETTINGS_KEY))?
            && let Ok(s) = serde_json::from_slice::<Settings>(&bytes)
        {
            self.settings = s;
        }
        self.apply_settings();
        Ok(())
    }

    /// The settings over the config's values.
    fn apply_settings(&mut self) {
        if let Some(r) = self.settings.realtime_s {
            let want = r.map(Duration::from_secs);
            if self.spec.realtime != want {
                self.spec.realtime = want;
                self.realtime_changed = true;
            }
        }
        if let Some(pw) = &self.settings.password {
            self.spec.identity.pw = pw.clone();
        }
        if let Some(m) = self.settings.minutes.and_then(Level::minutes) {
            let mut levels: Vec<Level> = self
                .spec
                .levels
                .iter()
                .copied()
                .filter(|l| !matches!(l, Level::Minutes(_)))
                .collect();
            levels.insert(0, m);
            if levels != self.spec.levels {
                // The new minute level starts afresh; hours and days keep their sums.
                let snap = self.periods.snapshot(&[]);
                let mut periods = Periods::new(self.spec.tz.clone(), &levels, self.spec.policy);
                for (device, every) in &self.spec.intervals {
                    periods.set_interval(device, every.as_millis() as i64);
                }
                let _ = periods.restore(snap);
                self.periods = periods;
                self.spec.levels = levels;
                self.dirty = true;
            }
        }
    }

    /// Answers a command from the platform; the frames to write now.
    fn command(&mut self, req: &Packet<'static>) -> Result<Vec<Packet<'static>>, BacklogError> {
        self.counts.commands += 1;
        let current = self.current();
        let reply = commands::handle(
            req,
            &self.spec.identity,
            &self.spec.tz,
            site_now(),
            &current,
        );
        info!(upstream = %self.spec.name, cn = req.cn(), "HJ 212 platform command answered");
        let mut write = reply.write;
        match reply.change {
            None => {}
            Some(commands::Change::Realtime(r)) => {
                self.settings.realtime_s = Some(r);
                self.save_settings()?;
                self.apply_settings();
            }
            Some(commands::Change::Minutes(m)) => {
                self.settings.minutes = Some(m);
                self.save_settings()?;
                self.apply_settings();
            }
            Some(commands::Change::Password(pw)) => {
                // The answers to this request still carry the password it came with.
                self.settings.password = Some(pw);
                self.save_settings()?;
                self.apply_settings();
                warn!(upstream = %self.spec.name, "the platform set a new password (CN=1072): kept in the backlog's file, used from now on");
            }
            Some(commands::Change::ClockOffset(ms)) => {
                self.counts.clock_offset_ms = Some(ms);
                if ms.abs() > 60_000 {
                    warn!(upstream = %self.spec.name, offset_s = ms / 1000, "the platform's clock differs from the gateway's (CN=1012): the gateway does not set its clock; check its time source (NTP)");
                }
            }
            Some(commands::Change::History {
                cn,
                begin_ms,
                end_ms,
                result,
            }) => {
                let code = cn.parse::<u16>().unwrap_or(0);
                let found = blocking(|| self.backlog.archived(code, begin_ms, end_ms))?;
                if found.is_empty() {
                    write.push(commands::no_data(&result));
                } else {
                    let parts: Vec<Packet<'static>> = found
                        .iter()
                        .flat_map(|p| split_packets(p, MAX_SEGMENT))
                        .collect();
                    let ids = blocking(|| self.backlog.push_all(wall(), &parts, None))?;
                    self.counts.queued += parts.len() as u64;
                    self.history.push((ids, *result));
                }
            }
        }
        Ok(write)
    }

    /// The 9012s of history requests whose frames have all been delivered.
    fn history_done(&mut self) -> Vec<Packet<'static>> {
        let backlog = &self.backlog;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.history)
            .into_iter()
            .partition(|(ids, _)| ids.clone().all(|id| !backlog.holds(id)));
        self.history = waiting;
        done.into_iter().map(|(_, r)| r).collect()
    }

    /// Commits the open periods when readings came since they were last committed (also
    /// before the task ends).
    fn save(&mut self) -> Result<(), BacklogError> {
        if self.dirty {
            let state = self.saved_state();
            blocking(|| {
                self.backlog
                    .push_all(wall(), &[], Some((STATE_KEY, &state)))
            })?;
            self.dirty = false;
            self.saved_ms = wall();
        }
        Ok(())
    }
}

/// Runs one platform's uplink until `stop`; `counts` shows what it did; period values are
/// also written to `points`. Fails only when the backlog cannot be opened or written (the
/// disk), which the caller reports.
pub async fn run(
    spec: UpstreamSpec,
    rx: mpsc::Receiver<UpReading>,
    stop: watch::Receiver<bool>,
    counts: watch::Sender<UpstreamCounts>,
    points: Option<Arc<dyn PointQueue>>,
) -> Result<(), BacklogError> {
    let backlog = blocking(|| Backlog::open(&spec.backlog))?;
    run_with(spec, backlog, rx, stop, counts, points).await
}

/// As [`run`], with the backlog already opened (`dustgate run` opens every platform's before
/// it starts anything, so that a disk or permission problem stops the start, with the file).
pub async fn run_with(
    spec: UpstreamSpec,
    backlog: Backlog,
    mut rx: mpsc::Receiver<UpReading>,
    mut stop: watch::Receiver<bool>,
    counts: watch::Sender<UpstreamCounts>,
    points: Option<Arc<dyn PointQueue>>,
) -> Result<(), BacklogError> {
    let mut periods = Periods::new(spec.tz.clone(), &spec.levels, spec.policy);
    for (device, every) in &spec.intervals {
        periods.set_interval(device, every.as_millis() as i64);
    }
    let mut up = Upstream {
        periods,
        held: Vec::new(),
        series: HashMap::new(),
        dirty: false,
        saved_ms: 0,
        points,
        link: match spec.sm4 {
            Some(k) => Link::new(spec.link, spec.tz.clone()).with_sm4(k),
            None => Link::new(spec.link, spec.tz.clone()),
        },
        backlog,
        latest: HashMap::new(),
        counts: UpstreamCounts::default(),
        counts_out: counts,
        spec,
        settings: Settings::default(),
        realtime_changed: false,
        history: Vec::new(),
        archive_expired_ms: 0,
    };
    up.restore_settings()?;
    up.restore()?;
    let ended = run_links(&mut up, &mut rx, &mut stop).await;
    up.counts.connected = false;
    up.publish();
    ended?;
    // What arrived before the stop is taken, and kept.
    while let Ok(r) = rx.try_recv() {
        up.take(r);
    }
    up.save()
}

async fn run_links(
    up: &mut Upstream,
    rx: &mut mpsc::Receiver<UpReading>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BacklogError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).jittered(0.2);
    up.realtime_changed = false;
    let mut realtime = new_realtime(up.spec.realtime);
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
                    Some(r) => up.take(r),
                    None => inputs_open = false,
                },
                _ = async { realtime.as_mut().expect("guarded").tick().await }, if realtime.is_some() => {
                    up.queue_realtime(site_now())?;
                }
                _ = tick.tick() => { up.housekeeping(site_now()).await?; up.publish(); }
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
        up.counts.connected = true;
        info!(upstream = %up.spec.name, address = %up.spec.address, backlog = up.backlog.len(), "HJ 212 platform connected");
        let live_from = up.backlog.next_id();
        let delivered_before = up.link.counts().delivered;
        up.link.connected();
        let ended = connected(
            up,
            sock,
            live_from,
            rx,
            &mut inputs_open,
            &mut realtime,
            &mut tick,
            stop,
        )
        .await?;
        up.counts.connected = false;
        match ended {
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
    live_from: u64,
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
    let mut last_write = wall();
    let boot = frames::boot_time(up.platform(), String::new(), site_now(), up.spec.boot_ms);
    if let Some(Action::Write(f)) = up.link.send(wall(), BOOT_ID, &boot) {
        if sock.write_all(f.as_bytes()).await.is_err() {
            return Ok(Ended::Lost("write failed"));
        }
        up.link.written(BOOT_ID, &mut actions);
    }
    loop {
        // Fill the window from the backlog: live first, then the past newest first; at most
        // FILL_BATCH frames a pass, written at once (and, without acks, deleted in one
        // commit once written), so a week's backlog neither holds up the readings nor costs
        // an fsync a frame.
        let mut out: Vec<u8> = Vec::new();
        let mut written: Vec<u64> = Vec::new();
        while up.link.has_room() && written.len() < FILL_BATCH {
            let Some(due) = blocking(|| up.backlog.next(live_from, &busy))? else {
                break;
            };
            let mut template = due.template;
            if due.resend && up.spec.identity.version == crate::hj212::segment::Version::V2025 {
                template.rf = Some("1".into());
            }
            // The password in force now (a platform may have changed it since it was queued).
            template.pw = Some(up.spec.identity.pw.clone().into());
            match up.link.send(wall(), due.id, &template) {
                Some(Action::Write(f)) => {
                    out.extend_from_slice(f.as_bytes());
                    busy.push(due.id);
                    written.push(due.id);
                }
                _ => break,
            }
        }
        let more = written.len() == FILL_BATCH;
        if !written.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return Ok(Ended::Lost("write failed"));
            }
            last_write = wall();
            for id in &written {
                up.link.written(*id, &mut actions);
            }
            // Without acks nothing stays in flight: written is delivered.
            apply(up, &mut actions, &mut busy)?;
        }
        tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stop),
            // More of the backlog waits: round again once what else is ready was served.
            _ = std::future::ready(()), if more => {}
            n = sock.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Ok(Ended::Lost("closed by the platform")),
                Ok(n) => {
                    for c in up.link.read(&buf[..n], &mut actions) {
                        for answer in up.command(&c)? {
                            actions.push(Action::Write(crate::hj212::encode::encode(&answer)));
                        }
                    }
                    if std::mem::take(&mut up.realtime_changed) {
                        *realtime = new_realtime(up.spec.realtime);
                    }
                }
            },
            r = rx.recv(), if *inputs_open => match r {
                Some(r) => up.take(r),
                None => *inputs_open = false,
            },
            _ = async { realtime.as_mut().expect("guarded").tick().await }, if realtime.is_some() => {
                up.queue_realtime(site_now())?;
            }
            _ = tick.tick() => {
                up.link.tick(wall(), &mut actions);
                up.housekeeping(site_now()).await?;
                up.publish();
                // A quiet link gets the heartbeat (no answer asked: a dead link shows in
                // the write, and in the acks of the next data frame).
                if let Some(hb) = up.spec.heartbeat
                    && wall() - last_write >= hb.as_millis() as i64
                {
                    let qn = up.link.next_qn(wall());
                    let f = crate::hj212::encode::encode(&frames::heartbeat(up.platform(), qn));
                    actions.push(Action::Write(f));
                }
            }
        }
        if actions.iter().any(|a| matches!(a, Action::Write(_))) {
            last_write = wall();
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
        for result in up.history_done() {
            let f = crate::hj212::encode::encode(&result);
            if sock.write_all(f.as_bytes()).await.is_err() {
                return Ok(Ended::Lost("write failed"));
            }
        }
    }
}

/// The real-time timer for an interval (in site time).
fn new_realtime(every: Option<Duration>) -> Option<tokio::time::Interval> {
    every.map(|d| {
        let mut i = tokio::time::interval(crate::clock::real(d));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    })
}

/// Deletes what was delivered, in one commit; clears the actions.
fn apply(
    up: &mut Upstream,
    actions: &mut Vec<Action>,
    busy: &mut Vec<u64>,
) -> Result<(), BacklogError> {
    let ids: Vec<u64> = actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Delivered(id) => Some(id),
            _ => None,
        })
        .collect();
    if !ids.is_empty() {
        blocking(|| up.backlog.delivered_many(&ids))?;
        busy.retain(|b| !ids.contains(b));
    }
    Ok(())
}
