//! The database migrations (`control-plane/server/migrations/*.sql`), embedded at build time by
//! `build.rs` and handed to sqlx's migrator.
//!
//! This replaces `sqlx::migrate!`: that proc-macro is the only reason for sqlx's `macros`
//! feature here, and the feature compiles a second, host-side copy of sqlx's SQLite and
//! PostgreSQL drivers, sqlx-core and tokio into every build (about 85 s of compile time on two
//! cores, docs/DEPENDENCIES.md) for what is a list of files. Each file's version, description,
//! type and `-- no-transaction` flag are read exactly as sqlx reads a migrations directory, and
//! [`Migration::new`] computes the same SHA-384 checksum, so databases migrated by builds that
//! used the macro are recognised as up to date (the unit test below compares the two).

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// (file name, SQL) of every migration file, in file-name order (written by `build.rs`).
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The embedded migrations as a source for [`Migrator::new`].
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async { parse(FILES).map_err(BoxDynError::from) })
    }
}

/// The migrator over the embedded migrations.
///
/// # Errors
/// A migration file whose name has no integer version prefix.
pub async fn migrator() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded).await
}

/// Migrations from (file name, SQL) pairs, as sqlx's directory source reads them: files named
/// `<version>_<description>.sql` (`.up.sql` / `.down.sql` for reversible ones), other names
/// skipped, sorted by version.
fn parse(files: &[(&str, &'static str)]) -> Result<Vec<Migration>, String> {
    let mut migrations = Vec::new();
    for (name, sql) in files {
        let Some((version, rest)) = name.split_once('_') else {
            continue;
        };
        if !rest.ends_with(".sql") {
            continue;
        }
        let version: i64 = version
            .parse()
            .map_err(|_| format!("migration file {name:?} has no integer version prefix"))?;
        let migration_type = MigrationType::from_filename(rest);
        let description = rest
            .trim_end_matches(migration_type.suffix())
            .replace('_', " ");
        migrations.push(Migration::new(
            version,
            Cow::Owned(description),
            migration_type,
            Cow::Borrowed(sql),
            sql.starts_with("-- no-transaction"),
        ));
    }
    migrations.sort_by_key(|m| m.version);
    Ok(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_migrations_are_those_sqlx_reads_from_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let from_dir = Migrator::new(dir).await.expect("sqlx reads the directory");
        let embedded = migrator().await.expect("embedded");
        let key = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.migration_type,
                m.checksum.to_vec(),
                m.no_tx,
            )
        };
        let from_dir: Vec<_> = from_dir.iter().map(key).collect();
        let embedded: Vec<_> = embedded.iter().map(key).collect();
        assert!(from_dir.len() >= 18, "every migration file is read");
        assert_eq!(embedded, from_dir);
    }

    #[test]
    fn names_are_read_as_sqlx_reads_them() {
        let parsed = parse(&[
            ("0002_second_step.sql", "-- no-transaction\nSELECT 2;"),
            ("README.md", "not a migration"),
            ("0001_init.sql", "SELECT 1;"),
        ])
        .expect("parse");
        let seen: Vec<_> = parsed
            .iter()
            .map(|m| (m.version, m.description.to_string(), m.no_tx))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "init".to_string(), false),
                (2, "second step".to_string(), true)
            ]
        );
        assert!(parse(&[("v1_init.sql", "")]).is_err());
    }
}
