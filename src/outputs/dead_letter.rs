//! Batches that InfluxDB will never accept are set aside here, not dropped: one file per UTC
//! day under `[store].dir/dead-letter/`, each batch preceded by a comment saying when and why.
//! The lines are valid line protocol, so once the cause is fixed (a missing database, a field
//! type conflict) they can be replayed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub struct DeadLetter {
    dir: PathBuf,
    name: &'static str,
}

impl DeadLetter {
    pub fn new(dir: PathBuf, name: &'static str) -> Self {
        Self { dir, name }
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Appends a rejected batch; returns the file written.
    pub fn write(&self, body: &[u8], reason: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let now = jiff::Timestamp::now();
        let path = self
            .dir
            .join(format!("{}-{}.lp", self.name, now.strftime("%Y-%m-%d")));
        let mut f = open_locked(&path)?;
        let reason = reason.replace(['\n', '\r'], " ");
        writeln!(f, "# {now} rejected: {reason}")?;
        f.write_all(body)?;
        if !body.ends_with(b"\n") {
            f.write_all(b"\n")?;
        }
        f.sync_data()?;
        Ok(path)
    }
}

/// Opens `path` for appending under an exclusive lock, making sure the file locked is still
/// the one at `path`: `dustgate replay` rewrites a file by renaming a new one over it while
/// holding the lock, and a batch appended to the replaced file would be lost.
fn open_locked(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.lock()?;
        let same = match std::fs::metadata(path) {
            Ok(m) => m.ino() == f.metadata()?.ino(),
            Err(_) => false,
        };
        if same {
            return Ok(f);
        }
    }
}

/// One rejected batch as a dead-letter file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// The comment before it: when and why it was rejected.
    pub header: String,
    pub body: Vec<u8>,
}

impl Letter {
    pub fn lines(&self) -> usize {
        self.body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    }
}

/// Splits a dead-letter file into its batches: each starts at a `# ... rejected: ...` line.
/// Lines before the first header (none are written so) form a batch of their own.
pub fn parse(file: &[u8]) -> Vec<Letter> {
    let mut out: Vec<Letter> = Vec::new();
    for line in file.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"# ") {
            out.push(Letter {
                header: String::from_utf8_lossy(line).trim_end().to_string(),
                body: Vec::new(),
            });
            continue;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match out.last_mut() {
            Some(l) => l.body.extend_from_slice(line),
            None => out.push(Letter {
                header: String::new(),
                body: line.to_vec(),
            }),
        }
    }
    for l in &mut out {
        if !l.body.is_empty() && !l.body.ends_with(b"\n") {
            l.body.push(b'\n');
        }
    }
    out.retain(|l| !l.body.is_empty());
    out
}

/// The file's text for `letters` (the inverse of [`parse`]).
pub fn render(letters: &[Letter]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in letters {
        if !l.header.is_empty() {
            out.extend_from_slice(l.header.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&l.body);
    }
    out
}

/// A dead-letter file opened for replay: locked against the writers until it is dropped.
pub struct Locked {
    path: PathBuf,
    file: std::fs::File,
}

impl Locked {
    pub fn open(path: &Path) -> std::io::Result<Locked> {
        let file = open_locked(path)?;
        Ok(Locked {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }

    /// Puts `rest` in place of the file (atomically: written beside it, synced, renamed over
    /// it), or removes the file when nothing is left. Writers waiting on the lock then find
    /// the new file (see [`open_locked`]).
    pub fn replace(self, rest: &[Letter]) -> std::io::Result<()> {
        if rest.is_empty() {
            std::fs::remove_file(&self.path)?;
        } else {
            let tmp = self.path.with_extension("lp.tmp");
            {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&render(rest))?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &self.path)?;
        }
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        drop(self.file);
        Ok(())
    }
}

/// Appends replayed batches to `dir/replayed/<file name>`, for the record.
pub fn keep_replayed(path: &Path, done: &[Letter], note: &str) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = dir.join("replayed");
    std::fs::create_dir_all(&dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))?;
    for l in done {
        writeln!(f, "{} | {note}", l.header)?;
        f.write_all(&l.body)?;
    }
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_splits_into_its_batches_and_back() {
        let file = b"# 2026-12-01T01:00:00Z rejected: HTTP 400: field type conflict\nair,site=s pm10=1i 1\nair,site=s pm10=2i 2\n# 2026-12-01T02:00:00Z rejected: HTTP 400: x\nair,site=s pm10=3 3\n";
        let letters = parse(file);
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].lines(), 2);
        assert!(letters[0].header.contains("field type conflict"));
        assert_eq!(letters[1].body, b"air,site=s pm10=3 3\n");
        assert_eq!(render(&letters), file.to_vec());
    }

    #[test]
    fn a_last_line_without_newline_and_blank_lines_are_kept_right() {
        let letters = parse(b"\n# t rejected: r\n\nm f=1 1");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].body, b"m f=1 1\n");
        assert!(parse(b"").is_empty());
    }

    #[test]
    fn a_replaced_file_takes_the_next_write() {
        let dir = std::env::temp_dir().join(format!("dl-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dl = DeadLetter::new(dir.clone(), "influx");
        let path = dl.write(b"m f=1 1\n", "first").expect("write");
        let locked = Locked::open(&path).expect("lock");
        let letters = parse(&locked.read().expect("read"));
        locked.replace(&letters[..0]).expect("replace");
        assert!(!path.exists());
        dl.write(b"m f=2 2\n", "second").expect("write again");
        let again = parse(&std::fs::read(&path).expect("the new file"));
        assert_eq!(again.len(), 1);
        assert!(again[0].header.contains("second"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
