//! The durable store: the queue between the pipeline and the writer, on disk.
//!
//! A reading handed to the store is committed to disk in a group commit (every
//! `commit_interval`, or sooner when a batch's worth is waiting), and only then reported
//! durable: an MQTT message is acknowledged to the broker after that, not before. A chunk is
//! deleted only when the writer acknowledges it (InfluxDB answered 2xx, or the batch was set
//! aside as permanently rejected). Past `max_size` the oldest chunks go, counted.
//!
//! It is built on redb (rust-crates.md §1.11): a copy-on-write B-tree whose commits are
//! checksummed and fsynced, so a power cut leaves either the old or the new state, never a torn
//! one. Two tables: `chunks` (sequence → line protocol) and `index` (sequence → points, bytes,
//! append time), so opening a large backlog reads the small index, not the data. The space of a
//! drained backlog is given back by compacting the file once the queue is empty.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use super::queue::{Batch, Depth, PointQueue};
use crate::clock::wall_ms;

const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
/// seq → (points, bytes, appended_ms)
const INDEX: TableDefinition<u64, (u64, u64, i64)> = TableDefinition::new("index");

/// Compact the file when the queue drains after this much has passed through it.
const COMPACT_AFTER_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("cannot open the store {path}: {message}")]
    Open { path: String, message: String },
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    seq: u64,
    points: u64,
    bytes: u64,
    appended_ms: i64,
}

/// Appends waiting for the next group commit.
#[derive(Default)]
struct Pending {
    /// (lines, points) in arrival order.
    appends: Vec<(Vec<u8>, usize)>,
    points: usize,
    oldest_ms: Option<i64>,
    /// The ticket the next commit will make durable.
    ticket: u64,
}

struct State {
    index: VecDeque<Meta>,
    points: u64,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
    /// Bytes acknowledged since the last compaction.
    drained_bytes: u64,
    pending: Pending,
    closing: bool,
    /// A source waits for durability: commit without waiting out the interval.
    commit_requested: bool,
    /// The chunks of the batch the writer holds (from `peek` until `ack`).
    inflight: Option<(u64, u64)>,
    /// Points evicted while in the writer's batch: dropped only if that batch is never
    /// acknowledged (the writer still holds a copy and may deliver it).
    evicted_inflight: u64,
}

/// Handles shared between the store and its committer thread.
struct Shared {
    /// Held for a whole group commit, so commits (the thread's, and `flush`) never interleave.
    commit_lock: Mutex<()>,
    db: Mutex<Database>,
    state: Mutex<State>,
    /// Wakes the committer early (a batch's worth waiting, or closing).
    wake: Condvar,
    /// The highest ticket known durable.
    durable: watch::Sender<u64>,
    notify: Notify,
    max_bytes: u64,
    batch_points: usize,
    commit_interval: Duration,
    path: PathBuf,
}

/// The durable store. Cheap to share behind an `Arc`; [`DiskStore::close`] commits what is
/// pending and stops the committer thread.
pub struct DiskStore {
    shared: Arc<Shared>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves data that is still consistent enough to
    // keep serving; taking the lock over beats stopping the gateway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiskStore {
    /// Opens (or creates) `dir/queue.redb` and starts the committer thread.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        batch_points: usize,
        commit_interval: Duration,
    ) -> Result<DiskStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            dir: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("queue.redb");
        let db = open_or_set_aside(&path)?;
        let (index, next_seq) = load_index(&db).map_err(|message| StoreError::Open {
            path: path.display().to_string(),
            message,
        })?;
        let points = index.iter().map(|m| m.points).sum();
        let bytes = index.iter().map(|m| m.bytes).sum();
        if points > 0 {
            info!(points, bytes, path = %path.display(), "store opened with a backlog from the previous run: it drains oldest first");
        }
        let (durable, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            commit_lock: Mutex::new(()),
            db: Mutex::new(db),
            state: Mutex::new(State {
                index,
                points,
                bytes,
                next_seq,
                dropped: 0,
                drained_bytes: 0,
                pending: Pending {
                    ticket: 1,
                    ..Pending::default()
                },
                closing: false,
                commit_requested: false,
                inflight: None,
                evicted_inflight: 0,
            }),
            wake: Condvar::new(),
            durable,
            notify: Notify::new(),
            max_bytes,
            batch_points: batch_points.max(1),
            commit_interval,
            path,
        });
        let s = shared.clone();
        let committer = std::thread::Builder::new()
            .name("dustgate-store".into())
            .spawn(move || s.run_committer())
            .map_err(|e| StoreError::Open {
                path: shared.path.display().to_string(),
                message: format!("cannot start the committer thread: {e}"),
            })?;
        Ok(DiskStore {
            shared,
            committer: Mutex::new(Some(committer)),
        })
    }

    /// Commits what is pending, stops the committer. Idempotent.
    pub fn close(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.closing = true;
        }
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.committer).take() {
            let _ = h.join();
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Commits what is pending now (at shutdown, before the writer's last drain).
    pub fn flush(&self) {
        if let Err(e) = self.shared.commit_pending() {
            error!(error = %e, "store commit failed at flush");
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens the database. A file redb reports as corrupted (and cannot repair) is moved aside —
/// kept, for recovery — and a new one started, so a damaged file never stops a site from
/// recording. Any other error (the file is in use by another dustgate, a disk error) stops
/// the start with a message: moving a live file aside would be worse.
fn open_or_set_aside(path: &Path) -> Result<Database, StoreError> {
    let fail = |message: String| StoreError::Open {
        path: path.display().to_string(),
        message,
    };
    match Database::create(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(why))) => {
            let aside = path.with_extension(format!("corrupt-{}", wall_ms()));
            error!(path = %path.display(), error = %why, moved_to = %aside.display(), "store file is corrupted: moving it aside and starting a new one");
            std::fs::rename(path, &aside).map_err(|e| {
                fail(format!(
                    "corrupted ({why}), and it cannot be moved aside: {e}"
                ))
            })?;
            Database::create(path).map_err(|e| fail(e.to_string()))
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(fail(
            "it is already open: is another dustgate running with the same [store].dir?".into(),
        )),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn load_index(db: &Database) -> Result<(VecDeque<Meta>, u64), String> {
    // Make sure both tables exist, so later read transactions can open them.
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        tx.open_table(CHUNKS).map_err(|e| e.to_string())?;
        tx.open_table(INDEX).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    let rtx = db.begin_read().map_err(|e| e.to_string())?;
    let t = rtx.open_table(INDEX).map_err(|e| e.to_string())?;
    let mut index = VecDeque::new();
    for item in t.iter().map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let (points, bytes, appended_ms) = v.value();
        index.push_back(Meta {
            seq: k.value(),
            points,
            bytes,
            appended_ms,
        });
    }
    let next_seq = index.back().map_or(1, |m| m.seq + 1);
    Ok((index, next_seq))
}

impl Shared {
    fn run_committer(self: Arc<Self>) {
        loop {
            let closing = {
                let st = lock(&self.state);
                let (st, _) = self
                    .wake
                    .wait_timeout_while(st, self.commit_interval, |st| {
                        !st.closing && !st.commit_requested && st.pending.points < self.batch_points
                    })
                    .unwrap_or_else(|p| p.into_inner());
                st.closing
            };
            if let Err(e) = self.commit_pending() {
                // The appends stay pending and are retried at the next interval; what is not
                // committed is not acknowledged, so nothing is lost unless the process dies.
                error!(error = %e, path = %self.path.display(), "store commit failed; retrying");
                std::thread::sleep(self.commit_interval.max(Duration::from_millis(100)));
            }
            if closing {
                // One more pass for anything appended while committing.
                let _ = self.commit_pending();
                return;
            }
        }
    }

    /// Writes the pending appends as chunks of at most `batch_points` points, drops the oldest
    /// chunks past `max_bytes`, all in one durable transaction; then publishes the ticket.
    fn commit_pending(&self) -> Result<(), String> {
        let _one_at_a_time = lock(&self.commit_lock);
        let (appends, ticket, first_seq, appended_ms) = {
            let mut st = lock(&self.state);
            st.commit_requested = false;
            if st.pending.appends.is_empty() {
                return Ok(());
            }
            let p = std::mem::take(&mut st.pending);
            st.pending.ticket = p.ticket + 1;
            (
                p.appends,
                p.ticket,
                st.next_seq,
                p.oldest_ms.unwrap_or_else(wall_ms),
            )
        };
        // Group the appends into chunks.
        let mut chunks: Vec<(Vec<u8>, u64)> = Vec::new();
        for (lines, points) in appends {
            match chunks.last_mut() {
                Some((buf, n)) if *n as usize + points <= self.batch_points => {
                    buf.extend_from_slice(&lines);
                    *n += points as u64;
                }
                _ => chunks.push((lines, points as u64)),
            }
        }
        let metas: Vec<Meta> = chunks
            .iter()
            .enumerate()
            .map(|(i, (buf, n))| Meta {
                seq: first_seq + i as u64,
                points: *n,
                bytes: buf.len() as u64,
                appended_ms,
            })
            .collect();
        let new_bytes: u64 = metas.iter().map(|m| m.bytes).sum();

        // Which chunks must go to stay under max_bytes: the oldest first, old ones before new
        // ones; the newest chunk is always kept.
        let (evict, dropped_points, skip_new) = {
            let st = lock(&self.state);
            let mut total = st.bytes + new_bytes;
            let mut evict = Vec::new();
            let mut points = 0;
            for m in &st.index {
                if total <= self.max_bytes {
                    break;
                }
                total -= m.bytes;
                points += m.points;
                evict.push(m.seq);
            }
            let mut skip_new = 0;
            while total > self.max_bytes && skip_new + 1 < metas.len() {
                total -= metas[skip_new].bytes;
                points += metas[skip_new].points;
                skip_new += 1;
            }
            (evict, points, skip_new)
        };
        let skipped_new_points: u64 = metas[..skip_new].iter().map(|m| m.points).sum();
        let metas = &metas[skip_new..];
        let chunks = &chunks[skip_new..];

        let db = lock(&self.db);
        let mut tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| e.to_string())?;
        {
            let mut c = tx.open_table(CHUNKS).map_err(|e| e.to_string())?;
            let mut ix = tx.open_table(INDEX).map_err(|e| e.to_string())?;
            for (m, (buf, _)) in metas.iter().zip(chunks) {
                c.insert(m.seq, buf.as_slice()).map_err(|e| e.to_string())?;
                ix.insert(m.seq, (m.points, m.bytes, m.appended_ms))
                    .map_err(|e| e.to_string())?;
            }
            for seq in &evict {
                c.remove(*seq).map_err(|e| e.to_string())?;
                ix.remove(*seq).map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        drop(db);

        let waiting = {
            let mut st = lock(&self.state);
            // The evicted chunks are the oldest: the front of the index.
            let mut evicted_from_index = 0;
            for _ in &evict {
                if let Some(m) = st.index.pop_front() {
                    st.points -= m.points;
                    st.bytes -= m.bytes;
                    if st.inflight.is_some_and(|(a, b)| (a..=b).contains(&m.seq)) {
                        st.evicted_inflight += m.points;
                    } else {
                        evicted_from_index += m.points;
                    }
                }
            }
            // Old chunks not in the writer's hands, and new ones that never fit.
            st.dropped += evicted_from_index + skipped_new_points;
            for m in metas {
                st.index.push_back(*m);
                st.points += m.points;
                st.bytes += m.bytes;
            }
            st.next_seq = metas.last().map_or(st.next_seq, |m| m.seq + 1);
            st.points
        };
        if dropped_points > 0 {
            warn!(
                dropped = dropped_points,
                max_size = self.max_bytes,
                "store full: oldest points dropped"
            );
        }
        self.durable.send_replace(ticket);
        if waiting >= self.batch_points as u64 {
            self.notify.notify_one();
        }
        Ok(())
    }

    fn compact_if_drained(&self) {
        {
            let st = lock(&self.state);
            if !st.index.is_empty() || st.drained_bytes < COMPACT_AFTER_BYTES {
                return;
            }
        }
        let mut db = lock(&self.db);
        match db.compact() {
            Ok(_) => {
                lock(&self.state).drained_bytes = 0;
                info!(path = %self.path.display(), "store drained: file compacted");
            }
            Err(e) => {
                warn!(error = %e, "store compaction failed (will retry after the next drain)")
            }
        }
    }
}

impl PointQueue for DiskStore {
    fn append(&self, lines: Vec<u8>, points: usize) -> u64 {
        let mut st = lock(&self.shared.state);
        let ticket = st.pending.ticket;
        if points == 0 {
            return ticket;
        }
        st.pending.points += points;
        st.pending.oldest_ms.get_or_insert_with(wall_ms);
        st.pending.appends.push((lines, points));
        if st.pending.points >= self.shared.batch_points {
            self.shared.wake.notify_one();
        }
        ticket
    }

    fn peek(&self, max_points: usize) -> Option<Batch> {
        let seqs: Vec<Meta> = {
            let mut st = lock(&self.shared.state);
            // A new peek without an ack: the previous batch was abandoned, so what was evicted
            // from it is dropped after all.
            st.dropped += std::mem::take(&mut st.evicted_inflight);
            let mut take = Vec::new();
            let mut points = 0;
            for m in &st.index {
                if points > 0 && points + m.points > max_points as u64 {
                    break;
                }
                points += m.points;
                take.push(*m);
            }
            st.inflight = take.first().zip(take.last()).map(|(a, b)| (a.seq, b.seq));
            take
        };
        let first = seqs.first()?;
        let last = seqs.last()?;
        let db = lock(&self.shared.db);
        let read = || -> Result<Vec<u8>, String> {
            let rtx = db.begin_read().map_err(|e| e.to_string())?;
            let t = rtx.open_table(CHUNKS).map_err(|e| e.to_string())?;
            let mut body = Vec::with_capacity(seqs.iter().map(|m| m.bytes as usize).sum());
            for item in t.range(first.seq..=last.seq).map_err(|e| e.to_string())? {
                let (_, v) = item.map_err(|e| e.to_string())?;
                body.extend_from_slice(v.value());
            }
            Ok(body)
        };
        match read() {
            Ok(body) => Some(Batch {
                last_seq: last.seq,
                points: seqs.iter().map(|m| m.points as usize).sum(),
                body,
            }),
            Err(e) => {
                error!(error = %e, "store read failed");
                None
            }
        }
    }

    fn ack(&self, last_seq: u64) {
        let result = (|| -> Result<(), String> {
            let db = lock(&self.shared.db);
            let mut tx = db.begin_write().map_err(|e| e.to_string())?;
            // One fsync per delivered batch: cheap beside the HTTP round trip, and it keeps
            // redb free to reuse the freed pages.
            tx.set_durability(Durability::Immediate)
                .map_err(|e| e.to_string())?;
            {
                let mut c = tx.open_table(CHUNKS).map_err(|e| e.to_string())?;
                c.retain_in(..=last_seq, |_, _| false)
                    .map_err(|e| e.to_string())?;
                let mut ix = tx.open_table(INDEX).map_err(|e| e.to_string())?;
                ix.retain_in(..=last_seq, |_, _| false)
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            error!(error = %e, "store delete failed: the batch will be sent again");
            return;
        }
        {
            let mut st = lock(&self.shared.state);
            // The writer delivered (or set aside) its whole batch, evicted chunks included.
            st.evicted_inflight = 0;
            st.inflight = None;
            while st.index.front().is_some_and(|m| m.seq <= last_seq) {
                if let Some(m) = st.index.pop_front() {
                    st.points -= m.points;
                    st.bytes -= m.bytes;
                    st.drained_bytes += m.bytes;
                }
            }
        }
        self.shared.compact_if_drained();
    }

    fn depth(&self) -> Depth {
        let st = lock(&self.shared.state);
        Depth {
            points: st.points + st.pending.points as u64,
            bytes: st.bytes
                + st.pending
                    .appends
                    .iter()
                    .map(|(l, _)| l.len() as u64)
                    .sum::<u64>(),
            oldest_append_ms: st
                .index
                .front()
                .map(|m| m.appended_ms)
                .or(st.pending.oldest_ms),
        }
    }

    fn dropped_points(&self) -> u64 {
        lock(&self.shared.state).dropped
    }

    fn notifier(&self) -> &Notify {
        &self.shared.notify
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    fn commit_soon(&self) {
        let mut st = lock(&self.shared.state);
        if !st.commit_requested && !st.pending.appends.is_empty() {
            st.commit_requested = true;
            self.shared.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dustgate-store-{name}-{}-{}",
            std::process::id(),
            crate::rand::Jitter::new().next_f64().to_bits()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn wait_durable(s: &DiskStore, ticket: u64) {
        let rx = s.durable();
        for _ in 0..500 {
            if *rx.borrow() >= ticket {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("ticket {ticket} never became durable");
    }

    #[test]
    fn appends_are_durable_then_survive_a_reopen_and_drain_oldest_first() {
        let d = dir("reopen");
        {
            let s = DiskStore::open(&d, 1 << 20, 100, Duration::from_millis(20)).unwrap();
            let t1 = s.append(b"a 1\n".to_vec(), 1);
            let t2 = s.append(b"b 2\nc 3\n".to_vec(), 2);
            assert!(t2 >= t1);
            wait_durable(&s, t2);
            assert_eq!(s.depth().points, 3);
            // A second gateway on the same store is refused, and the file is left alone.
            let again = DiskStore::open(&d, 1 << 20, 100, Duration::from_millis(20));
            assert!(matches!(again, Err(StoreError::Open { .. })));
        }
        let s = DiskStore::open(&d, 1 << 20, 100, Duration::from_millis(20)).unwrap();
        assert_eq!(s.depth().points, 3);
        let b = s.peek(100).unwrap();
        assert_eq!(b.body, b"a 1\nb 2\nc 3\n");
        s.ack(b.last_seq);
        assert_eq!(s.depth().points, 0);
        drop(s);
        let s = DiskStore::open(&d, 1 << 20, 100, Duration::from_millis(20)).unwrap();
        assert_eq!(s.depth().points, 0, "acknowledged chunks stay deleted");
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn full_store_drops_the_oldest_and_counts_exactly() {
        let d = dir("full");
        let s = DiskStore::open(&d, 100, 1, Duration::from_millis(10)).unwrap();
        let mut last = 0;
        for i in 0..30 {
            // 10 bytes each; batch_points = 1 makes every append its own chunk.
            last = s.append(format!("m v={i:05}\n").into_bytes(), 1);
        }
        wait_durable(&s, last);
        let depth = s.depth();
        assert_eq!(depth.points + s.dropped_points(), 30);
        assert!(depth.bytes <= 100, "{depth:?}");
        assert_eq!(depth.points, 10);
        // The newest are kept.
        let b = s.peek(100).unwrap();
        assert!(String::from_utf8_lossy(&b.body).starts_with("m v=00020\n"));
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn points_evicted_from_the_writers_batch_count_as_dropped_only_if_never_delivered() {
        let d = dir("inflight");
        let s = DiskStore::open(&d, 30, 1, Duration::from_millis(10)).unwrap();
        let t = s.append(b"m v=00000\n".to_vec(), 1);
        wait_durable(&s, t);
        let held = s.peek(10).unwrap();
        // The outage goes on: the writer's batch is pushed out of the store.
        let mut last = 0;
        for i in 1..=5 {
            last = s.append(format!("m v={i:05}\n").into_bytes(), 1);
        }
        wait_durable(&s, last);
        assert_eq!(
            s.dropped_points(),
            2,
            "3 chunks fit; 2 older ones than those went, 1 of them the writer's"
        );
        // The writer delivers what it held: it was not lost after all.
        s.ack(held.last_seq);
        assert_eq!(s.dropped_points(), 2);
        // Another batch is peeked, pushed out, and abandoned (a new peek without an ack).
        let _abandoned = s.peek(1).unwrap();
        for i in 6..=8 {
            last = s.append(format!("m v={i:05}\n").into_bytes(), 1);
        }
        wait_durable(&s, last);
        let before = s.dropped_points();
        let _next = s.peek(1).unwrap();
        assert_eq!(
            s.dropped_points(),
            before + 1,
            "the abandoned batch's evicted chunk counts now"
        );
        assert_eq!(s.depth().points + s.dropped_points() + 1, 9);
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn draining_gives_the_space_back() {
        let d = dir("compact");
        let s = DiskStore::open(&d, 1 << 30, 5000, Duration::from_millis(10)).unwrap();
        let line = vec![b'x'; 999];
        let mut last = 0;
        for _ in 0..20 {
            let mut chunk = Vec::new();
            for _ in 0..1000 {
                chunk.extend_from_slice(&line);
                chunk.push(b'\n');
            }
            last = s.append(chunk, 1000);
        }
        wait_durable(&s, last);
        let full = std::fs::metadata(s.path()).unwrap().len();
        assert!(full > 20_000_000, "{full}");
        while let Some(b) = s.peek(5000) {
            s.ack(b.last_seq);
        }
        let after = std::fs::metadata(s.path()).unwrap().len();
        assert!(
            after < full / 10,
            "file {full} → {after} bytes after draining"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}
