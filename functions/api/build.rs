//! Gzips the files the api serves from its binary (the console's, under
//! `console/`, and `openapi.yaml`) into `OUT_DIR`, where `console.rs` and
//! `operations.rs` include them: a quarter of their size in the binary
//! (decision 0062, "Addendum: the api back under 12"). `crate::gzipped`
//! serves them as they are or inflated, as the request accepts.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::{Path, PathBuf};

fn gzip(from: &Path, to: &Path) {
    println!("cargo::rerun-if-changed={}", from.display());
    let text = std::fs::read(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&text).expect("gzip in memory");
    let gz = encoder.finish().expect("gzip in memory");
    std::fs::write(to, gz).unwrap_or_else(|e| panic!("writing {}: {e}", to.display()));
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let console = manifest.join("console");
    println!("cargo::rerun-if-changed={}", console.display());
    std::fs::create_dir_all(out.join("console")).expect("OUT_DIR/console");
    let mut entries: Vec<_> = std::fs::read_dir(&console)
        .expect("functions/api/console")
        .map(|e| e.expect("a console file").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        gzip(&path, &out.join("console").join(format!("{name}.gz")));
    }
    gzip(&manifest.join("../../openapi.yaml"), &out.join("openapi.yaml.gz"));
}
