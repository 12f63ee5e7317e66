//! A damaged `queue.redb` (issue 11, items 3 and 6): 30 corruptions of a real store file —
//! truncations, overwritten header bytes, random byte flips at fixed seeds, zeroed pages — each
//! opened with `DiskStore::open`. No panic may escape; every one either opens with its data
//! (and delivers only chunks exactly as they were appended) or is moved aside, kept, and a
//! fresh store opens in its place.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dustgate::outputs::queue::PointQueue;
use dustgate::outputs::store::DiskStore;

const CHUNKS: usize = 40;
const POINTS: usize = 10;

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(format!("store-damage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn chunk(i: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for j in 0..POINTS {
        b.extend_from_slice(
            format!("dust,device=d{i:02} pm10={}i {}\n", i * 100 + j, j).as_bytes(),
        );
    }
    b
}

/// A real store file: 40 chunks of 10 points, committed, one batch of them delivered.
fn make_store(dir: &Path) -> Vec<u8> {
    let s = DiskStore::open(dir, 1 << 30, POINTS, Duration::from_millis(5)).expect("open");
    let mut t = 0;
    for i in 0..CHUNKS {
        t = s.append(chunk(i), POINTS);
        s.flush();
    }
    let rx = s.durable();
    assert!(*rx.borrow() >= t);
    // One delivered, so the file has freed pages too.
    let b = s.peek(POINTS).expect("a batch");
    s.ack(b.last_seq);
    s.close();
    drop(s);
    std::fs::read(dir.join("queue.redb")).expect("read the store")
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn corruptions(good: &[u8]) -> Vec<(String, Vec<u8>)> {
    let len = good.len();
    let page = 4096;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 100, 512, page, len / 2, len - 1, len - page] {
        out.push((format!("truncated to {cut}"), good[..cut].to_vec()));
    }
    let header = |name: &str, range: std::ops::Range<usize>, byte: Option<u8>, seed: u64| {
        let mut f = good.to_vec();
        let mut r = Rng(seed);
        for b in &mut f[range] {
            *b = byte.unwrap_or_else(|| r.next() as u8);
        }
        (name.to_string(), f)
    };
    out.push(header("magic zeroed", 0..9, Some(0), 0));
    out.push(header("header 0..16 0xff", 0..16, Some(0xff), 0));
    out.push(header("header 9..64 random", 9..64, None, 7));
    out.push(header("header 64..192 random", 64..192, None, 11));
    out.push(header("header 0..512 zeroed", 0..512, Some(0), 0));
    out.push(header("header 192..512 0xff", 192..512, Some(0xff), 0));
    out.push(header("header 8..40 random", 8..40, None, 13));
    for seed in 1..=10u64 {
        let mut f = good.to_vec();
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let flips = 1 + r.below(20);
        for _ in 0..flips {
            let at = r.below(len);
            f[at] ^= 1 << r.below(8);
        }
        out.push((format!("{flips} random bit flips, seed {seed}"), f));
    }
    let pages = len / page;
    let zero = |name: &str, which: &[usize]| {
        let mut f = good.to_vec();
        for &p in which {
            let end = ((p + 1) * page).min(len);
            for b in &mut f[p * page..end] {
                *b = 0;
            }
        }
        (name.to_string(), f)
    };
    out.push(zero("page 0 zeroed", &[0]));
    out.push(zero("page 1 zeroed", &[1]));
    out.push(zero("page 2 zeroed", &[2]));
    out.push(zero("middle page zeroed", &[pages / 2]));
    out.push(zero("last page zeroed", &[pages - 1]));
    out.push(zero(
        "every page but the first zeroed",
        &(1..pages).collect::<Vec<_>>(),
    ));
    out
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Panicked,
    Refused,
    OpenedWithData { delivered: usize, set_aside: u64 },
    MovedAside,
}

fn try_one(dir: &Path, file: &[u8], valid: &HashSet<Vec<u8>>) -> Outcome {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("queue.redb"), file).expect("write");
    let opened = catch_unwind(AssertUnwindSafe(|| {
        DiskStore::open(dir, 1 << 30, POINTS, Duration::from_millis(5))
    }));
    let s = match opened {
        Err(_) => return Outcome::Panicked,
        Ok(Err(e)) => {
            eprintln!("    refused: {e}");
            return Outcome::Refused;
        }
        Ok(Ok(s)) => s,
    };
    let aside: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("queue.redb.damaged-")
        })
        .collect();
    // Drain it: every chunk delivered must be one that was appended, byte for byte.
    let drained = catch_unwind(AssertUnwindSafe(|| {
        let mut delivered = 0;
        for _ in 0..2 * CHUNKS {
            let Some(b) = s.peek(POINTS) else { break };
            assert!(
                valid.contains(&b.body),
                "a wrong chunk was delivered: {:?}",
                String::from_utf8_lossy(&b.body)
            );
            delivered += 1;
            s.ack(b.last_seq);
        }
        // And it still takes new data.
        let t = s.append(chunk(99), POINTS);
        s.flush();
        assert!(*s.durable().borrow() >= t, "the store takes new data");
        delivered
    }));
    let delivered = match drained {
        Ok(n) => n,
        Err(_) => return Outcome::Panicked,
    };
    let set_aside = s.corrupt_chunks();
    drop(s);
    if aside.is_empty() {
        Outcome::OpenedWithData {
            delivered,
            set_aside,
        }
    } else {
        assert_eq!(delivered, 0, "a fresh store starts empty");
        Outcome::MovedAside
    }
}

#[test]
fn thirty_corruptions_of_queue_redb_never_panic_never_refuse_never_deliver_a_wrong_chunk() {
    let base = scratch("thirty");
    let good = make_store(&base.join("good"));
    let valid: HashSet<Vec<u8>> = (0..=99).map(chunk).collect();
    let cases = corruptions(&good);
    assert_eq!(cases.len(), 30);
    let (mut opened, mut aside, mut panicked, mut refused) = (0, 0, 0, 0);
    for (i, (name, file)) in cases.iter().enumerate() {
        eprintln!("{i:2} {name} ...");
        let o = try_one(&base.join(format!("c{i:02}")), file, &valid);
        eprintln!("{i:2} {name}: {o:?}");
        match o {
            Outcome::Panicked => panicked += 1,
            Outcome::Refused => refused += 1,
            Outcome::OpenedWithData { .. } => opened += 1,
            Outcome::MovedAside => aside += 1,
        }
    }
    eprintln!(
        "30 corruptions: {opened} opened, {aside} moved aside, {refused} refused, {panicked} panics escaped"
    );
    assert_eq!((panicked, refused), (0, 0));
    let _ = std::fs::remove_dir_all(&base);
}
