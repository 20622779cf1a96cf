//! The store's two engines behind one API: fjall on a local disk ([`Db`], the default) and
//! PostgreSQL ([`PgDb`], for a store that must outlive a node). Both keep the same contract,
//! and the HTTP layer sees only [`Engine`].

use std::path::PathBuf;

use io360_common::model::{Change, FeedPos, Seq, ThreadMeta, ThreadPage};
use io360_common::telemetry::Telemetry;
use tokio::sync::watch;

use crate::api::{
    Bans, Counts, ExportItem, Imported, ImportedComment, Renamed, Search, StoredComment,
    Suspension, ThreadChanges, ThreadTitle, TitlesSet, WriteOp, WriteResult,
};
use crate::db::Db;
use crate::error::StoreError;
use crate::pg::PgDb;

/// Which engine keeps the comments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// fjall, embedded, in the data directory.
    #[default]
    Fjall,
    /// A PostgreSQL database.
    Postgres,
}

/// Where the store keeps comments.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineConfig {
    /// The engine: `fjall` (embedded, in the data directory) or `postgres` (a PostgreSQL
    /// database, which several store replicas may share).
    #[arg(long = "store-engine", env = "IO360_STORE_ENGINE", value_enum, default_value_t = EngineKind::Fjall)]
    pub engine: EngineKind,

    /// The PostgreSQL connection string, for the `postgres` engine
    /// (`postgres://io360:secret@db:5432/io360?sslmode=verify-full&sslrootcert=/ca.pem`).
    /// `sslmode` and `sslrootcert` mean what they mean to libpq: `verify-full` encrypts and
    /// checks the server's certificate against the CA (the system's without `sslrootcert`) and
    /// the host name, `verify-ca` the CA only, `require` and `prefer` (the default) encrypt
    /// without checking, `disable` never encrypts.
    #[arg(long, env = "IO360_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// A file holding the PostgreSQL connection string (as a mounted Secret does), read once
    /// at start; instead of `IO360_DATABASE_URL`.
    #[arg(long, env = "IO360_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Connections to PostgreSQL at most, per store replica.
    #[arg(long, env = "IO360_DATABASE_POOL_MAX", default_value_t = 16)]
    pub database_pool_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            engine: EngineKind::Fjall,
            database_url: None,
            database_url_file: None,
            database_pool_max: 16,
        }
    }
}

impl EngineConfig {
    /// The connection string, from the variable or the file; an error names what is missing.
    pub fn url(&self) -> Result<String, String> {
        match (&self.database_url, &self.database_url_file) {
            (Some(_), Some(_)) => {
                Err("set one of IO360_DATABASE_URL and IO360_DATABASE_URL_FILE, not both".into())
            }
            (Some(url), None) => Ok(url.clone()),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|s| s.trim().to_owned())
                .map_err(|e| {
                    format!(
                        "cannot read IO360_DATABASE_URL_FILE {}: {e}",
                        file.display()
                    )
                })
                .and_then(|s| {
                    if s.is_empty() {
                        Err(format!(
                            "IO360_DATABASE_URL_FILE {} is empty",
                            file.display()
                        ))
                    } else {
                        Ok(s)
                    }
                }),
            (None, None) => Err(
                "the postgres engine needs IO360_DATABASE_URL or IO360_DATABASE_URL_FILE".into(),
            ),
        }
    }

    /// Checks the settings without reading the file.
    pub fn validate(&self) -> Result<(), String> {
        if self.engine == EngineKind::Postgres {
            if self.database_url.is_none() && self.database_url_file.is_none() {
                return Err(
                    "the postgres engine needs IO360_DATABASE_URL or IO360_DATABASE_URL_FILE"
                        .into(),
                );
            }
            if self.database_pool_max < 2 {
                return Err(
                    "--database-pool-max (IO360_DATABASE_POOL_MAX) must be at least 2".into(),
                );
            }
        }
        Ok(())
    }
}

/// The comment database, on either engine. Cheap to share behind an `Arc`.
pub enum Engine {
    /// Embedded fjall.
    Fjall(Db),
    /// PostgreSQL.
    Postgres(PgDb),
}

macro_rules! either {
    ($self:ident, $db:ident => $e:expr) => {
        match $self {
            Engine::Fjall($db) => $e,
            Engine::Postgres($db) => $e,
        }
    };
}

impl Engine {
    /// Adds the store's metrics to a tier's registry.
    pub fn register_metrics(&self, t: &Telemetry) {
        either!(self, db => db.register_metrics(t))
    }

    /// Follows the last durable change-feed position.
    pub fn durable(&self) -> watch::Receiver<FeedPos> {
        either!(self, db => db.durable())
    }

    /// Follows whether the engine's database can be reached, for an engine that has one
    /// (fjall has none: its disk is the process's own).
    pub fn reachable(&self) -> Option<watch::Receiver<bool>> {
        match self {
            Engine::Fjall(_) => None,
            Engine::Postgres(db) => Some(db.reachable()),
        }
    }

    /// Stops taking writes once what is queued is written.
    pub fn close(&self) {
        either!(self, db => db.close())
    }

    /// Applies one write; answers once it is durable.
    pub async fn write(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        either!(self, db => db.write(op).await)
    }

    /// Sets the durable manual suspension.
    pub async fn set_suspension(&self, s: Suspension) -> Result<Suspension, StoreError> {
        either!(self, db => db.set_suspension(s).await)
    }

    /// Erases the personal data of every comment whose author has this key.
    pub async fn erase_author(&self, key: String) -> Result<Vec<Change>, StoreError> {
        either!(self, db => db.erase_author(key).await)
    }

    /// Replaces the durable list of bans.
    pub async fn set_bans(&self, bans: Bans) -> Result<Bans, StoreError> {
        either!(self, db => db.set_bans(bans).await)
    }

    /// Writes comments imported from another system.
    pub async fn import(&self, comments: Vec<ImportedComment>) -> Result<Imported, StoreError> {
        either!(self, db => db.import(comments).await)
    }

    /// Keeps page titles for their threads (an import's); the same title again writes nothing.
    pub async fn set_titles(&self, titles: Vec<ThreadTitle>) -> Result<TitlesSet, StoreError> {
        either!(self, db => db.set_titles(titles).await)
    }

    /// The title kept for `thread`'s page, if any.
    pub async fn title(&self, thread: String) -> Result<Option<String>, StoreError> {
        either!(self, db => db.title(thread).await)
    }

    /// Renames every thread whose name starts with `from` (offline only).
    pub async fn remap(
        &self,
        from: String,
        to: String,
        dry_run: bool,
    ) -> Result<Vec<Renamed>, StoreError> {
        either!(self, db => db.remap(from, to, dry_run).await)
    }

    /// The io360 id of the comment imported under `source`, if any.
    pub async fn by_source(&self, source: String) -> Result<Option<u64>, StoreError> {
        either!(self, db => db.by_source(source).await)
    }

    /// Every thread, then every comment, from one snapshot. Blocking.
    pub fn export_blocking(
        &self,
        out: impl FnMut(ExportItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        either!(self, db => db.export_blocking(out))
    }

    /// The durable list of bans.
    pub async fn bans(&self) -> Result<Bans, StoreError> {
        either!(self, db => db.bans().await)
    }

    /// Every comment (with private fields) whose author has this key, oldest first.
    pub async fn author_comments(&self, key: String) -> Result<Vec<StoredComment>, StoreError> {
        either!(self, db => db.author_comments(key).await)
    }

    /// Comments matching `q`, newest first.
    pub async fn search(&self, q: Search) -> Result<Vec<StoredComment>, StoreError> {
        either!(self, db => db.search(q).await)
    }

    /// A thread's comments whose last change is after `after`, in sequence order.
    pub async fn page(
        &self,
        thread: String,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadPage, StoreError> {
        either!(self, db => db.page(thread, after, limit).await)
    }

    /// A thread's metadata.
    pub async fn meta(&self, thread: String) -> Result<ThreadMeta, StoreError> {
        either!(self, db => db.meta(thread).await)
    }

    /// Approved comment counts for many threads.
    pub async fn counts(&self, threads: Vec<String>) -> Result<Counts, StoreError> {
        either!(self, db => db.counts(threads).await)
    }

    /// One comment with its private fields.
    pub async fn comment(&self, id: u64) -> Result<Option<StoredComment>, StoreError> {
        either!(self, db => db.comment(id).await)
    }

    /// A thread's changes after `after`, in sequence order.
    pub async fn changes(
        &self,
        thread: String,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadChanges, StoreError> {
        either!(self, db => db.changes(thread, after, limit).await)
    }

    /// Durable changes after feed position `after`, at most `limit`.
    pub async fn feed(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        either!(self, db => db.feed(after, limit).await)
    }

    /// Held comments, oldest first.
    pub async fn pending(&self, limit: usize) -> Result<Vec<StoredComment>, StoreError> {
        either!(self, db => db.pending(limit).await)
    }

    /// How many approved comments the author with this key has.
    pub async fn author_approved(&self, key: String) -> Result<u64, StoreError> {
        either!(self, db => db.author_approved(key).await)
    }

    /// The durable manual suspension.
    pub async fn suspension(&self) -> Result<Suspension, StoreError> {
        either!(self, db => db.suspension().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_string_comes_from_the_variable_or_the_file_never_both() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("dsn");
        std::fs::write(&file, "postgres://io360@db/io360?sslmode=require\n").expect("writing");
        let from_file = EngineConfig {
            engine: EngineKind::Postgres,
            database_url_file: Some(file.clone()),
            ..EngineConfig::default()
        };
        assert_eq!(
            from_file.url().as_deref(),
            Ok("postgres://io360@db/io360?sslmode=require")
        );
        assert_eq!(from_file.validate(), Ok(()));
        let both = EngineConfig {
            database_url: Some("postgres://x@y/z".into()),
            ..from_file.clone()
        };
        assert!(both.url().is_err_and(|e| e.contains("not both")));
        let neither = EngineConfig {
            engine: EngineKind::Postgres,
            ..EngineConfig::default()
        };
        assert!(
            neither
                .validate()
                .is_err_and(|e| e.contains("IO360_DATABASE_URL"))
        );
        // fjall needs neither.
        assert_eq!(EngineConfig::default().validate(), Ok(()));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("writing");
        let empty = EngineConfig {
            database_url_file: Some(empty),
            ..from_file
        };
        assert!(empty.url().is_err_and(|e| e.contains("empty")));
    }
}
