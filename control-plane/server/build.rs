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

/// The files of `dir` (symbolic links followed, as `include_bytes!` does) that `keep` accepts,
/// in name order; each is watched for changes.
fn sorted_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|path| path.is_file() && keep(path))
        .collect();
    files.sort();
    for path in &files {
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

/// `$OUT_DIR/migrations.rs`: every `.sql` file of `migrations/`, in name order. A name that is
/// not UTF-8 fails the build rather than leaving a migration out.
fn embed_migrations(out_dir: &Path) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let files = sorted_files(&dir, |path| path.extension().is_some_and(|x| x == "sql"))
        .expect("control-plane/server/migrations is readable");
    let rows = files.into_iter().map(|path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("migration file names are UTF-8");
        format!("({name:?}, include_str!({:?}))", path.display().to_string())
    });
    write_table(out_dir, "migrations.rs", rows);
}

/// `$OUT_DIR/console_assets.rs`: every file of `web-ui/dist/` but the hidden ones (none when the
/// console was not built).
fn embed_console(out_dir: &Path) {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-ui/dist");
    // The directory is in git (with only a .gitignore) so that this watch is stable.
    println!("cargo:rerun-if-changed={}", dist.display());
    let files = sorted_files(&dist, |path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
    })
    .unwrap_or_default();
    let rows = files.into_iter().filter_map(|path| {
        let name = path.file_name()?.to_str()?;
        Some(format!(
            "({name:?}, {:?}, include_bytes!({:?}) as &[u8])",
            content_type(name),
            path.display().to_string()
        ))
    });
    write_table(out_dir, "console_assets.rs", rows);
}

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    embed_migrations(Path::new(&out_dir));
    embed_console(Path::new(&out_dir));
}
