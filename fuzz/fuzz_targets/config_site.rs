//! site.toml from arbitrary bytes, through the same path as `dustgate::config::load`: bytes
//! that are not UTF-8 are refused as `SourceFile::read` refuses them (nothing more to parse),
//! UTF-8 text goes to `load_from` with the real profile loader (devices/ of the repository, then
//! the built-ins) and standards packs.
#![no_main]

use std::path::{Path, PathBuf};

use dustgate::config::{SourceFile, load_from, profile::ProfileLoader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path beside the repository's devices/ and standards/ (as examples/site.toml sees them).
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../site.toml");
    let file = SourceFile::new("site.toml", Some(path.clone()), text.to_string());
    let mut profiles = ProfileLoader::for_config(&path);
    match load_from(&file, &path, &mut profiles) {
        Ok(config) => {
            let _ = format!("{:?}", config.site);
        }
        Err(diags) => {
            // Every message must render (positions inside the text).
            let _ = diags.to_string();
        }
    }
});
