//! One `[[hj212.listen]]`: a TCP listener (or a serial line) and a task per connection.
//!
//! Per connection: bytes → [`Framer`] (length, CRC, resync after any failure) → decrypt (2025,
//! the station's SM4 key) → [`parse`] → the station (MN, password, rate) → [`decode`] → the
//! ingest handle. A frame that asks for an answer (Flag bit 0) gets CN=9014 only once the
//! store reports what it carried durable; a frame refused gets no answer (the monitor sends it
//! again, and a repeated frame overwrites itself: same series, same timestamp). Every refusal
//! is counted per reason and logged throttled with the peer and a truncated copy.
//!
//! Limits: `max_connections` (beyond it a connection is closed at once, counted), an idle
//! timeout, the framer's buffer cap, and a per-station frame rate.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::decode::{self, Refusal};
use super::stations::{Lookup, StationRt, Stations};
use super::throttle::{Throttle, Verdict};
use crate::backoff::Backoff;
use crate::config::hj212::{CrcForm as CfgCrc, Hj212Endpoint, Hj212Listener};
use crate::config::site::Site;
use crate::health::hj212::Hj212Health;
use crate::hj212::{
    self, CrcForm, CrcForms, Flag, Frame, Framer, Packet, RejectReason, decrypt_frame,
};
use crate::model::now_ms;
use crate::sources::ingest::Ingest;

/// How long a frame's answer waits for the store (a full disk): then no answer is sent, and
/// the monitor sends the frame again.
const DURABLE_WAIT: Duration = Duration::from_secs(30);

/// What the listener needs of `[site]`.
#[derive(Clone)]
pub struct SiteContext {
    pub tz: TimeZone,
    pub max_future_ms: i64,
}

impl SiteContext {
    pub fn of(site: &Site) -> Self {
        Self {
            tz: site.timezone.clone(),
            max_future_ms: site.max_future.as_millis() as i64,
        }
    }
}

struct Shared {
    cfg: Hj212Listener,
    forms: CrcForms,
    stations: Stations,
    ingest: Arc<dyn Ingest>,
    health: Arc<Hj212Health>,
    site: SiteContext,
    open: AtomicUsize,
    log: std::sync::Mutex<Throttle>,
}

pub struct Hj212Task {
    shared: Arc<Shared>,
    tcp: Option<TcpListener>,
}

fn codec_forms(forms: &[CfgCrc]) -> CrcForms {
    // "modbus" covers CRC-16/MODBUS written either byte first: X10 of the vectors writes it
    // low byte first (hj212-field.md §1.3 [S]).
    let v: Vec<CrcForm> = forms
        .iter()
        .flat_map(|f| match f {
            CfgCrc::Hj212 => vec![CrcForm::Hj212],
            CfgCrc::Modbus => vec![CrcForm::Modbus, CrcForm::ModbusSwapped],
        })
        .collect();
    CrcForms::of(&v)
}

impl Hj212Task {
    /// Resolves the stations' secrets and binds the TCP port: what can fail, fails at start.
    pub fn bind(
        cfg: &Hj212Listener,
        site: &Site,
        ingest: Arc<dyn Ingest>,
        health: Arc<Hj212Health>,
    ) -> Result<Hj212Task, String> {
        let stations = Stations::build(cfg, site)?;
        for s in stations.known() {
            health.expect(&s.station.mn, &s.station.device.id, s.station.site());
        }
        let tcp = match &cfg.endpoint {
            Hj212Endpoint::Tcp { address, .. } => {
                let fail = |e: std::io::Error| format!("listener {}: {address}: {e}", cfg.name);
                let l = std::net::TcpListener::bind(address).map_err(fail)?;
                l.set_nonblocking(true).map_err(fail)?;
                Some(TcpListener::from_std(l).map_err(fail)?)
            }
            Hj212Endpoint::Serial { .. } => None,
        };
        Ok(Hj212Task {
            shared: Arc::new(Shared {
                forms: codec_forms(&cfg.crc),
                cfg: cfg.clone(),
                stations,
                ingest,
                health,
                site: SiteContext::of(site),
                open: AtomicUsize::new(0),
                log: std::sync::Mutex::new(Throttle::default()),
            }),
            tcp,
        })
    }

    /// The bound address (a test binds port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let sh = self.shared;
        match self.tcp {
            Some(l) => {
                info!(listener = %sh.cfg.name, address = %sh.cfg.endpoint.describe(), stations = sh.cfg.stations.len(), "HJ 212 listener listening");
                accept_loop(sh, l, stop).await;
            }
            None => {
                let Hj212Endpoint::Serial { path, baud } = sh.cfg.endpoint.clone() else {
                    return;
                };
                let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
                loop {
                    use tokio_serial::SerialPortBuilderExt;
                    match tokio_serial::new(&path, baud).open_native_async() {
                        Ok(port) => {
                            info!(listener = %sh.cfg.name, path = %path, baud, "HJ 212 serial line open");
                            backoff.reset();
                            // The serial line counts as one connection while it is open.
                            tokio::select! {
                                _ = connection(Open::new(&sh), port, format!("serial:{path}").into()) => {}
                                _ = stop.changed() => return,
                            }
                        }
                        Err(e) => {
                            warn!(listener = %sh.cfg.name, path = %path, error = %e, "HJ 212 serial line cannot be opened; retrying");
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}

async fn accept_loop(sh: Arc<Shared>, l: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = l.accept() => {
                let (sock, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors, most likely: wait a moment rather than spin.
                        warn!(listener = %sh.cfg.name, error = %e, "HJ 212 accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if sh.open.load(Ordering::Acquire) >= sh.cfg.max_connections {
                    sh.health.reject("connections", None);
                    log_reject(&sh, "connections", &peer.to_string(), None, b"");
                    drop(sock);
                    continue;
                }
                let _ = sock.set_nodelay(true);
                // The task is the connection's future alone (a hub holds one per monitor);
                // its guard gives the connection back when it ends or is aborted.
                conns.spawn(connection(Open::new(&sh), sock, peer.to_string().into()));
            }
        }
    }
    conns.abort_all();
}

/// A throttled warning for a refused frame or connection.
fn log_reject(sh: &Shared, reason: &str, peer: &str, mn: Option<&str>, bytes: &[u8]) {
    let verdict = sh
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(now_ms());
    if let Verdict::Log { suppressed } = verdict {
        let shown: String =
            String::from_utf8_lossy(&bytes[..bytes.len().min(hj212::framer::REJECT_COPY)])
                .escape_debug()
                .collect();
        warn!(listener = %sh.cfg.name, reason, peer, mn = mn.unwrap_or(""), frame = %shown, suppressed_since_last = suppressed, "HJ 212 frame refused");
    }
}

fn reason_of(r: RejectReason) -> &'static str {
    match r {
        RejectReason::BadHeader => "header",
        RejectReason::Length => "length",
        RejectReason::Crc => "crc",
        RejectReason::Overflow => "overflow",
        RejectReason::Garbage => "garbage",
        RejectReason::Cipher => "encrypted",
    }
}

thread_local! {
    /// The read buffer of every connection polled on this thread. A hub holds one connection
    /// per monitor, mostly idle: a buffer each (1 KiB of 10,000 connections was 10 MB) would
    /// sit empty. Bytes read go straight into the connection's framer, within one poll.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 8192].into_boxed_slice());
}

/// Polls one read of `stream` into the shared buffer and hands the bytes to `framer`; the
/// number of bytes read (0: end of stream).
fn poll_read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    READ_BUF.with(|b| {
        // Not re-entered: poll_read never polls this connection again. Should it ever be,
        // a one-off buffer keeps it correct.
        let mut shared = b.try_borrow_mut().ok();
        let mut own = Vec::new();
        let buf: &mut [u8] = match shared.as_deref_mut() {
            Some(b) => b,
            None => {
                own.resize(1024, 0);
                &mut own
            }
        };
        let mut rb = ReadBuf::new(buf);
        match Pin::new(stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                framer.push(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// An open connection, counted from its accept until it is dropped.
struct Open(Arc<Shared>);

impl Open {
    fn new(sh: &Arc<Shared>) -> Open {
        sh.open.fetch_add(1, Ordering::AcqRel);
        sh.health.connections.fetch_add(1, Relaxed);
        sh.health.accepted_connections.fetch_add(1, Relaxed);
        Open(sh.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.health.connections.fetch_sub(1, Relaxed);
    }
}

/// One connection: read, frame, handle, answer; until EOF, an error, or idle for too long.
/// Reads and answers take turns on the one stream (a frame is answered before the next read),
/// so the stream is not split.
async fn connection<S>(open: Open, mut stream: S, peer: Arc<str>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sh = &open.0;
    let mut framer = Framer::with(sh.forms, sh.cfg.max_buffer);
    // The MNs this connection spoke for (so the station shows as connected).
    let mut mns: Vec<Arc<StationRt>> = Vec::new();
    loop {
        let read = std::future::poll_fn(|cx| poll_read_into(&mut stream, &mut framer, cx));
        match tokio::time::timeout(sh.cfg.idle_timeout, read).await {
            Err(_) => break, // idle
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
        // Frame by frame, each answered before the next is read. Only the boxed answer lives
        // across the await (not the frame or what was taken from it), so that the future of
        // every connection, idle or not, stays small (a hub holds one per monitor).
        while let Some(answering) = next_accepted(sh, &mut framer, &mns, &peer)
            .map(|a| Box::pin(answer(sh, a, &mut stream)))
        {
            if let Some(st) = answering.await
                && !mns.iter().any(|m| Arc::ptr_eq(m, &st))
            {
                sh.health.station(
                    &st.station.mn,
                    &st.station.device.id,
                    st.station.site(),
                    |h| {
                        h.connected += 1;
                        h.peer = peer.clone();
                    },
                );
                mns.push(st);
            }
        }
        // An idle connection keeps no buffer, only the bytes of a frame not complete yet.
        framer.shrink();
    }
    // Bytes of a frame cut off by the end of the connection are refused, counted.
    if let Some(rej) = framer.finish() {
        sh.health.reject(reason_of(rej.reason), None);
    }
    for st in mns {
        sh.health.station(
            &st.station.mn,
            &st.station.device.id,
            st.station.site(),
            |h| h.connected = h.connected.saturating_sub(1),
        );
    }
}

/// The framer's next frame that was taken (read and stored, its answer due), with every frame
/// refused before it counted; `None` when no complete frame is buffered.
fn next_accepted(
    sh: &Shared,
    framer: &mut Framer,
    mns: &[Arc<StationRt>],
    peer: &str,
) -> Option<Accepted> {
    while let Some(next) = framer.next_frame() {
        match next {
            Err(rej) => {
                // On a connection that has spoken for one station, the bad bytes are that
                // station's (which monitor sends bad CRCs is what a crew asks).
                let reason = reason_of(rej.reason);
                let mn = match mns {
                    [one] => Some(&*one.station.mn),
                    _ => None,
                };
                sh.health.reject(reason, mn);
                if rej.reason != RejectReason::Garbage {
                    log_reject(sh, reason, peer, None, &rej.bytes);
                }
            }
            Ok(frame) => {
                if let Some(a) = accept(sh, frame, peer) {
                    // Nothing more buffered: no buffer held while the answer waits for the store.
                    framer.shrink();
                    return Some(a);
                }
            }
        }
    }
    None
}

/// One checked frame, read and stored (no await: the parsed frame never lives in a future);
/// `None` when it was refused.
fn accept(sh: &Shared, frame: Frame, peer: &str) -> Option<Accepted> {
    let arrival = now_ms();
    let mn = frame.mn();
    // The station first: an encrypted frame needs its key to be read at all.
    let st = match mn.as_deref().map(|m| sh.stations.get(m)) {
        Some(Lookup::Known(st)) => st,
        _ => {
            sh.health.reject("mn", None);
            log_reject(sh, "mn", peer, mn.as_deref(), frame.wire());
            return None;
        }
    };
    let mn = st.station.mn.clone();
    let frame = if frame.encrypted() {
        match st.sm4_key.as_ref().map(|k| decrypt_frame(&frame, k)) {
            Some(Ok(f)) => f,
            Some(Err(rej)) => {
                let reason = reason_of(rej.reason);
                sh.health.reject(reason, Some(&mn));
                log_reject(sh, reason, peer, Some(&mn), &rej.bytes);
                return None;
            }
            None => {
                sh.health.reject("encrypted", Some(&mn));
                log_reject(sh, "encrypted", peer, Some(&mn), frame.wire());
                return None;
            }
        }
    } else {
        frame
    };
    let Some(text) = frame.text() else {
        sh.health.reject("parse", Some(&mn));
        return None;
    };
    let packet = match hj212::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            sh.health.reject("parse", Some(&mn));
            log_reject(sh, &format!("parse: {e}"), peer, Some(&mn), frame.wire());
            return None;
        }
    };
    if let Some(pw) = &st.password
        && packet.pw.as_deref() != Some(pw.as_str())
    {
        sh.health.reject("password", Some(&mn));
        log_reject(sh, "password", peer, Some(&mn), b"(not shown)");
        return None;
    }
    if !st.allow(arrival, sh.cfg.max_frame_rate) {
        sh.health.reject("rate", Some(&mn));
        log_reject(sh, "rate", peer, Some(&mn), b"");
        return None;
    }
    // Written by `answer`, once the parsed frame is gone.
    let mut set_clock: Option<(String, i64)> = None;
    let ticket = if decode::is_data(packet.cn()) {
        match decode::decode(
            &packet,
            &st.station,
            &sh.site.tz,
            arrival,
            sh.site.max_future_ms,
        ) {
            Ok(d) => {
                if d.unknown_codes > 0 {
                    sh.health
                        .unknown_codes
                        .fetch_add(d.unknown_codes as u64, Relaxed);
                }
                let mut ticket = 0;
                if let Some(r) = &d.readings {
                    ticket = ticket.max(sh.ingest.readings(r));
                }
                if !d.points.is_empty() {
                    ticket = ticket.max(sh.ingest.points(&d.points));
                }
                // The clock is judged on live real-time frames only (a 2025 resend says RF=1).
                let drift = (packet.cn() == decode::REALTIME && !packet.resend())
                    .then(|| d.time_ms.map(|t| st.drift(arrival - t)))
                    .flatten();
                if let Some(drift) = drift {
                    let max = sh.cfg.max_drift.as_millis() as i64;
                    sh.ingest.clock_drift(&st.station.device.id, drift, max);
                    if sh.cfg.set_time && drift.abs() > max && st.time_to_set_clock(arrival) {
                        set_clock = Some((set_time_frame(&packet, arrival, &sh.site.tz), drift));
                    }
                }
                sh.health
                    .station(&mn, &st.station.device.id, st.station.site(), |h| {
                        h.last_frame_ms = arrival;
                        h.frames += 1;
                        if drift.is_some() {
                            h.drift_ms = drift;
                        }
                    });
                ticket
            }
            Err(r) => {
                sh.health.reject(r.reason(), Some(&mn));
                if r == Refusal::Future || r == Refusal::DataTime {
                    log_reject(sh, r.reason(), peer, Some(&mn), frame.wire());
                }
                return None;
            }
        }
    } else {
        sh.health
            .station(&mn, &st.station.device.id, st.station.site(), |h| {
                h.last_frame_ms = arrival;
                h.frames += 1;
            });
        0
    };
    sh.health.frames.fetch_add(1, Relaxed);
    // The parsed frame is not kept while the store makes its values durable: at a hub's
    // peak every monitor's frame waits there at once.
    Some(Accepted {
        answer: answer_for(&packet),
        st,
        ticket,
        set_clock,
    })
}

/// A frame taken: what its answer needs.
struct Accepted {
    st: Arc<StationRt>,
    /// The store's ticket of its values (0: none to wait for).
    ticket: u64,
    answer: Option<String>,
    /// CN=1012 to send first, and the drift it corrects (ms).
    set_clock: Option<(String, i64)>,
}

/// Sends what a taken frame asks for; returns the station it came from.
async fn answer<W>(sh: &Shared, a: Accepted, wr: &mut W) -> Option<Arc<StationRt>>
where
    W: AsyncWrite + Unpin,
{
    let Accepted {
        st,
        ticket,
        answer,
        set_clock,
    } = a;
    if let Some((set, drift)) = set_clock
        && wr.write_all(set.as_bytes()).await.is_ok()
    {
        info!(listener = %sh.cfg.name, mn = %st.station.mn, drift_s = drift / 1000, "HJ 212 station clock set (CN=1012)");
    }
    if let Some(answer) = answer {
        if ticket > 0 && !durable(sh, ticket).await {
            return Some(st);
        }
        if wr.write_all(answer.as_bytes()).await.is_ok() {
            sh.health.acks.fetch_add(1, Relaxed);
        }
    }
    Some(st)
}

/// The answer a frame asks for (Flag bit 0; domain.md §3.8 [P]): CN=9014 for uploads (CN
/// 2000–2999), CN=9013 for the time-calibration request and the 2025 heartbeat
/// (hj212-field.md §2.6 [S]); none for anything else.
fn answer_for(p: &Packet) -> Option<String> {
    if !p.flag().is_some_and(Flag::ack_wanted) {
        return None;
    }
    match p.cn() {
        "9015" | "1013" => Some(hj212::encode::answer_9013(p)),
        cn if cn.starts_with('2') && cn.len() == 4 => Some(hj212::encode::ack_9014(p)),
        // Requests and answers are a platform's business, not a receiver's.
        _ => None,
    }
}

/// CN=1012 (set the site's time, domain.md §3.6 [P]) to the station of `p`: `SystemTime` is
/// the gateway's local time, QN the same instant; the station answers 9011/9012.
fn set_time_frame(p: &Packet, now_ms: i64, tz: &TimeZone) -> String {
    let t = jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = tz.to_datetime(t);
    let system = hj212::format_time(dt);
    let set = Packet {
        qn: Some(format!("{system}{:03}", dt.subsec_nanosecond() / 1_000_000).into()),
        st: p.st.clone(),
        cn: "1012".into(),
        pw: p.pw.clone(),
        mn: p.mn.clone(),
        // The station's version, asking for an answer.
        flag: Some(Flag(p.flag.map_or(4, |f| f.0 & !0b11) | 1)),
        has_cp: true,
        cp: hj212::Cp {
            params: vec![("SystemTime".into(), system.into())],
            ..hj212::Cp::default()
        },
        ..Packet::default()
    };
    hj212::encode::encode(&set)
}

/// Waits until the store reports `ticket` durable; `false` after [`DURABLE_WAIT`].
async fn durable(sh: &Shared, ticket: u64) -> bool {
    let mut rx = sh.ingest.durable();
    if *rx.borrow() >= ticket {
        return true;
    }
    sh.ingest.commit_soon();
    tokio::time::timeout(DURABLE_WAIT, rx.wait_for(|d| *d >= ticket))
        .await
        .is_ok_and(|r| r.is_ok())
}
