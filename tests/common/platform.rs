//! The HJ 212 platform peer (tests/peers/hj212_platform.py `serve`): a platform written
//! independently in Python that logs a strict verdict of every frame it receives and answers
//! CN=9014 (or withholds it) as told.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Proc, free_port, repo_root, scratch_dir};

const PEER: &str = "tests/peers/hj212_platform.py";

/// The platform peer, listening; its log of verdicts.
pub struct PlatformPeer {
    _proc: Proc,
    pub port: u16,
    log: std::path::PathBuf,
}

impl PlatformPeer {
    pub fn start(name: &str, args: &[&str]) -> PlatformPeer {
        Self::start_on(name, free_port(), args)
    }

    /// On `port` (again, after a stop: the log is a new file, so keep what the first one got).
    pub fn start_on(name: &str, port: u16, args: &[&str]) -> PlatformPeer {
        Self::start_in(None, name, port, args)
    }

    /// As [`PlatformPeer::start_on`], inside network namespace `netns` when given (through
    /// `ip netns exec`, which runs the peer in place of itself).
    pub fn start_in(netns: Option<&str>, name: &str, port: u16, args: &[&str]) -> PlatformPeer {
        let dir = scratch_dir(name);
        let log = dir.join("platform.jsonl");
        let script = repo_root().join(PEER);
        let port_s = port.to_string();
        let log_s = log.display().to_string();
        let python = super::python();
        let mut all: Vec<&str> = Vec::new();
        if let Some(ns) = netns {
            all.extend(["netns", "exec", ns, python.to_str().expect("path")]);
        }
        all.extend([
            script.to_str().expect("path"),
            "serve",
            "--port",
            &port_s,
            "--log",
            &log_s,
        ]);
        all.extend_from_slice(args);
        let program = match netns {
            Some(_) => std::path::PathBuf::from("ip"),
            None => python.clone(),
        };
        let proc = Proc::spawn("hj212-platform", &dir, &program, all);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.stdout().contains("listening") {
            assert!(
                Instant::now() < deadline,
                "the platform peer did not start: {}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PlatformPeer {
            _proc: proc,
            port,
            log,
        }
    }

    pub fn verdicts(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON verdict"))
            .collect()
    }
}
