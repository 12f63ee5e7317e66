//! One platform's backlog (补传): every frame a platform has not yet received, on disk, until
//! it is delivered or `keep` expires it (counted). A frame is kept as its template (the
//! packet without a QN): each send gets a new QN, and its DataTime stays the original
//! (hj212-field.md §3.4 [S]).
//!
//! - **Durable**: an entry is committed (fsynced) before [`Backlog::push`] returns, and
//!   deleted only when the link reports it delivered, so neither a restart nor a kill -9
//!   loses or repeats a delivered frame.
//! - **Order**: live frames (queued since the connection came up) first, in order; then the
//!   backlog, newest first, so that after a long outage the platform has the present before
//!   the past (hj212-field.md §4.3 [S]: "live first, backlog newest-first").
//! - **Checked**: each record carries a CRC-32C; a record that fails it is never sent
//!   (counted as corrupt, deleted).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::hj212::segment::{self, Packet};
use crate::outputs::store::crc::crc32c;

const FRAMES: TableDefinition<u64, &[u8]> = TableDefinition::new("frames");
/// The task's own state (open periods), committed with the frames it makes.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Period frames as made, for the platform's history requests (CN=2051/2061/2031 with
/// BeginTime/EndTime): key (CN as a number, period start ms), a record like a frame's.
const ARCHIVE: TableDefinition<(u16, i64), &[u8]> = TableDefinition::new("archive");

/// redb's cache: a backlog is written once and read once (see `store::CACHE_BYTES`).
const CACHE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    #[error("the backlog file: {0}")]
    Db(#[from] redb::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for BacklogError {
            fn from(e: $t) -> Self {
                BacklogError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A frame to send: its backlog id, its template, and whether it is a resend (queued before
/// the connection came up: `RF=1` under 2025).
#[derive(Debug, Clone)]
pub struct Due {
    pub id: u64,
    pub template: Packet<'static>,
    pub resend: bool,
}

pub struct Backlog {
    db: Database,
    /// id → when it was queued (ms): what picking and expiry need, without reading records.
    index: BTreeMap<u64, i64>,
    next_id: u64,
    corrupt: u64,
}

/// A record: when it was queued (8 bytes, little-endian), the CRC-32C of both parts (4),
/// then the template's segment text.
fn record(queued_ms: i64, seg: &str) -> Vec<u8> {
    let t = queued_ms.to_le_bytes();
    let crc = crc32c(&[&t, seg.as_bytes()]);
    let mut v = Vec::with_capacity(12 + seg.len());
    v.extend_from_slice(&t);
    v.extend_from_slice(&crc.to_le_bytes());
    v.extend_from_slice(seg.as_bytes());
    v
}

/// (queued ms, segment) of a record whose check holds.
fn unpack(v: &[u8]) -> Option<(i64, &str)> {
    let t: [u8; 8] = v.get(..8)?.try_into().ok()?;
    let crc = u32::from_le_bytes(v.get(8..12)?.try_into().ok()?);
    let seg = v.get(12..)?;
    (crc32c(&[&t, seg]) == crc)
        .then(|| {
            std::str::from_utf8(seg)
                .ok()
                .map(|s| (i64::from_le_bytes(t), s))
        })
        .flatten()
}

/// What a platform's backlog holds, read without changing it (`dustgate store status`):
/// `Ok(None)` when a running gateway has it open.
pub fn inspect(path: &Path) -> Result<Option<(usize, Option<i64>)>, BacklogError> {
    let db = match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(None),
        Err(e) => return Err(BacklogError::Db(e.into())),
    };
    let rx = db.begin_read()?;
    let t = match rx.open_table(FRAMES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some((0, None))),
        Err(e) => return Err(e.into()),
    };
    let (mut frames, mut oldest) = (0, None::<i64>);
    for row in t.iter()? {
        let (_, v) = row?;
        if let Some((queued, _)) = unpack(v.value()) {
            frames += 1;
            oldest = Some(oldest.map_or(queued, |o| o.min(queued)));
        }
    }
    Ok(Some((frames, oldest)))
}

impl Backlog {
    /// Opens (or creates) the backlog at `path` and reads its index.
    pub fn open(path: &Path) -> Result<Backlog, BacklogError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let mut index = BTreeMap::new();
        let mut corrupt = Vec::new();
        {
            let tx = db.begin_write()?;
            tx.open_table(FRAMES)?;
            tx.open_table(STATE)?;
            tx.open_table(ARCHIVE)?;
            tx.commit()?;
            let rx = db.begin_read()?;
            let t = rx.open_table(FRAMES)?;
            for row in t.iter()? {
                let (k, v) = row?;
                match unpack(v.value()) {
                    Some((queued, _)) => {
                        index.insert(k.value(), queued);
                    }
                    None => corrupt.push(k.value()),
                }
            }
        }
        let next_id = index.keys().next_back().map_or(1, |k| k + 1);
        let mut b = Backlog {
            db,
            index,
            next_id,
            corrupt: 0,
        };
        for id in corrupt {
            b.drop_corrupt(id)?;
        }
        Ok(b)
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// When the oldest waiting frame was queued (ms).
    pub fn oldest(&self) -> Option<i64> {
        self.index.values().min().copied()
    }

    /// Records that failed their check, deleted and never sent.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    fn commit(
        &self,
        f: impl FnOnce(&mut redb::Table<u64, &[u8]>) -> Result<(), BacklogError>,
    ) -> Result<(), BacklogError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(FRAMES)?;
            f(&mut t)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn drop_corrupt(&mut self, id: u64) -> Result<(), BacklogError> {
        self.commit(|t| {
            t.remove(id)?;
            Ok(())
        })?;
        self.index.remove(&id);
        self.corrupt += 1;
        tracing::error!(
            id,
            "an HJ 212 backlog record failed its check: deleted, never sent"
        );
        Ok(())
    }

    /// Queues a frame (its QN is ignored: each send gets its own); durable on return.
    pub fn push(&mut self, now: i64, template: &Packet<'_>) -> Result<u64, BacklogError> {
        Ok(self
            .push_all(now, std::slice::from_ref(template), None)?
            .start)
    }

    /// Queues frames and sets a state value (`(key, bytes)`), all in one commit: durable on
    /// return, and after a crash either all of it is there or none. The ids given, in order.
    pub fn push_all(
        &mut self,
        now: i64,
        templates: &[Packet<'_>],
        state: Option<(&str, &[u8])>,
    ) -> Result<std::ops::Range<u64>, BacklogError> {
        self.push_archived(now, templates, state, &[])
    }

    /// As [`Backlog::push_all`], and keeps `archive` (period frames: CN, period start) for
    /// history requests, in the same commit.
    pub fn push_archived(
        &mut self,
        now: i64,
        templates: &[Packet<'_>],
        state: Option<(&str, &[u8])>,
        archive: &[(u16, i64, &Packet<'_>)],
    ) -> Result<std::ops::Range<u64>, BacklogError> {
        let seg = |template: &Packet<'_>| {
            let mut p = template.clone();
            p.qn = None;
            record(now, &crate::hj212::encode::segment(&p))
        };
        let recs: Vec<Vec<u8>> = templates.iter().map(seg).collect();
        let first = self.next_id;
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(FRAMES)?;
            for (i, rec) in recs.iter().enumerate() {
                t.insert(first + i as u64, rec.as_slice())?;
            }
            if let Some((key, bytes)) = state {
                tx.open_table(STATE)?.insert(key, bytes)?;
            }
            if !archive.is_empty() {
                let mut a = tx.open_table(ARCHIVE)?;
                for (cn, start, p) in archive {
                    a.insert((*cn, *start), seg(p).as_slice())?;
                }
            }
        }
        tx.commit()?;
        for i in 0..recs.len() as u64 {
            self.index.insert(first + i, now);
        }
        self.next_id += recs.len() as u64;
        Ok(first..self.next_id)
    }

    /// Whether frame `id` still waits.
    pub fn holds(&self, id: u64) -> bool {
        self.index.contains_key(&id)
    }

    /// The archived period frames of `cn` whose period starts in [begin, end], oldest first
    /// (a record that fails its check is left out).
    pub fn archived(
        &self,
        cn: u16,
        begin: i64,
        end: i64,
    ) -> Result<Vec<Packet<'static>>, BacklogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(ARCHIVE)?;
        let mut out = Vec::new();
        for row in t.range((cn, begin)..=(cn, end))? {
            let (_, v) = row?;
            if let Some(p) = unpack(v.value()).and_then(|(_, seg)| segment::parse(seg).ok()) {
                out.push(p.into_owned());
            }
        }
        Ok(out)
    }

    /// Deletes archived frames kept longer than `keep_ms` (by when they were made).
    pub fn expire_archive(&mut self, now: i64, keep_ms: i64) -> Result<u64, BacklogError> {
        let old: Vec<(u16, i64)> = {
            let rx = self.db.begin_read()?;
            let t = rx.open_table(ARCHIVE)?;
            let mut old = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let made = unpack(v.value()).map(|(t, _)| t);
                if made.is_none_or(|t| now.saturating_sub(t) > keep_ms) {
                    old.push(k.value());
                }
            }
            old
        };
        if old.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut a = tx.open_table(ARCHIVE)?;
            for k in &old {
                a.remove(*k)?;
            }
        }
        tx.commit()?;
        Ok(old.len() as u64)
    }

    /// A state value set with [`Backlog::push_all`].
    pub fn state(&self, key: &str) -> Result<Option<Vec<u8>>, BacklogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(STATE)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// The platform has these frames: deleted, in one commit (one fsync for a batch of answers).
    pub fn delivered_many(&mut self, ids: &[u64]) -> Result<(), BacklogError> {
        let held: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.index.contains_key(id))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        self.commit(|t| {
            for id in &held {
                t.remove(*id)?;
            }
            Ok(())
        })?;
        for id in &held {
            self.index.remove(id);
        }
        Ok(())
    }

    /// The platform has frame `id`: it is deleted.
    pub fn delivered(&mut self, id: u64) -> Result<(), BacklogError> {
        if self.index.contains_key(&id) {
            self.commit(|t| {
                t.remove(id)?;
                Ok(())
            })?;
            self.index.remove(&id);
        }
        Ok(())
    }

    /// Deletes what was queued more than `keep_ms` before `now`; how many (counted by the
    /// caller as expired: never delivered).
    pub fn expire(&mut self, now: i64, keep_ms: i64) -> Result<u64, BacklogError> {
        let old: Vec<u64> = self
            .index
            .iter()
            .filter(|(_, q)| now.saturating_sub(**q) > keep_ms)
            .map(|(id, _)| *id)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        self.commit(|t| {
            for id in &old {
                t.remove(*id)?;
            }
            Ok(())
        })?;
        for id in &old {
            self.index.remove(id);
        }
        Ok(old.len() as u64)
    }

    /// The id the next frame queued will get: a connection notes it, and what it queues from
    /// then on is live.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The next frame to send that is not in `busy` (in flight): the oldest of those with an
    /// id from `live_from` (queued since the connect), else the newest before it. Ranges of the
    /// index, not a scan: a week's backlog is drained in its order at the same cost a frame.
    pub fn next(&mut self, live_from: u64, busy: &[u64]) -> Result<Option<Due>, BacklogError> {
        loop {
            let free = |id: &&u64| !busy.contains(id);
            let live = self.index.range(live_from..).map(|(id, _)| id).find(free);
            let pick = match live {
                Some(id) => Some((*id, false)),
                None => self
                    .index
                    .range(..live_from)
                    .rev()
                    .map(|(id, _)| id)
                    .find(free)
                    .map(|id| (*id, true)),
            };
            let Some((id, resend)) = pick else {
                return Ok(None);
            };
            let rx = self.db.begin_read()?;
            let t = rx.open_table(FRAMES)?;
            let rec = t.get(id)?.map(|v| v.value().to_vec());
            drop(t);
            drop(rx);
            let template = rec
                .as_deref()
                .and_then(unpack)
                .and_then(|(_, seg)| segment::parse(seg).ok().map(Packet::into_owned));
            match template {
                Some(template) => {
                    return Ok(Some(Due {
                        id,
                        template,
                        resend,
                    }));
                }
                None => self.drop_corrupt(id)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of its own (removed at the end of the test).
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "dustgate-backlog-{name}-{}-{}",
                std::process::id(),
                crate::rand::Jitter::new().next_f64().to_bits()
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("dir");
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn frame(minute: u32) -> Packet<'static> {
        let seg = format!(
            "QN=20261201103000000;ST=39;CN=2051;PW=123456;MN=MN01;Flag=5;CP=&&DataTime=202612011{minute:03}00;a34002-Avg=80.000,a34002-Flag=N&&"
        );
        segment::parse(&seg).expect("frame").into_owned()
    }

    fn data_time(p: &Packet<'_>) -> String {
        p.param("DataTime").expect("DataTime").to_string()
    }

    #[test]
    fn frames_survive_a_reopen_until_delivered_live_first_then_newest_first() {
        let dir = Dir::new("order");
        let path = dir.0.join("city.redb");
        let (a, b, c, d);
        {
            let mut bl = Backlog::open(&path).expect("open");
            a = bl.push(1_000, &frame(0)).expect("push");
            b = bl.push(2_000, &frame(10)).expect("push");
            c = bl.push(3_000, &frame(20)).expect("push");
            // Dropped without a close: what a kill -9 leaves (every push was committed).
        }
        let mut bl = Backlog::open(&path).expect("reopen");
        assert_eq!((bl.len(), bl.oldest()), (3, Some(1_000)));
        d = bl.push(10_000, &frame(30)).expect("push");
        assert!(d > c, "ids keep growing after a reopen");
        // Connected before d was queued: d is live; a, b, c are the backlog, newest first.
        let mut order = Vec::new();
        let mut busy = Vec::new();
        while let Some(due) = bl.next(d, &busy).expect("next") {
            assert_eq!(due.template.qn, None, "a QN is given at each send");
            order.push((due.id, due.resend, data_time(&due.template)));
            busy.push(due.id);
        }
        assert_eq!(
            order,
            [
                (d, false, "20261201103000".to_string()),
                (c, true, "20261201102000".to_string()),
                (b, true, "20261201101000".to_string()),
                (a, true, "20261201100000".to_string()),
            ]
        );
        bl.delivered(c).expect("delivered");
        bl.delivered(c).expect("twice is nothing");
        drop(bl);
        let mut bl = Backlog::open(&path).expect("reopen");
        assert_eq!(bl.len(), 3);
        assert_eq!(bl.expire(2_000 + 3_600_000, 3_600_000).expect("expire"), 1);
        let left: Vec<u64> = std::iter::from_fn(|| {
            let due = bl.next(0, &[]).expect("next")?;
            bl.delivered(due.id).expect("delivered");
            Some(due.id)
        })
        .collect();
        assert_eq!(left, [b, d]);
        assert!(bl.is_empty());
    }

    #[test]
    fn a_damaged_record_is_never_sent() {
        let dir = Dir::new("damaged");
        let path = dir.0.join("city.redb");
        {
            let mut bl = Backlog::open(&path).expect("open");
            bl.push(1_000, &frame(0)).expect("push");
            let id = bl.push(2_000, &frame(10)).expect("push");
            // One byte of the value changed (a bit flip on disk, as redb hands it back).
            let mut rec = record(2_000, &crate::hj212::encode::segment(&frame(10)));
            let last = rec.len() - 5;
            rec[last] ^= 0x01;
            bl.commit(|t| {
                t.insert(id, rec.as_slice())?;
                Ok(())
            })
            .expect("overwrite");
        }
        let mut bl = Backlog::open(&path).expect("reopen");
        assert_eq!((bl.len(), bl.corrupt()), (1, 1));
        let due = bl.next(0, &[]).expect("next").expect("one");
        assert_eq!(data_time(&due.template), "20261201100000");
        assert!(unpack(&record(5, "x")).is_some());
        assert!(unpack(b"short").is_none());
    }
}
