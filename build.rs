//! Embeds the data files (device profiles, standards packs) into the binary, so a fresh
//! install works with no files beside it, while the files stay data, reviewed as data.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for (var, dir, file) in [
        ("BUILTIN_DEVICES", "devices", "builtin.rs"),
        ("BUILTIN_STANDARDS", "standards", "builtin_standards.rs"),
    ] {
        let mut code = String::new();
        let path = Path::new(&root).join(dir);
        println!("cargo:rerun-if-changed={}", path.display());
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".toml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let _ = writeln!(code, "pub static {var}: &[(&str, &str)] = &[");
        for n in names {
            let file = path.join(&n);
            println!("cargo:rerun-if-changed={}", file.display());
            let _ = writeln!(
                code,
                "    ({:?}, include_str!({:?})),",
                n.trim_end_matches(".toml"),
                file.display().to_string()
            );
        }
        code.push_str("];\n");
        std::fs::write(Path::new(&out).join(file), code).expect("write the built-in file list");
    }
}
