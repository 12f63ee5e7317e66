//! `dustgate store status` (what the store holds, per destination) and `dustgate replay`
//! (dead-lettered InfluxDB batches sent again once their cause is fixed).
//!
//! Both read the store without changing it: files are opened read-only, and a store a running
//! gateway holds is reported from that gateway's `/api/status`. Only InfluxDB's dead letters
//! (`dead-letter/influx-*.lp`, line protocol) are replayed; `alerts-*` (alert outputs) and
//! `corrupt-*` (chunks that failed their checksum: their values cannot be trusted) are listed,
//! never replayed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dustgate::config::Config;
use dustgate::outputs::dead_letter::{self, Letter, Locked};
use dustgate::outputs::hj212::backlog;
use dustgate::outputs::influx::InfluxSink;
use dustgate::outputs::sink::{SendOutcome, Sink};
use dustgate::outputs::store::{self, Inspected};

fn local(ms: i64, cfg: &Config) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned_datetime(cfg.site.timezone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

fn queue_line(what: &str, found: Inspected, cfg: &Config) -> String {
    match found {
        Inspected::Missing => format!("  {what}: empty (no store file yet)"),
        Inspected::InUse => format!("  {what}: in use by the running gateway (figures below)"),
        Inspected::Unreadable(e) => format!("  {what}: CANNOT READ: {e}"),
        Inspected::Held(s) if s.points == 0 => format!("  {what}: empty"),
        Inspected::Held(s) => format!(
            "  {what}: {} points, {} bytes in {} chunks, oldest {}",
            s.points,
            s.bytes,
            s.chunks,
            s.oldest_ms.map_or("-".into(), |t| local(t, cfg))
        ),
    }
}

/// The dead-letter files of one kind (`influx`, `alerts`, `corrupt`), oldest first.
fn letter_files(cfg: &Config, kind: &str) -> Vec<PathBuf> {
    let dir = cfg.store.dir.join("dead-letter");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{kind}-")) && n.ends_with(".lp"))
        })
        .collect();
    files.sort();
    files
}

pub fn status(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_or_report(path) else {
        return Ok(ExitCode::FAILURE);
    };
    let dir = &cfg.store.dir;
    println!("store {} (site {})", dir.display(), cfg.site.id);
    let destination = cfg
        .influx
        .as_ref()
        .map_or("files under series/".to_string(), |i| {
            format!("InfluxDB {}", i.url)
        });
    let main = store::inspect(dir);
    let in_use = main == Inspected::InUse;
    println!(
        "{}",
        queue_line(&format!("series ({destination})"), main, &cfg)
    );
    let mut outboxes: Vec<String> = cfg.alerts.mqtt.iter().map(|_| "mqtt".to_string()).collect();
    outboxes.extend(cfg.alerts.webhooks.iter().map(|w| w.name.clone()));
    for name in outboxes {
        let found = store::inspect(&dir.join("outbox").join(&name));
        println!(
            "{}",
            queue_line(&format!("alert output {name}"), found, &cfg)
        );
    }
    for u in &cfg.hj212.upstreams {
        let file = dir.join("hj212-upstream").join(format!("{}.redb", u.name));
        let line = if !file.exists() {
            "empty (no backlog file yet)".to_string()
        } else {
            match backlog::inspect(&file) {
                Ok(None) => "in use by the running gateway (figures below)".to_string(),
                Ok(Some((0, _))) => "empty".to_string(),
                Ok(Some((n, oldest))) => format!(
                    "{n} frames waiting, oldest queued {}",
                    oldest.map_or("-".into(), |t| local(t, &cfg))
                ),
                Err(e) => format!("CANNOT READ: {e}"),
            }
        };
        println!("  HJ 212 platform {} ({}): {line}", u.name, u.address);
    }
    println!("  dead letters ({}):", dir.join("dead-letter").display());
    for (kind, what) in [
        (
            "influx",
            "InfluxDB batches it refused; `dustgate replay` sends them again",
        ),
        ("alerts", "alert output batches it refused"),
        (
            "corrupt",
            "store chunks that failed their checksum: kept for inspection, never replayed",
        ),
    ] {
        let files = letter_files(&cfg, kind);
        let (mut batches, mut lines, mut bytes) = (0, 0, 0);
        for f in &files {
            if let Ok(body) = std::fs::read(f) {
                bytes += body.len();
                let letters = dead_letter::parse(&body);
                batches += letters.len();
                lines += letters.iter().map(Letter::lines).sum::<usize>();
            }
        }
        println!(
            "    {kind}: {} files, {batches} batches, {lines} lines, {bytes} bytes ({what})",
            files.len()
        );
    }
    if in_use {
        print_running(&cfg);
    }
    Ok(ExitCode::SUCCESS)
}

/// The figures of the running gateway that holds the store, from its `/api/status`.
fn print_running(cfg: &Config) {
    let url = format!("http://{}/api/status", cfg.http.listen);
    let got = super::runtime().ok().and_then(|rt| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(&url)
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            let body = r.bytes().await.ok()?;
            serde_json::from_slice::<serde_json::Value>(&body).ok()
        })
    });
    let Some(s) = got else {
        println!("the running gateway's figures: {url} did not answer");
        return;
    };
    println!("the running gateway ({url}):");
    println!(
        "  series queue: {} points, {} bytes, oldest {} s old; written {}, dead-lettered {}, dropped {}",
        s["queue"]["points"],
        s["queue"]["bytes"],
        s["uplink_lag_s"],
        s["written_points"],
        s["dead_letter_points"],
        s["queue"]["dropped"]
    );
    for u in s["hj212_upstreams"].as_array().into_iter().flatten() {
        println!(
            "  HJ 212 platform {}: {} frames waiting, oldest DataTime {}, connected {}",
            u["name"].as_str().unwrap_or_default(),
            u["backlog_frames"],
            u["backlog_oldest"].as_str().unwrap_or("-"),
            u["connected"]
        );
    }
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// List what would be sent, send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replay this dead-letter file only (default: every `dead-letter/influx-*.lp`).
    #[arg(long)]
    file: Option<PathBuf>,
}

pub fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_or_report(&a.config) else {
        return Ok(ExitCode::FAILURE);
    };
    let Some(influx) = &cfg.influx else {
        eprintln!(
            "no [influx] in {}: there is nothing to replay to",
            a.config.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let files = match &a.file {
        Some(f) => vec![f.clone()],
        None => letter_files(&cfg, "influx"),
    };
    if files.is_empty() {
        println!(
            "no dead-lettered InfluxDB batches in {}",
            cfg.store.dir.join("dead-letter").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    super::install_crypto();
    let rt = super::runtime()?;
    let mut sink = if a.dry_run {
        None
    } else {
        Some(InfluxSink::new(influx)?)
    };
    rt.block_on(async {
        if let Some(s) = &mut sink {
            s.prepare().await;
        }
        let (mut sent, mut kept) = (0usize, 0usize);
        for file in &files {
            let locked = Locked::open(file)?;
            let letters = dead_letter::parse(&locked.read()?);
            println!("{}: {} batches", file.display(), letters.len());
            let Some(sink) = &mut sink else {
                for l in &letters {
                    println!("  would send {} lines: {}", l.lines(), l.header);
                }
                kept += letters.len();
                continue;
            };
            let (mut done, mut rest) = (Vec::new(), Vec::new());
            let mut stop = None;
            for l in letters {
                if stop.is_some() {
                    rest.push(l);
                    continue;
                }
                match sink.send(&l.body).await {
                    SendOutcome::Accepted => {
                        println!("  sent {} lines ({})", l.lines(), l.header);
                        done.push(l);
                    }
                    SendOutcome::Rejected { reason, .. } => {
                        println!("  still refused, kept: {reason} ({})", l.header);
                        rest.push(l);
                    }
                    SendOutcome::TooLarge => {
                        println!(
                            "  too large for the server (413), kept: raise its limit ({})",
                            l.header
                        );
                        rest.push(l);
                    }
                    SendOutcome::Retry { reason, .. }
                    | SendOutcome::DestinationMissing { reason } => {
                        stop = Some(reason);
                        rest.push(l);
                    }
                }
            }
            sent += done.len();
            kept += rest.len();
            let note = format!("replayed {}", jiff::Timestamp::now());
            dead_letter::keep_replayed(file, &done, &note)?;
            locked.replace(&rest)?;
            if let Some(reason) = stop {
                println!(
                    "  {} not reachable now ({reason}): stopped; the rest is kept",
                    sink.describe()
                );
                break;
            }
        }
        if a.dry_run {
            println!(
                "dry run: {kept} batches would be sent to {}; nothing sent",
                influx.url
            );
        } else {
            println!("{sent} batches sent, {kept} kept");
        }
        anyhow::Ok(if kept == 0 || a.dry_run {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
