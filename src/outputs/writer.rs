//! The writer: takes batches from the queue, sends them to the sink, and deletes them only
//! when they were accepted or set aside as permanently rejected.
//!
//! Batches go out when `batch_size` points wait or every `flush_interval`. A batch that cannot
//! be delivered now (network, 408, 429, 5xx) is held and retried with capped, jittered backoff
//! (or after the server's Retry-After) while new points keep queueing behind it. A 413 splits
//! the batch in halves until the parts fit; other 4xx go to the dead-letter file.
//!
//! A missing destination (InfluxDB 404: database or bucket not found) is an operator's mistake,
//! not the batch's: the batch is held in the store and retried with the same backoff, the writer
//! health shows it (status page, `/metrics`), and it is logged once a minute while it lasts,
//! and once when it is over.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::blocking;
use super::dead_letter::DeadLetter;
use super::queue::{Batch, PointQueue};
use super::sink::{SendOutcome, Sink};
use crate::backoff::Backoff;
use crate::clock::wall_ms;
use crate::health::WriterHealth;

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retry_max: Duration,
    /// The share of each retry wait drawn at random (0: none; 0.5: the upper half).
    pub retry_jitter: f64,
    /// How long to keep trying to deliver what is queued once shutdown is signalled.
    pub shutdown_grace: Duration,
}

pub struct Writer<S: Sink> {
    queue: Arc<dyn PointQueue>,
    sink: S,
    opts: WriterOptions,
    dead_letter: DeadLetter,
    health: Arc<WriterHealth>,
    /// Lowered after a 413, so later batches fit.
    batch_limit: usize,
    /// 500 ms doubling to `retry_max`, jittered by `retry_jitter`.
    backoff: Backoff,
    failing_since: Option<i64>,
    /// While the destination is missing: when that was last logged.
    missing_logged: Option<tokio::time::Instant>,
    /// The last batch acknowledged to the queue: peeking it again means the queue could not
    /// delete it (a full disk), and the writer backs off instead of resending it at once.
    acked: Option<u64>,
}

/// A batch accepted after this long means a busy server: the writer pauses (see [`pace_after`]).
/// Well above what a full batch takes to upload over 4G (5,000 points gzipped are ~70 KB: 0.6 s
/// at 1 Mbit/s), so that a slow link's drain is not halved; a database that takes 2 s to accept
/// a batch is struggling.
const SLOW_ANSWER: Duration = Duration::from_secs(2);
/// The longest pause after a slow answer.
const MAX_PACE: Duration = Duration::from_secs(30);

/// The pause before the next batch when the last one took `took` to be accepted: as long
/// again (so a slow server gets at most half of this writer's time), none when it was quick.
fn pace_after(took: Duration) -> Option<Duration> {
    (took >= SLOW_ANSWER).then(|| took.min(MAX_PACE))
}

/// How often a missing destination is logged while it lasts.
const MISSING_LOG_EVERY: Duration = Duration::from_secs(60);

/// The result of trying to deliver one batch.
enum Delivery {
    /// Every line accepted or set aside: the batch can be deleted.
    Done,
    /// Not now; lines from `resume_at` on are still owed.
    Later {
        after: Option<Duration>,
        reason: String,
        resume_at: Vec<(usize, usize)>,
        /// The destination (database, bucket) is missing.
        missing: bool,
    },
}

impl<S: Sink> Writer<S> {
    pub fn new(
        queue: Arc<dyn PointQueue>,
        sink: S,
        opts: WriterOptions,
        dead_letter: DeadLetter,
        health: Arc<WriterHealth>,
    ) -> Self {
        let batch_limit = opts.batch_size;
        let backoff =
            Backoff::new(Duration::from_millis(500), opts.retry_max).jittered(opts.retry_jitter);
        Self {
            queue,
            sink,
            opts,
            dead_letter,
            health,
            batch_limit,
            backoff,
            failing_since: None,
            missing_logged: None,
            acked: None,
        }
    }

    fn wh(&self) -> &WriterHealth {
        &self.health
    }

    /// Runs until shutdown; then tries to deliver what is left within the grace period.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        info!(sink = %self.sink.describe(), batch_size = self.opts.batch_size, "writer started");
        tokio::select! {
            _ = self.sink.prepare() => {}
            _ = shutdown.changed() => {}
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            {
                let notified = self.queue.notifier().notified();
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(self.opts.flush_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if !self.drain(Some(&mut shutdown)).await {
                break;
            }
        }
        let grace = self.opts.shutdown_grace;
        if tokio::time::timeout(grace, self.drain(None)).await.is_err() {
            // Fall through: counted below.
        }
        let left = self.queue.depth().points;
        if left > 0 {
            error!(
                points = left,
                "shutting down with points not delivered (kept in the store for the next start)"
            );
        }
        info!("writer stopped");
    }

    /// Sends batches until the queue is empty. With a shutdown receiver, waits out failures
    /// (returning `false` if shutdown comes meanwhile); without one, gives up at the first
    /// failure.
    async fn drain(&mut self, mut shutdown: Option<&mut watch::Receiver<bool>>) -> bool {
        self.backoff.reset();
        // The batch being delivered, and which of its line ranges are still owed.
        let mut current: Option<(Batch, Vec<(usize, usize)>)> = None;
        loop {
            let (batch, owed) = match current.take() {
                Some(c) => c,
                None => match blocking(|| self.queue.peek(self.batch_limit)) {
                    None => return true,
                    Some(b) if self.acked.is_some_and(|a| b.last_seq <= a) => {
                        // The queue could not delete what was delivered (a full disk): back
                        // off rather than send the same batch again at once.
                        let wait = self.backoff.next_delay();
                        let Some(rx) = shutdown.as_deref_mut() else {
                            return false;
                        };
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = rx.changed() => return false,
                        }
                        let len = b.body.len();
                        (b, vec![(0, len)])
                    }
                    Some(b) => {
                        let len = b.body.len();
                        (b, vec![(0, len)])
                    }
                },
            };
            let sent_at = tokio::time::Instant::now();
            match self.deliver(&batch, owed).await {
                Delivery::Done => {
                    blocking(|| self.queue.ack(batch.last_seq));
                    if self.acked.is_none_or(|a| batch.last_seq > a) {
                        self.backoff.reset();
                    }
                    self.acked = Some(batch.last_seq);
                    if let Some(since) = self.failing_since.take() {
                        info!(sink = %self.sink.describe(), outage_s = (wall_ms() - since) / 1000, "writes succeed again");
                    }
                    if let Some(pause) = pace_after(sent_at.elapsed()) {
                        // A slow answer is a busy server (a bureau's database taking back a
                        // city's backlogs): give it as long again before the next batch.
                        self.wh().paced.fetch_add(1, Relaxed);
                        let Some(rx) = shutdown.as_deref_mut() else {
                            continue;
                        };
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = rx.changed() => return false,
                        }
                    }
                }
                Delivery::Later {
                    after,
                    reason,
                    resume_at,
                    missing,
                } => {
                    self.wh().retries.fetch_add(1, Relaxed);
                    if let Ok(mut e) = self.wh().last_error.lock() {
                        *e = Some(reason.clone());
                    }
                    // A server's Retry-After counts as an attempt too.
                    let backoff = self.backoff.next_delay();
                    let wait = after.unwrap_or(backoff);
                    if missing {
                        self.failing_since.get_or_insert_with(wall_ms);
                        self.destination_missing(&reason, wait);
                    } else if self.failing_since.is_none() {
                        self.failing_since = Some(wall_ms());
                        warn!(sink = %self.sink.describe(), reason = %reason, retry_in_ms = wait.as_millis() as u64, "write failed; holding points and retrying");
                    } else {
                        tracing::debug!(reason = %reason, retry_in_ms = wait.as_millis() as u64, "write failed again");
                    }
                    let Some(rx) = shutdown.as_deref_mut() else {
                        return false;
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = rx.changed() => return false,
                    }
                    current = Some((batch, resume_at));
                }
            }
        }
    }

    /// Delivers the owed line ranges of a batch, splitting on 413.
    async fn deliver(&mut self, batch: &Batch, owed: Vec<(usize, usize)>) -> Delivery {
        // A stack of byte ranges, each a run of whole lines; the front of the batch on top.
        let mut stack: Vec<(usize, usize)> = owed.into_iter().rev().collect();
        while let Some((start, end)) = stack.pop() {
            let part = &batch.body[start..end];
            let lines = count_lines(part);
            let outcome = self.sink.send(part).await;
            if !matches!(
                outcome,
                SendOutcome::DestinationMissing { .. } | SendOutcome::Retry { .. }
            ) {
                // The server answered about the batch: the destination is there.
                self.destination_present();
            }
            match outcome {
                SendOutcome::Accepted => {
                    self.wh().written_points.fetch_add(lines as u64, Relaxed);
                    self.wh().batches.fetch_add(1, Relaxed);
                    self.wh().last_success_ms.store(wall_ms(), Relaxed);
                }
                SendOutcome::TooLarge if lines > 1 => {
                    let mid = split_point(part) + start;
                    self.batch_limit = (lines / 2).max(1);
                    warn!(
                        lines,
                        new_batch_limit = self.batch_limit,
                        "413 payload too large: splitting the batch"
                    );
                    stack.push((mid, end));
                    stack.push((start, mid));
                }
                SendOutcome::TooLarge => {
                    self.set_aside(
                        part,
                        lines,
                        "HTTP 413: a single line is larger than the server accepts",
                    );
                }
                SendOutcome::Rejected { reason, .. } => {
                    self.set_aside(part, lines, &reason);
                }
                SendOutcome::Retry {
                    after,
                    reason,
                    busy,
                } => {
                    if busy {
                        self.wh().busy_answers.fetch_add(1, Relaxed);
                    }
                    stack.push((start, end));
                    stack.reverse();
                    return Delivery::Later {
                        after,
                        reason,
                        resume_at: stack,
                        missing: false,
                    };
                }
                SendOutcome::DestinationMissing { reason } => {
                    stack.push((start, end));
                    stack.reverse();
                    return Delivery::Later {
                        after: None,
                        reason,
                        resume_at: stack,
                        missing: true,
                    };
                }
            }
        }
        Delivery::Done
    }

    /// The destination answered "not found": shown in the health, logged when it starts and
    /// then at most once per [`MISSING_LOG_EVERY`] (not once per batch or retry).
    fn destination_missing(&mut self, reason: &str, retry_in: Duration) {
        let now = tokio::time::Instant::now();
        let since = match self.wh().destination_missing_since() {
            Some(t) => t,
            None => {
                let t = wall_ms();
                self.wh().destination_missing_since_ms.store(t, Relaxed);
                t
            }
        };
        let due = self
            .missing_logged
            .is_none_or(|at| now.duration_since(at) >= MISSING_LOG_EVERY);
        if due {
            self.missing_logged = Some(now);
            error!(
                sink = %self.sink.describe(),
                reason = %reason,
                missing_s = (wall_ms() - since) / 1000,
                queued_points = self.queue.depth().points,
                retry_in_ms = retry_in.as_millis() as u64,
                "destination missing (create the InfluxDB database or bucket; with v1, create_database = true lets the gateway do it): holding points in the store and retrying"
            );
        } else {
            tracing::debug!(reason = %reason, retry_in_ms = retry_in.as_millis() as u64, "destination still missing");
        }
    }

    /// The server answered about a batch: if the destination was missing, it is there now.
    fn destination_present(&mut self) {
        if let Some(since) = self.wh().destination_missing_since() {
            self.wh().destination_missing_since_ms.store(0, Relaxed);
            self.missing_logged = None;
            // This line says it; "writes succeed again" would say it twice.
            self.failing_since = None;
            info!(
                sink = %self.sink.describe(),
                missing_s = (wall_ms() - since) / 1000,
                queued_points = self.queue.depth().points,
                "destination is there again: delivering the held points"
            );
        }
    }

    fn set_aside(&self, part: &[u8], lines: usize, reason: &str) {
        match blocking(|| self.dead_letter.write(part, reason)) {
            Ok(path) => {
                self.wh()
                    .dead_letter_points
                    .fetch_add(lines as u64, Relaxed);
                error!(points = lines, reason = %reason, file = %path.display(), "batch rejected by the server: set aside in the dead-letter file");
            }
            Err(e) => {
                // Nowhere left to keep them: count them as dropped, loudly.
                self.wh()
                    .dead_letter_points
                    .fetch_add(lines as u64, Relaxed);
                self.wh().lost_points.fetch_add(lines as u64, Relaxed);
                error!(points = lines, reason = %reason, error = %e, dir = %self.dead_letter.dir().display(), "batch rejected and the dead-letter file cannot be written: points lost");
            }
        }
    }
}

fn count_lines(part: &[u8]) -> usize {
    part.iter()
        .filter(|&&b| b == b'\n')
        .count()
        .max(usize::from(!part.is_empty()))
}

/// The byte offset just after the newline nearest the middle of `part` (which holds at least
/// two lines).
fn split_point(part: &[u8]) -> usize {
    let mid = part.len() / 2;
    let after = part[mid..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| mid + i + 1);
    let before = part[..mid].iter().rposition(|&b| b == b'\n').map(|i| i + 1);
    match (before, after) {
        (Some(b), _) if b > 0 && b < part.len() => b,
        (_, Some(a)) if a < part.len() => a,
        (Some(b), _) => b,
        _ => part.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::outputs::queue::MemoryQueue;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[test]
    fn a_slow_answer_gets_as_long_again_before_the_next_batch() {
        assert_eq!(pace_after(Duration::from_millis(120)), None);
        assert_eq!(pace_after(Duration::from_millis(1999)), None);
        assert_eq!(
            pace_after(Duration::from_millis(2500)),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(pace_after(Duration::from_secs(300)), Some(MAX_PACE));
    }

    /// A sink that answers from a script and records what it was sent: a unit test of the
    /// writer's state machine (the integration tests use a real InfluxDB).
    struct Script {
        answers: VecDeque<SendOutcome>,
        sent: Arc<Mutex<Vec<(tokio::time::Instant, String)>>>,
    }

    impl Sink for Script {
        async fn send(&mut self, body: &[u8]) -> SendOutcome {
            self.sent.lock().unwrap().push((
                tokio::time::Instant::now(),
                String::from_utf8_lossy(body).into_owned(),
            ));
            self.answers.pop_front().unwrap_or(SendOutcome::Accepted)
        }
        fn describe(&self) -> String {
            "script".into()
        }
    }

    struct Run {
        sent: Vec<(tokio::time::Instant, String)>,
        health: Arc<WriterHealth>,
        dead_letter: String,
        left: u64,
    }

    /// Queues `lines` (one chunk each), runs the writer until the queue is empty, stops it.
    async fn run(lines: &[&str], answers: Vec<SendOutcome>) -> Run {
        run_for(lines, answers, Duration::from_secs(100)).await
    }

    /// As [`run`], waiting at most `max_wait` (paused time) for the queue to empty.
    async fn run_for(lines: &[&str], answers: Vec<SendOutcome>, max_wait: Duration) -> Run {
        let queue: Arc<dyn PointQueue> = Arc::new(MemoryQueue::new(1 << 20, 100));
        for l in lines {
            queue.append(format!("{l}\n").into_bytes(), 1);
        }
        let sent = Arc::new(Mutex::new(Vec::new()));
        let dir = std::env::temp_dir().join(format!(
            "dustgate-writer-test-{}-{}",
            std::process::id(),
            crate::rand::Jitter::new().next_f64().to_bits()
        ));
        let health = Arc::new(WriterHealth::default());
        let w = Writer::new(
            queue.clone(),
            Script {
                answers: answers.into(),
                sent: sent.clone(),
            },
            WriterOptions {
                batch_size: 100,
                flush_interval: Duration::from_millis(100),
                retry_max: Duration::from_secs(30),
                retry_jitter: 0.5,
                shutdown_grace: Duration::from_secs(1),
            },
            DeadLetter::new(dir.clone(), "influx"),
            health.clone(),
        );
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(w.run(rx));
        for _ in 0..max_wait.as_millis() / 10 {
            if queue.depth().points == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        task.await.unwrap();
        let dead_letter = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let sent = sent.lock().unwrap().clone();
        Run {
            sent,
            health,
            dead_letter,
            left: queue.depth().points,
        }
    }

    /// A queue whose deletes fail until `heal` is set (a full disk).
    struct StuckAcks {
        inner: MemoryQueue,
        heal: std::sync::atomic::AtomicBool,
    }

    impl PointQueue for StuckAcks {
        fn append(&self, lines: Vec<u8>, points: usize) -> u64 {
            self.inner.append(lines, points)
        }
        fn peek(&self, max_points: usize) -> Option<Batch> {
            self.inner.peek(max_points)
        }
        fn ack(&self, last_seq: u64) {
            if self.heal.load(Relaxed) {
                self.inner.ack(last_seq)
            }
        }
        fn depth(&self) -> crate::outputs::queue::Depth {
            self.inner.depth()
        }
        fn dropped_points(&self) -> u64 {
            self.inner.dropped_points()
        }
        fn notifier(&self) -> &tokio::sync::Notify {
            self.inner.notifier()
        }
        fn durable(&self) -> watch::Receiver<u64> {
            self.inner.durable()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_the_queue_cannot_delete_is_resent_with_backoff_and_shutdown_completes() {
        let q = Arc::new(StuckAcks {
            inner: MemoryQueue::new(1 << 20, 100),
            heal: false.into(),
        });
        q.append(b"a 1\n".to_vec(), 1);
        let queue: Arc<dyn PointQueue> = q.clone();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let dir =
            std::env::temp_dir().join(format!("dustgate-writer-stuck-{}", std::process::id()));
        let w = Writer::new(
            queue,
            Script {
                answers: VecDeque::new(),
                sent: sent.clone(),
            },
            WriterOptions {
                batch_size: 100,
                flush_interval: Duration::from_millis(100),
                retry_max: Duration::from_secs(30),
                retry_jitter: 0.5,
                shutdown_grace: Duration::from_secs(1),
            },
            DeadLetter::new(dir.clone(), "influx"),
            Arc::new(WriterHealth::default()),
        );
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(w.run(rx));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let n = sent.lock().unwrap().len();
        // Backoff from 0.5 s doubling to 30 s: a handful of sends in a minute, not one per
        // few milliseconds.
        assert!((2..=12).contains(&n), "{n} sends in 60 s");
        q.heal.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(
            q.depth().points,
            0,
            "delivered and deleted once the queue heals"
        );
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the writer stops")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_the_batch_resent() {
        let r = run(
            &["a 1", "b 2"],
            vec![SendOutcome::Retry {
                after: Some(Duration::from_secs(7)),
                busy: false,
                reason: "HTTP 503".into(),
            }],
        )
        .await;
        assert_eq!(r.sent.len(), 2);
        assert_eq!(r.sent[0].1, "a 1\nb 2\n");
        assert_eq!(r.sent[1].1, r.sent[0].1);
        assert!(r.sent[1].0 - r.sent[0].0 >= Duration::from_secs(7));
        assert_eq!(r.left, 0);
        assert_eq!(r.health.retries.load(Relaxed), 1);
        assert_eq!(r.health.written_points.load(Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_while_failing() {
        let fail = || SendOutcome::Retry {
            after: None,
            busy: false,
            reason: "connection refused".into(),
        };
        let r = run(&["a 1"], vec![fail(), fail(), fail(), fail()]).await;
        assert_eq!(r.sent.len(), 5);
        let gaps: Vec<Duration> = r.sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
        // 500 ms doubling, jittered into [half, full].
        for (i, g) in gaps.iter().enumerate() {
            let full = Duration::from_millis(500 * (1 << i));
            assert!(*g >= full / 2 && *g <= full, "gap {i}: {g:?}");
        }
        assert_eq!(r.left, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_splits_until_parts_fit_and_a_lone_line_is_set_aside() {
        use SendOutcome::*;
        let r = run(
            &["l1 1", "l2 2", "l3 3", "l4 4"],
            vec![TooLarge, Accepted, TooLarge, Accepted, TooLarge],
        )
        .await;
        let bodies: Vec<&str> = r.sent.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(
            bodies,
            [
                "l1 1\nl2 2\nl3 3\nl4 4\n",
                "l1 1\nl2 2\n",
                "l3 3\nl4 4\n",
                "l3 3\n",
                "l4 4\n"
            ]
        );
        assert_eq!(r.left, 0);
        assert_eq!(r.health.written_points.load(Relaxed), 3);
        assert_eq!(r.health.dead_letter_points.load(Relaxed), 1);
        assert!(
            r.dead_letter.contains("413") && r.dead_letter.ends_with("l4 4\n"),
            "{}",
            r.dead_letter
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_inside_a_split_resends_only_what_is_owed() {
        use SendOutcome::*;
        let r = run(
            &["l1 1", "l2 2", "l3 3", "l4 4"],
            vec![
                TooLarge,
                Accepted,
                Retry {
                    after: Some(Duration::from_secs(1)),
                    busy: false,
                    reason: "HTTP 500".into(),
                },
                Accepted,
            ],
        )
        .await;
        let bodies: Vec<&str> = r.sent.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(
            bodies,
            [
                "l1 1\nl2 2\nl3 3\nl4 4\n",
                "l1 1\nl2 2\n",
                "l3 3\nl4 4\n",
                "l3 3\nl4 4\n"
            ]
        );
        assert_eq!(r.health.written_points.load(Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_rejection_is_set_aside_and_the_next_batch_goes() {
        let r = run(
            &["x 1"],
            vec![SendOutcome::Rejected {
                status: 400,
                reason: "HTTP 400: field type conflict".into(),
            }],
        )
        .await;
        assert_eq!(r.left, 0);
        assert!(
            r.dead_letter
                .contains("rejected: HTTP 400: field type conflict\nx 1\n"),
            "{}",
            r.dead_letter
        );
        assert_eq!(r.health.dead_letter_points.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_destination_holds_the_batch_until_it_is_there() {
        let missing = || SendOutcome::DestinationMissing {
            reason: "HTTP 404: database not found".into(),
        };
        let r = run(&["a 1", "b 2"], vec![missing(), missing(), missing()]).await;
        // Held and sent again (with backoff), never set aside; then delivered whole.
        assert_eq!(r.sent.len(), 4);
        assert!(r.sent.iter().all(|(_, b)| b == "a 1\nb 2\n"));
        assert!(r.sent[3].0 - r.sent[2].0 >= Duration::from_secs(1));
        assert_eq!(r.dead_letter, "");
        assert_eq!(r.health.dead_letter_points.load(Relaxed), 0);
        assert_eq!(r.health.written_points.load(Relaxed), 2);
        assert_eq!(r.health.retries.load(Relaxed), 3);
        assert_eq!(
            r.health.destination_missing_since(),
            None,
            "cleared once written"
        );
        assert_eq!(r.left, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_destination_is_missing_it_shows_and_nothing_is_set_aside() {
        let answers = (0..10_000)
            .map(|_| SendOutcome::DestinationMissing {
                reason: "HTTP 404: bucket \"dust\" not found".into(),
            })
            .collect();
        let r = run(&["a 1"], answers).await;
        assert_eq!(r.left, 1, "kept in the store");
        assert_eq!(r.dead_letter, "");
        assert!(r.health.destination_missing_since().is_some());
        assert!(
            r.health
                .last_error
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|e| e.contains("not found"))
        );
        // Backoff capped at retry_max (30 s here): over 100 s, a handful of tries, not hundreds.
        assert!((4..=14).contains(&r.sent.len()), "{} tries", r.sent.len());
    }

    /// Wants nothing, but asks to be asked about every event (see [`logged`]).
    struct AskEveryTime;

    impl tracing::Subscriber for AskEveryTime {
        fn register_callsite(
            &self,
            _: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            tracing::subscriber::Interest::sometimes()
        }
        fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
            Some(tracing::level_filters::LevelFilter::TRACE)
        }
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            false
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// The log lines `f` emits at WARN and above (and the "there again" INFO), as text.
    fn logged<F: std::future::Future<Output = ()>>(f: F) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // A callsite first reached by another test thread while no subscriber wanted it is
        // cached as "never"; rebuilding the cache below races with a registration in flight
        // (seen: 0 lines). A global subscriber that answers "sometimes" to every callsite
        // means none is ever cached as never: each event asks the scoped one.
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(AskEveryTime);
        });
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Callsite interest is cached process-wide: a callsite first seen by another test
            // thread (no subscriber, or one that does not want INFO) may be cached as "never";
            // recompute it now that this subscriber exists, or the test is flaky in parallel.
            tracing::callsite::rebuild_interest_cache();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(f)
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_missing_destination_is_logged_once_a_minute_not_per_retry() {
        let span = Arc::new(Mutex::new(Duration::ZERO));
        let spanned = span.clone();
        let log = logged(async move {
            // 14 answers 404 (retry_max 30 s: after the first few, a try every 15–30 s, so
            // 2¼ to 4½ minutes in all), then it is there.
            let mut answers: Vec<SendOutcome> = (0..14)
                .map(|_| SendOutcome::DestinationMissing {
                    reason: "HTTP 404: database not found".into(),
                })
                .collect();
            answers.push(SendOutcome::Accepted);
            let r = run_for(&["a 1"], answers, Duration::from_secs(900)).await;
            assert_eq!(r.left, 0);
            *spanned.lock().unwrap() = r.sent[r.sent.len() - 1].0 - r.sent[0].0;
        });
        let span = *span.lock().unwrap();
        assert!(span >= Duration::from_secs(120), "{span:?}");
        let missing = log
            .lines()
            .filter(|l| l.contains("destination missing"))
            .count();
        let there = log
            .lines()
            .filter(|l| l.contains("destination is there again"))
            .count();
        // Once when it starts, then at most once a minute: not once per try (14).
        let most = 1 + span.as_secs() / 60;
        assert!(
            missing >= 2 && missing as u64 <= most,
            "{missing} lines in {span:?} (at most {most}):\n{log}"
        );
        assert_eq!(there, 1, "{log}");
        assert!(!log.contains("write failed"), "{log}");
        assert!(
            !log.contains("writes succeed again"),
            "said once, not twice: {log}"
        );
    }

    #[test]
    fn splits_at_line_boundaries() {
        let p = b"a 1\nb 2\nc 3\nd 4\n";
        let m = split_point(p);
        assert!(p[..m].ends_with(b"\n"));
        assert_eq!(count_lines(&p[..m]) + count_lines(&p[m..]), 4);
        assert!(count_lines(&p[..m]) >= 1 && count_lines(&p[m..]) >= 1);
        let two = b"aaaaaaaaaaaaaaaaaa 1\nb 2\n";
        let m = split_point(two);
        assert_eq!(
            (&two[..m], &two[m..]),
            (&b"aaaaaaaaaaaaaaaaaa 1\n"[..], &b"b 2\n"[..])
        );
    }
}
