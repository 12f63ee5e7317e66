//! Without `[influx]`, series go to daily line-protocol files under `[store].dir/series/`,
//! one per local day of the site: `2026-11-26.lp`. They can be loaded into InfluxDB later
//! (`influx -import`, or `curl --data-binary @file` to `/write`).

use std::io::Write as _;
use std::path::PathBuf;

use super::sink::{SendOutcome, Sink};

pub struct FileSink {
    dir: PathBuf,
    tz: jiff::tz::TimeZone,
}

impl FileSink {
    pub fn new(dir: PathBuf, tz: jiff::tz::TimeZone) -> Self {
        Self { dir, tz }
    }

    /// The file written to now.
    pub fn current_file(&self) -> PathBuf {
        let day = self.tz.to_datetime(jiff::Timestamp::now()).date();
        self.dir.join(format!("{day}.lp"))
    }

    fn write(&self, body: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.current_file())?;
        f.write_all(body)?;
        // Accepted means on disk.
        f.sync_data()
    }
}

impl Sink for FileSink {
    async fn send(&mut self, body: &[u8]) -> SendOutcome {
        match super::blocking(|| self.write(body)) {
            Ok(()) => SendOutcome::Accepted,
            Err(e) => SendOutcome::Retry {
                after: None,
                busy: false,
                reason: format!("cannot write {}: {e}", self.current_file().display()),
            },
        }
    }

    fn describe(&self) -> String {
        format!("daily line-protocol files in {}", self.dir.display())
    }
}
