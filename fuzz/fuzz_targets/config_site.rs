//! site.toml from arbitrary bytes, through the same path as `dustgate::config::load`: bytes
//! that are not UTF-8 are refused as `SourceFile::read` refuses them (nothing more to parse),
//! UTF-8 text goes to `load_from` with the real profile loader (devices/ of the repository, then
//! the built-ins) and standards packs.
#![no_main]

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use dustgate::config::{SourceFile, load_from, profile::ProfileLoader};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static PROFILES: RefCell<Option<ProfileLoader>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path beside the repository's devices/ and standards/ (as examples/site.toml sees them).
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../site.toml");
    let file = SourceFile::new("site.toml", Some(path.clone()), text.to_string());
    // One loader for the whole run: the profiles on disk do not change between inputs, and
    // reading them again for every input made this target 5x slower than the parse it tests.
    let result = PROFILES.with(|p| {
        let mut p = p.borrow_mut();
        let loader = p.get_or_insert_with(|| ProfileLoader::for_config(&path));
        load_from(&file, &path, loader)
    });
    match result {
        Ok(config) => {
            let _ = format!("{:?}", config.site);
        }
        Err(diags) => {
            // Every message must render (positions inside the text).
            let _ = diags.to_string();
        }
    }
});
