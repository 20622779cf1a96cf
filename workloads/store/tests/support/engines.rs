//! The store's contract tests run on both engines: each test is a function of the engine's
//! kind, and [`on_both!`] makes a test of it for fjall and one for PostgreSQL (on a server of
//! the test's own).

#![allow(
    clippy::unwrap_used,
    dead_code,
    unused_macros,
    reason = "test support: a panic is the failure report, and each test uses part of it"
)]

use std::ops::Deref;

use io360_store::{Db, Engine, PgDb, PgOptions};

use super::pg::Postgres;

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// fjall in a temporary directory.
    Fjall,
    /// PostgreSQL on a server started for the test.
    Postgres,
}

/// An open store and what it keeps its data in, removed when dropped.
pub struct Opened {
    db: Option<Engine>,
    group_commit_max: usize,
    /// Its PostgreSQL server, on that engine.
    pub pg: Option<Postgres>,
    /// Its data directory (on PostgreSQL, unused).
    pub dir: tempfile::TempDir,
}

impl Deref for Opened {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.db.as_ref().unwrap()
    }
}

/// PostgreSQL engine options for `url`.
pub fn pg_options(url: String, group_commit_max: usize) -> PgOptions {
    PgOptions {
        url,
        pool_max: 16,
        group_commit_max,
        write_queue_max: io360_store::DEFAULT_WRITE_QUEUE,
    }
}

/// Opens a store on `kind` with `group_commit_max` writes per commit.
pub async fn open(kind: Kind, group_commit_max: usize) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let pg = match kind {
        Kind::Fjall => None,
        Kind::Postgres => Some(Postgres::start().await),
    };
    let mut o = Opened {
        db: None,
        group_commit_max,
        pg,
        dir,
    };
    o.db = Some(o.engine().await);
    o
}

impl Opened {
    async fn engine(&self) -> Engine {
        match &self.pg {
            None => Engine::Fjall(Db::open(self.dir.path(), self.group_commit_max).unwrap()),
            Some(pg) => Engine::Postgres(
                PgDb::connect(pg_options(pg.url(), self.group_commit_max))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Another store on the same data: a second process on fjall (refused while this one
    /// runs), a second replica on PostgreSQL.
    pub async fn second(&self) -> Result<Engine, String> {
        match &self.pg {
            None => Db::open(self.dir.path(), self.group_commit_max)
                .map(Engine::Fjall)
                .map_err(|e| e.to_string()),
            Some(pg) => PgDb::connect(pg_options(pg.url(), self.group_commit_max))
                .await
                .map(Engine::Postgres)
                .map_err(|e| e.to_string()),
        }
    }

    /// Closes the store and opens it again on the same data.
    pub async fn reopen(mut self) -> Opened {
        if let Some(db) = self.db.take() {
            db.close();
            drop(db);
        }
        self.db = Some(self.engine().await);
        self
    }
}

/// Makes `$name::fjall` and `$name::postgres`, tests that run `$name(Kind)` on each engine;
/// the rest are `#[tokio::test]`'s arguments.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn fjall() {
                super::$name(crate::support::engines::Kind::Fjall).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(crate::support::engines::Kind::Postgres).await
            }
        }
    };
    ($name:ident, $($args:tt)+) => {
        mod $name {
            #[tokio::test($($args)+)]
            async fn fjall() {
                super::$name(crate::support::engines::Kind::Fjall).await
            }
            #[tokio::test($($args)+)]
            async fn postgres() {
                super::$name(crate::support::engines::Kind::Postgres).await
            }
        }
    };
}
#[allow(unused_imports, reason = "not every test binary runs on both engines")]
pub(crate) use on_both;
