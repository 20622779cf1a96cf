//! Format versions of data directories, and the one place where a tier's upgrades run.
//!
//! A tier that keeps data on disk (store, logger) stamps its directory with the version of
//! the records it writes. On open, [`upgrade`]:
//!
//! - stamps an empty directory with the current version;
//! - reads a directory without a stamp, but with data, as version 1 (written before stamps);
//! - brings an older version up by running the tier's migrations in order, then stamps it
//!   (each step must be safe to run again: a crash before the stamp repeats it);
//! - refuses a newer version, touching nothing, since the running code cannot know what
//!   those records mean.
//!
//! To change a record: raise the tier's current version and append to its migrations the
//! step that rewrites the previous version's records.

/// A data directory whose format is versioned.
pub trait Versioned {
    /// What the storage engine fails with.
    type Error;

    /// The stamp's bytes, if any.
    fn stamp(&self) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Whether anything is stored at all.
    fn holds_data(&self) -> Result<bool, Self::Error>;

    /// Stamps the directory with `version` and makes that durable.
    fn set_stamp(&self, version: u64) -> Result<(), Self::Error>;
}

/// A step that rewrites a directory of version `n` into version `n + 1`.
pub type Migration<D> = fn(&D) -> Result<(), <D as Versioned>::Error>;

/// Why a directory cannot be used.
#[derive(Debug)]
pub enum FormatError<E> {
    /// It was written by a newer version, in this format.
    Newer(u64),
    /// Its stamp is not a version.
    Unreadable(Vec<u8>),
    /// The storage engine failed.
    Storage(E),
}

/// Brings `dir` to version `migrations.len() + 1` (`migrations[i]` turns version `i + 1` into
/// `i + 2`), or refuses it. Answers the version found, `None` for an empty directory.
pub fn upgrade<D: Versioned>(
    dir: &D,
    migrations: &[Migration<D>],
) -> Result<Option<u64>, FormatError<D::Error>> {
    let current = migrations.len() as u64 + 1;
    let found = match dir.stamp().map_err(FormatError::Storage)? {
        Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(b) if u64::from_be_bytes(b) >= 1 => Some(u64::from_be_bytes(b)),
            _ => return Err(FormatError::Unreadable(bytes)),
        },
        None if dir.holds_data().map_err(FormatError::Storage)? => Some(1),
        None => None,
    };
    match found {
        Some(v) if v > current => return Err(FormatError::Newer(v)),
        Some(v) if v == current => return Ok(found),
        _ => {}
    }
    let from = found.unwrap_or(current);
    for (i, step) in migrations.iter().enumerate().skip(from as usize - 1) {
        tracing::info!(from = i + 1, to = i + 2, "upgrading a data directory");
        step(dir).map_err(FormatError::Storage)?;
    }
    dir.set_stamp(current).map_err(FormatError::Storage)?;
    Ok(found)
}

/// The version a tier writes, given its migrations.
pub const fn current(migrations: usize) -> u64 {
    migrations as u64 + 1
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Dir {
        stamp: RefCell<Option<Vec<u8>>>,
        data: bool,
        ran: RefCell<Vec<u64>>,
    }

    impl Versioned for Dir {
        type Error = ();
        fn stamp(&self) -> Result<Option<Vec<u8>>, ()> {
            Ok(self.stamp.borrow().clone())
        }
        fn holds_data(&self) -> Result<bool, ()> {
            Ok(self.data)
        }
        fn set_stamp(&self, v: u64) -> Result<(), ()> {
            *self.stamp.borrow_mut() = Some(v.to_be_bytes().to_vec());
            Ok(())
        }
    }

    const STEPS: &[Migration<Dir>] = &[
        |d| {
            d.ran.borrow_mut().push(1);
            Ok(())
        },
        |d| {
            d.ran.borrow_mut().push(2);
            Ok(())
        },
    ];

    fn stamped(v: u64) -> Dir {
        Dir {
            stamp: RefCell::new(Some(v.to_be_bytes().to_vec())),
            data: true,
            ..Dir::default()
        }
    }

    #[test]
    fn an_unstamped_directory_with_data_is_version_1_and_runs_every_step() {
        let d = Dir {
            data: true,
            ..Dir::default()
        };
        assert_eq!(upgrade(&d, STEPS).unwrap(), Some(1));
        assert_eq!(*d.ran.borrow(), [1, 2]);
        assert_eq!(*d.stamp.borrow(), Some(3u64.to_be_bytes().to_vec()));
    }

    #[test]
    fn an_older_directory_runs_only_the_steps_after_its_version() {
        let d = stamped(2);
        assert_eq!(upgrade(&d, STEPS).unwrap(), Some(2));
        assert_eq!(*d.ran.borrow(), [2]);
        let d = stamped(3);
        assert_eq!(upgrade(&d, STEPS).unwrap(), Some(3));
        assert!(d.ran.borrow().is_empty());
    }

    #[test]
    fn an_empty_directory_is_stamped_without_steps() {
        let d = Dir::default();
        assert_eq!(upgrade(&d, STEPS).unwrap(), None);
        assert!(d.ran.borrow().is_empty());
        assert_eq!(*d.stamp.borrow(), Some(3u64.to_be_bytes().to_vec()));
    }

    #[test]
    fn newer_and_unreadable_stamps_are_refused_untouched() {
        let d = stamped(4);
        assert!(matches!(upgrade(&d, STEPS), Err(FormatError::Newer(4))));
        assert_eq!(*d.stamp.borrow(), Some(4u64.to_be_bytes().to_vec()));
        let d = Dir {
            stamp: RefCell::new(Some(b"v1".to_vec())),
            ..Dir::default()
        };
        assert!(matches!(
            upgrade(&d, STEPS),
            Err(FormatError::Unreadable(_))
        ));
        assert!(matches!(
            upgrade(&stamped(0), STEPS),
            Err(FormatError::Unreadable(_))
        ));
    }
}
