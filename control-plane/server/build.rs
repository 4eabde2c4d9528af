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
use std::path::{Path, PathBuf};

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

/// The regular files of `dir` whose names `keep` accepts, with their names, in name order; each
/// is watched for changes.
fn sorted_files(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?.to_string();
            keep(&name).then_some((name, path))
        })
        .collect();
    files.sort();
    for (_, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Ok(files)
}

/// Writes `rows` as the slice expression `&[row, ...]` to `$OUT_DIR/<file>`.
fn write_table(out_dir: &Path, file: &str, rows: impl IntoIterator<Item = String>) {
    let mut table = String::from("&[\n");
    for row in rows {
        let _ = writeln!(table, "    {row},");
    }
    table.push(']');
    std::fs::write(out_dir.join(file), table).unwrap_or_else(|e| panic!("write {file}: {e}"));
}

/// `$OUT_DIR/migrations.rs`: every `.sql` file of `migrations/`, in name order.
fn embed_migrations(out_dir: &Path) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let files = sorted_files(&dir, |name| {
        Path::new(name).extension().is_some_and(|x| x == "sql")
    })
    .expect("control-plane/server/migrations is readable");
    let rows = files
        .into_iter()
        .map(|(name, path)| format!("({name:?}, include_str!({:?}))", path.display().to_string()));
    write_table(out_dir, "migrations.rs", rows);
}

/// `$OUT_DIR/console_assets.rs`: every file of `web-ui/dist/` but the hidden ones (none when the
/// console was not built).
fn embed_console(out_dir: &Path) {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-ui/dist");
    // The directory is in git (with only a .gitignore) so that this watch is stable.
    println!("cargo:rerun-if-changed={}", dist.display());
    let files = sorted_files(&dist, |name| !name.starts_with('.')).unwrap_or_default();
    let rows = files.into_iter().map(|(name, path)| {
        format!(
            "({name:?}, {:?}, include_bytes!({:?}) as &[u8])",
            content_type(&name),
            path.display().to_string()
        )
    });
    write_table(out_dir, "console_assets.rs", rows);
}

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    embed_migrations(Path::new(&out_dir));
    embed_console(Path::new(&out_dir));
}
