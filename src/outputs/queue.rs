//! The queue between the pipeline and the writer, with acknowledgement-driven deletion.
//!
//! Points are appended already encoded as line protocol, in chunks (one per poll). The
//! writer peeks a batch from the front, and the batch is deleted (`ack`) only once the sink
//! has accepted it or it was set aside as permanently rejected. This is the shape the durable
//! store implements too; the in-memory queue here is bounded, and past its bound the oldest
//! chunks go, counted.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::{Notify, watch};

/// Size of what is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub points: u64,
    pub bytes: u64,
    /// Acquisition-side age marker: when the oldest waiting chunk was appended (ms since epoch).
    pub oldest_append_ms: Option<i64>,
}

impl Depth {
    /// Uplink lag: how long the oldest waiting point has waited, in seconds (0 when empty).
    /// A real delay, so measured on the wall clock, as the store stamps its appends (not on
    /// the site clock of a demo replay).
    pub fn lag_s(&self) -> f64 {
        self.oldest_append_ms.map_or(0.0, |t| {
            (crate::clock::wall_ms() - t).max(0) as f64 / 1000.0
        })
    }
}

/// A run of chunks from the front of the queue, concatenated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Sequence number of the last chunk in the batch; `ack(last_seq)` deletes the batch.
    pub last_seq: u64,
    pub points: usize,
    pub body: Vec<u8>,
}

/// What the writer needs from a queue.
pub trait PointQueue: Send + Sync {
    /// Adds encoded lines (`points` of them). Returns a ticket: the append is durable once
    /// [`PointQueue::durable`] reaches it.
    fn append(&self, lines: Vec<u8>, points: usize) -> u64;
    /// The oldest chunks, up to `max_points` points (at least one chunk).
    fn peek(&self, max_points: usize) -> Option<Batch>;
    /// Deletes every chunk up to and including `last_seq`.
    fn ack(&self, last_seq: u64);
    fn depth(&self) -> Depth;
    /// Points deleted on purpose because the queue was full.
    fn dropped_points(&self) -> u64;
    /// Woken when at least `notify_at` points are waiting.
    fn notifier(&self) -> &Notify;
    /// The highest ticket whose append is durable.
    fn durable(&self) -> watch::Receiver<u64>;
    /// Someone waits for durability (an MQTT message to acknowledge): commit soon rather than
    /// at the end of the interval.
    fn commit_soon(&self) {}
}

struct Chunk {
    seq: u64,
    points: usize,
    appended_ms: i64,
    lines: Vec<u8>,
}

struct Inner {
    chunks: VecDeque<Chunk>,
    next_seq: u64,
    points: u64,
    bytes: u64,
    dropped: u64,
}

/// A bounded in-memory queue: the writer's unit tests use it; the gateway uses the durable
/// [`super::store::DiskStore`]. "Durable" here means no more than "queued".
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    max_bytes: u64,
    notify_at: usize,
    notify: Notify,
    durable: watch::Sender<u64>,
}

impl MemoryQueue {
    /// `max_bytes` bounds the encoded size held; `notify_at` is the writer's batch size.
    pub fn new(max_bytes: u64, notify_at: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                chunks: VecDeque::new(),
                next_seq: 1,
                points: 0,
                bytes: 0,
                dropped: 0,
            }),
            max_bytes,
            notify_at,
            notify: Notify::new(),
            durable: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // matters more than losing the queue, so a poisoned lock is simply taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PointQueue for MemoryQueue {
    fn append(&self, lines: Vec<u8>, points: usize) -> u64 {
        let mut g = self.lock();
        if points == 0 {
            return g.next_seq - 1;
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        g.points += points as u64;
        g.bytes += lines.len() as u64;
        g.chunks.push_back(Chunk {
            seq,
            points,
            appended_ms: crate::clock::wall_ms(),
            lines,
        });
        // The writer may be holding a copy of the oldest chunks in a batch it is retrying;
        // those points are counted as dropped here even if that batch is delivered later, so
        // the counter errs on the side of too many, never too few.
        let mut dropped_now = 0u64;
        while g.bytes > self.max_bytes && g.chunks.len() > 1 {
            if let Some(old) = g.chunks.pop_front() {
                g.points -= old.points as u64;
                g.bytes -= old.lines.len() as u64;
                g.dropped += old.points as u64;
                dropped_now += old.points as u64;
            }
        }
        let waiting = g.points;
        drop(g);
        if dropped_now > 0 {
            tracing::warn!(
                dropped = dropped_now,
                max_bytes = self.max_bytes,
                "buffer full: oldest points dropped"
            );
        }
        if waiting >= self.notify_at as u64 {
            self.notify.notify_one();
        }
        self.durable.send_replace(seq);
        seq
    }

    fn peek(&self, max_points: usize) -> Option<Batch> {
        let g = self.lock();
        let mut body = Vec::new();
        let mut points = 0;
        let mut last_seq = 0;
        for c in &g.chunks {
            if points > 0 && points + c.points > max_points {
                break;
            }
            body.extend_from_slice(&c.lines);
            points += c.points;
            last_seq = c.seq;
        }
        (points > 0).then_some(Batch {
            last_seq,
            points,
            body,
        })
    }

    fn ack(&self, last_seq: u64) {
        let mut g = self.lock();
        while g.chunks.front().is_some_and(|c| c.seq <= last_seq) {
            if let Some(c) = g.chunks.pop_front() {
                g.points -= c.points as u64;
                g.bytes -= c.lines.len() as u64;
            }
        }
        if g.chunks.is_empty() {
            // Give the memory of a drained backlog back.
            g.chunks.shrink_to(64);
        }
    }

    fn depth(&self) -> Depth {
        let g = self.lock();
        Depth {
            points: g.points,
            bytes: g.bytes,
            oldest_append_ms: g.chunks.front().map(|c| c.appended_ms),
        }
    }

    fn dropped_points(&self) -> u64 {
        self.lock().dropped
    }

    fn notifier(&self) -> &Notify {
        &self.notify
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_ack_and_bounded_drop() {
        let q = MemoryQueue::new(28, 1000);
        q.append(b"a 1\nb 2\n".to_vec(), 2);
        q.append(b"c 3\n".to_vec(), 1);
        let b = q.peek(2).unwrap();
        assert_eq!((b.points, b.body.as_slice()), (2, &b"a 1\nb 2\n"[..]));
        // A batch never splits a chunk, but always takes at least one.
        assert_eq!(q.peek(1).unwrap().points, 2);
        assert_eq!(q.peek(10).unwrap().points, 3);
        q.ack(b.last_seq);
        assert_eq!(q.depth().points, 1);
        // Over 28 bytes: the oldest go, counted.
        q.append(b"d 4444444444\n".to_vec(), 1);
        q.append(b"e 5555555555\n".to_vec(), 1);
        assert_eq!(q.dropped_points(), 1);
        assert_eq!(q.depth().points, 2);
        assert_eq!(&q.peek(10).unwrap().body[..1], b"d");
        // Acking a batch whose chunks were already dropped is harmless.
        q.ack(1);
        assert_eq!(q.depth().points, 2);
    }
}
