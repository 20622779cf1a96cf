//! The store's format version: which records of [`crate::record`] a data directory holds,
//! and the migrations that bring older directories up to date.
//!
//! `meta["format_version"]` holds the version as an 8-byte big-endian integer; directories
//! written before the stamp existed have none and hold version 1. The rules (empty, older,
//! newer) are [`io360_common::format`]'s. To change a record, append to [`MIGRATIONS`] the
//! step that rewrites the previous version's records: [`CURRENT`] follows.
//!
//! A new keyspace that starts empty (as `sources` and `source_of`, the map of imported
//! comments, did) changes no record: a directory written before it holds exactly what it
//! would hold had it existed, so it needs no migration and no new version.

use fjall::{Database, Keyspace, PersistMode};
use io360_common::format::{Migration, Versioned, current};

use crate::keys::u64_key;

/// Where the version is kept, in the `meta` keyspace.
const KEY: &str = "format_version";

/// The store's data directory, as far as its format is concerned.
pub(crate) struct Dir {
    /// The database (migrations open the keyspaces they rewrite).
    pub db: Database,
    /// The `meta` keyspace, where the stamp is.
    pub meta: Keyspace,
    /// Keyspaces whose content shows that an unstamped directory holds data.
    pub holds_data: Vec<Keyspace>,
}

/// `MIGRATIONS[i]` brings version `i + 1` to version `i + 2`.
pub(crate) const MIGRATIONS: &[Migration<Dir>] = &[];

/// The format this version writes.
pub(crate) const CURRENT: u64 = current(MIGRATIONS.len());

impl Versioned for Dir {
    type Error = fjall::Error;

    fn stamp(&self) -> Result<Option<Vec<u8>>, fjall::Error> {
        Ok(self.meta.get(KEY)?.map(|v| v.to_vec()))
    }

    fn holds_data(&self) -> Result<bool, fjall::Error> {
        Ok(std::iter::once(&self.meta)
            .chain(&self.holds_data)
            .any(|ks| ks.first_key_value().is_some()))
    }

    fn set_stamp(&self, version: u64) -> Result<(), fjall::Error> {
        self.meta.insert(KEY, u64_key(version))?;
        self.db.persist(PersistMode::SyncAll)
    }
}
