//! The folder layout is a picture of the data flow, and these tests keep it so: sources → the
//! site core (`pipeline`) → outputs, with `config` below all of them. They read the source
//! files (code lines only, comments skipped) and fail on an import against the flow, or on IO
//! inside the sans-IO core.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for e in entries {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every code line of the files under `src/<part>` (a folder or one file), with its place;
/// `#[cfg(test)]` modules in their own files (`tests.rs`) are left out.
fn code_lines(part: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(part);
    let mut files = Vec::new();
    if root.is_dir() {
        rust_files(&root, &mut files);
    } else {
        files.push(root.with_extension("rs"));
    }
    let mut out = Vec::new();
    for f in files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // Unit tests at the end of a file may use what they like.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("//") {
                continue;
            }
            out.push((format!("{}:{}", f.display(), i + 1), line.to_string()));
        }
    }
    out
}

fn forbid(part: &str, patterns: &[&str], why: &str) {
    let bad: Vec<String> = code_lines(part)
        .into_iter()
        .filter(|(_, l)| patterns.iter().any(|p| l.contains(p)))
        .map(|(at, l)| format!("{at}: {}", l.trim()))
        .collect();
    assert!(bad.is_empty(), "{why}:\n{}", bad.join("\n"));
}

#[test]
fn config_imports_neither_sources_nor_the_core_nor_outputs() {
    forbid(
        "config",
        &[
            "crate::sources",
            "crate::pipeline",
            "crate::outputs",
            "crate::edge",
        ],
        "config is read by every part and reads none of them",
    );
}

#[test]
fn the_core_imports_no_io_side() {
    forbid(
        "pipeline",
        &[
            "crate::outputs",
            "crate::sources",
            "crate::edge",
            "crate::gateway",
            "crate::http",
            "crate::health",
        ],
        "the site core (pipeline) returns effects; it does not reach the store, sources or HTTP",
    );
    forbid(
        "model",
        &["crate::outputs", "crate::sources", "crate::pipeline"],
        "the model is the shared vocabulary",
    );
}

#[test]
fn the_core_has_no_lock_clock_socket_or_file() {
    forbid(
        "pipeline",
        &[
            "Mutex",
            "RwLock",
            "now_ms()",
            "SystemTime",
            "Instant::now",
            "std::fs",
            "File::open",
            "File::create",
            "tokio::",
            "std::net",
        ],
        "the site core is sans-IO: time comes in as an argument, effects go out as a value",
    );
}

#[test]
fn sources_see_an_ingest_handle_not_the_store() {
    forbid(
        "sources",
        &[
            "crate::outputs::store",
            "crate::outputs::queue",
            "PointQueue",
            "DiskStore",
            "crate::edge",
        ],
        "a source hands readings in through sources::ingest::Ingest",
    );
}

#[test]
fn the_hj212_codec_is_sans_io() {
    forbid(
        "hj212",
        &[
            "crate::sources",
            "crate::pipeline",
            "crate::outputs",
            "crate::edge",
            "crate::http",
            "crate::health",
            "std::net",
            "std::fs",
            "tokio",
            "SystemTime",
            "Instant::now",
        ],
        "the HJ 212 codec takes bytes in and gives frames and packets out: no sockets, files or clock",
    );
}
