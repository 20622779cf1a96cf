//! The format version of a data directory, and the one place where upgrades happen.
//!
//! `meta["format_version"]` holds the version of the records in [`crate::record`] that the
//! directory was written with, as an 8-byte big-endian integer. Directories written before
//! the marker existed have none and hold version 1. On open:
//!
//! - an empty directory is stamped with [`CURRENT`];
//! - an older version is brought up to [`CURRENT`] by running [`MIGRATIONS`] in order, then
//!   stamped (each step must be safe to run again: a crash before the stamp repeats it);
//! - a newer version is refused with a sentence saying so, and nothing is touched, since this
//!   version cannot know what those records mean.
//!
//! To change a record: raise [`CURRENT`], and append to [`MIGRATIONS`] the step that rewrites
//! the previous version's records.

use fjall::{Database, Keyspace, PersistMode};

use crate::keys::{read_u64, u64_key};

/// The format this version writes.
pub(crate) const CURRENT: u64 = 1;

/// Where the version is kept, in the `meta` keyspace.
pub(crate) const KEY: &str = "format_version";

/// A step that rewrites a directory of version `n` into version `n + 1`.
type Migration = fn(&Database) -> Result<(), fjall::Error>;

/// `MIGRATIONS[i]` brings version `i + 1` to version `i + 2`.
const MIGRATIONS: &[Migration] = &[];

const _: () = assert!(
    MIGRATIONS.len() as u64 + 1 == CURRENT,
    "each format version after the first needs its migration"
);

/// What opening found of the directory's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing was stored yet.
    Empty,
    /// Records of this version.
    Version(u64),
}

/// Why a directory's format cannot be used.
#[derive(Debug)]
pub(crate) enum FormatError {
    /// Written by a newer store.
    Newer(u64),
    /// The version marker is not a version.
    Unreadable(Vec<u8>),
    /// fjall failed.
    Fjall(fjall::Error),
}

impl From<fjall::Error> for FormatError {
    fn from(e: fjall::Error) -> Self {
        FormatError::Fjall(e)
    }
}

/// Reads the directory's format: `meta` holds the marker; `holds_data` are the keyspaces
/// whose content shows that an unmarked directory was written by the first format.
pub(crate) fn found(meta: &Keyspace, holds_data: &[&Keyspace]) -> Result<Found, FormatError> {
    match meta.get(KEY)? {
        Some(v) if v.len() == 8 => Ok(Found::Version(read_u64(&v))),
        Some(v) => Err(FormatError::Unreadable(v.to_vec())),
        None => {
            for ks in std::iter::once(&meta).chain(holds_data) {
                if ks.first_key_value().is_some() {
                    return Ok(Found::Version(1));
                }
            }
            Ok(Found::Empty)
        }
    }
}

/// Brings the directory to [`CURRENT`], or refuses it; answers the version it was found at
/// (`None` when it was empty).
pub(crate) fn upgrade(
    db: &Database,
    meta: &Keyspace,
    holds_data: &[&Keyspace],
) -> Result<Option<u64>, FormatError> {
    let found = found(meta, holds_data)?;
    let from = match found {
        Found::Empty => None,
        Found::Version(v) if v > CURRENT => return Err(FormatError::Newer(v)),
        Found::Version(0) => return Err(FormatError::Unreadable(u64_key(0).to_vec())),
        Found::Version(v) => Some(v),
    };
    if from == Some(CURRENT) {
        return Ok(from);
    }
    let start = from.unwrap_or(CURRENT);
    for (i, step) in MIGRATIONS.iter().enumerate().skip(start as usize - 1) {
        tracing::info!(
            from = i + 1,
            to = i + 2,
            "upgrading the store's data directory"
        );
        step(db)?;
    }
    meta.insert(KEY, u64_key(CURRENT))?;
    db.persist(PersistMode::SyncAll)?;
    Ok(from)
}
