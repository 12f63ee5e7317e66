//! Batches that InfluxDB will never accept are set aside here, not dropped: one file per UTC
//! day under `[store].dir/dead-letter/`, each batch preceded by a comment saying when and why.
//! The lines are valid line protocol, so once the cause is fixed (a missing database, a field
//! type conflict) they can be replayed.

use std::io::Write as _;
use std::path::PathBuf;

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
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
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
