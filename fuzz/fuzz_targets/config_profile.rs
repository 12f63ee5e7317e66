//! A device profile from arbitrary text, parsed both as a Modbus register profile
//! (`parse_profile`) and as a JSON (MQTT) profile (`parse_json_profile`), with the built-in
//! metrics catalog, as `ProfileLoader::load` / `load_json` do.
#![no_main]

use dustgate::config::{
    Diagnostics, SourceFile, json_profile::parse_json_profile, metrics::Catalog,
    profile::parse_profile,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let file = SourceFile::new("devices/fuzz.toml", None, text);
    let catalog = Catalog::builtin();

    let mut diags = Diagnostics::default();
    let mut notes = Vec::new();
    if let Some(p) = parse_profile("fuzz", &file, catalog, &mut diags, &mut notes) {
        let _ = p.limits();
        for r in &p.registers {
            let _ = r.span();
            let _ = r.apply_scale(1.0);
        }
    }
    let _ = diags.to_string();

    let mut diags = Diagnostics::default();
    let mut notes = Vec::new();
    let _ = parse_json_profile("fuzz", &file, catalog, &mut diags, &mut notes);
    let _ = diags.to_string();
});
