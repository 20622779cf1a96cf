//! The logger's format version: which records of [`crate::record`] a data directory holds,
//! and the migrations that bring older directories up to date.
//!
//! `meta["format_version"]` holds the version as an 8-byte big-endian integer; logs written
//! before the stamp existed have none and are version 1. The rules (empty, older, newer) are
//! [`io360_common::format`]'s. To change a record, append to [`MIGRATIONS`] the step that
//! rewrites the previous version's records: [`CURRENT`] follows.
//!
//! | version | what changed |
//! |---|---|
//! | 1 | events, and an index by author in an `authors` keyspace |
//! | 2 | no index by author: it held author keys, which an erase must remove too |

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use io360_common::format::{Migration, Versioned, current};

/// Where the version is kept, in the `meta` keyspace.
const KEY: &str = "format_version";

/// The logger's data directory, as far as its format is concerned.
pub(crate) struct Dir {
    /// The database (migrations open the keyspaces they rewrite).
    pub db: Database,
    /// The `meta` keyspace, where the stamp is.
    pub meta: Keyspace,
    /// The `events` keyspace: an unstamped log holding events is version 1.
    pub events: Keyspace,
}

/// `MIGRATIONS[i]` brings version `i + 1` to version `i + 2`.
pub(crate) const MIGRATIONS: &[Migration<Dir>] = &[drop_author_index];

/// The format this version writes.
pub(crate) const CURRENT: u64 = current(MIGRATIONS.len());

/// 1 → 2: the index by author goes (it holds author keys).
fn drop_author_index(dir: &Dir) -> Result<(), fjall::Error> {
    if dir.db.keyspace_exists("authors") {
        let old = dir.db.keyspace("authors", KeyspaceCreateOptions::default)?;
        dir.db.delete_keyspace(old)?;
        tracing::info!("deleted the author index an earlier version kept");
    }
    Ok(())
}

impl Versioned for Dir {
    type Error = fjall::Error;

    fn stamp(&self) -> Result<Option<Vec<u8>>, fjall::Error> {
        Ok(self.meta.get(KEY)?.map(|v| v.to_vec()))
    }

    fn holds_data(&self) -> Result<bool, fjall::Error> {
        Ok(self.events.first_key_value().is_some() || self.db.keyspace_exists("authors"))
    }

    fn set_stamp(&self, version: u64) -> Result<(), fjall::Error> {
        self.meta.insert(KEY, version.to_be_bytes())?;
        self.db.persist(PersistMode::SyncAll)
    }
}
