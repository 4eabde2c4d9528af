//! * Embeds the database migrations (`migrations/*.sql`) as `$OUT_DIR/migrations.rs`, a table
//!   of (file name, SQL) that `sase_control::migrations` hands to sqlx's migrator, and rebuilds
//!   the crate when a migration is added or changed (cargo does not watch the directory on its
//!   own). Not `sqlx::migrate!`: its proc-macro compiles a second copy of sqlx's drivers.
//! * Embeds the web console (`web-ui/dist/`, written by `scripts/build-console.sh`) as
//!   `$OUT_DIR/console_assets.rs`: a table of (path, content type, bytes) that
//!   `sase_control::console` serves at `/`. When the console was not built the table is empty
//!   and `/` answers a page saying how to build it (never a build failure). Hand-written rather
//!   than `rust-embed`: a dozen lines, no proc-macro, and the same behaviour in debug and
//!   release builds (rust-embed reads from disk at run time in debug builds).

use std::fmt::Write as _;
use std::path::Path;

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// `$OUT_DIR/migrations.rs`: every `.sql` file of `migrations/`, in name order.
fn embed_migrations(out_dir: &Path) {
    println!("cargo:rerun-if-changed=migrations");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("control-plane/server/migrations is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut table = String::from("&[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("migration file names are UTF-8");
        let _ = writeln!(
            table,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    table.push(']');
    std::fs::write(out_dir.join("migrations.rs"), table).expect("write migrations.rs");
}

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    embed_migrations(Path::new(&out_dir));
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-ui/dist");
    // The directory is in git (with only a .gitignore) so that this watch is stable.
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut table = String::from("&[\n");
    if let Ok(entries) = std::fs::read_dir(&dist) {
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            println!("cargo:rerun-if-changed={}", path.display());
            let _ = writeln!(
                table,
                "    ({name:?}, {:?}, include_bytes!({:?}) as &[u8]),",
                content_type(name),
                path.display().to_string()
            );
        }
    }
    table.push(']');
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("console_assets.rs");
    std::fs::write(out, table).expect("write console_assets.rs");
}
