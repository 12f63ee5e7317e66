//! Configuration: `site.toml` and the device profiles it names.
//!
//! Loading has two stages, after Vector's validate/build split: the TOML tree is read into raw
//! types (`raw.rs`: shape, types, unknown keys), then validated into typed values
//! (`validate.rs`: ranges, references, duplicates, overlaps). Every problem in every file is
//! reported at once, each with file:line:column and key path.

pub mod metrics;
pub mod profile;
pub mod raw;
pub mod reader;
pub mod source;
pub mod types;
pub mod validate;

use std::path::Path;

pub use source::{Diagnostic, Diagnostics, SourceFile};
pub use types::*;

use profile::ProfileLoader;
use reader::{Cx, TableReader, parse_document};

/// Loads and validates a config file, with profiles from `devices/` beside it, then built-ins.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let file = SourceFile::read(path).map_err(|d| Diagnostics(vec![d]))?;
    let mut profiles = ProfileLoader::for_config(path);
    load_from(&file, path, &mut profiles)
}

/// Loads a config from text already in memory (`dustgate demo` builds its own).
pub fn load_from(
    file: &std::sync::Arc<SourceFile>,
    path: &Path,
    profiles: &mut ProfileLoader,
) -> Result<Config, Diagnostics> {
    let mut diags = Diagnostics::default();
    let config = {
        let mut cx = Cx {
            file,
            diags: &mut diags,
        };
        parse_document(&mut cx, &file.text).and_then(|doc| {
            let mut root = TableReader::root(&doc);
            let raw = raw::read(&mut cx, &mut root);
            root.finish(&mut cx);
            validate::validate(&mut cx, raw, path, profiles)
        })
    };
    diags.sort();
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => {
            if diags.is_empty() {
                diags.push(file.diagnostic(&(0..0), "", "configuration is incomplete"));
            }
            Err(diags)
        }
    }
}
