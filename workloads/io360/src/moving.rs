//! Moving in and out: `io360 import`, `io360 export`, offline, on a data directory no running
//! io360 holds (the store refuses a second process).
//!
//! An import reads another system's export (or io360's own) and writes it into the data
//! directory's store, with the site's key for author keys, so an erase by email reaches
//! imported comments. An export writes everything the store holds as versioned NDJSON.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use io360_import::Format;

/// `io360 import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The format of FILE: isso, disqus, wordpress, remark42, commento or io360.
    #[arg(long = "from", value_parser = clap::builder::ValueParser::new(parse_format))]
    from: Format,

    /// The export to read (Isso: its `comments.db`).
    file: PathBuf,

    /// The data directory `io360 up --data-dir` uses (comments go to its `store`).
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// `io360 export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The data directory `io360 up --data-dir` uses.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

/// The key author keys are derived from: the one `io360 up` on this directory uses.
fn site_keys(data_dir: &std::path::Path) -> anyhow::Result<io360_logic::Keys> {
    let mut logic = crate::up::default_config::<io360_logic::Config>();
    logic.read_admin_token_file().map_err(anyhow::Error::msg)?;
    let (token, _) = crate::up::admin_token(logic.admin_token.take(), data_dir)?;
    let secret = logic.signing_key.unwrap_or(token);
    Ok(io360_logic::Keys::new(secret.as_bytes()))
}

fn open_store(data_dir: &std::path::Path) -> anyhow::Result<io360_store::Db> {
    Ok(io360_store::Db::open(&data_dir.join("store"), 512)?)
}

/// Runs `io360 import`.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let records = io360_import::read_path_counting(args.from, &args.file, count.clone())?;
    let keys = site_keys(&args.data_dir)?;
    let db = open_store(&args.data_dir)?;
    let author_key = |email: &str| keys.author_of_email(email);
    let opts = io360_import::load::Options {
        format: args.from,
        render: &io360_logic::render,
        author_key: &author_key,
        scratch: &args.data_dir,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |s: &io360_import::load::Summary| {
        if terminal {
            let secs = s.elapsed.as_secs_f64().max(0.001);
            eprint!(
                "\r\x1b[K{} records, {:.1} MiB ({:.0} records/s, {:.1} MiB/s): {} threads, {} comments, {} imported, {} already imported",
                s.records,
                s.bytes as f64 / 1048576.0,
                s.records as f64 / secs,
                s.bytes as f64 / 1048576.0 / secs,
                s.threads,
                s.comments,
                s.imported,
                s.skipped,
            );
        }
    };
    let bytes = || count.load(Ordering::Relaxed);
    let result = io360_import::load::load(records, &db, &opts, &bytes, &mut progress).await;
    if terminal {
        eprintln!();
    }
    db.close();
    let summary = result?;
    println!(
        "imported from {} {}: {summary}",
        args.from,
        args.file.display()
    );
    if !summary.orphan_examples.is_empty() {
        println!(
            "comments whose parent is not in the file, now at the top level: {}{}",
            summary.orphan_examples.join(", "),
            if summary.orphans > summary.orphan_examples.len() as u64 {
                ", ..."
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Runs `io360 export`: the export goes to stdout.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let db = open_store(&args.data_dir)?;
    let done = tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let r = io360_import::io360::export(&db, &mut out);
        db.close();
        r
    })
    .await
    .context("the export task failed")?;
    done?;
    std::io::stdout().flush()?;
    Ok(())
}

/// `io360 remap`.
#[derive(Debug, clap::Args)]
pub struct RemapArgs {
    /// The data directory `io360 up --data-dir` uses.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Threads whose name starts with this are renamed (`/blog/`).
    #[arg(long)]
    from: String,

    /// What replaces that start (`/posts/`).
    #[arg(long)]
    to: String,

    /// Only list what would be renamed.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `io360 remap`: renames threads (with their pages' titles), listing each with its title.
pub async fn remap(args: RemapArgs) -> anyhow::Result<()> {
    let db = open_store(&args.data_dir)?;
    let result = db
        .remap(args.from.clone(), args.to.clone(), args.dry_run)
        .await;
    db.close();
    let renamed = result?;
    let mut out = std::io::stdout().lock();
    for r in &renamed {
        write!(out, "{} -> {} ({} comments)", r.from, r.to, r.comments)?;
        match &r.title {
            Some(title) => writeln!(out, ": {title}")?,
            None => writeln!(out)?,
        }
    }
    let comments: u64 = renamed.iter().map(|r| r.comments).sum();
    writeln!(
        out,
        "{} {} threads ({comments} comments) from {:?} to {:?}",
        if args.dry_run {
            "would rename"
        } else {
            "renamed"
        },
        renamed.len(),
        args.from,
        args.to
    )?;
    Ok(())
}

/// `io360 move-store`.
#[derive(Debug, clap::Args)]
pub struct MoveStoreArgs {
    /// Where the store goes: `postgres` (from the data directory into an empty database) or
    /// `fjall` (from the database into a fresh data directory).
    #[arg(long, value_enum)]
    to: io360_store::EngineKind,

    /// The data directory `io360 up --data-dir` uses (the store is its `store`): the source
    /// when moving to postgres, the target when moving to fjall.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// The store's own directory instead (what `io360 serve store --data-dir` is given, as on a
    /// store pod's volume).
    #[arg(long, conflicts_with = "data_dir")]
    store_dir: Option<PathBuf>,

    /// The PostgreSQL connection string (`postgres://io360:secret@db:5432/io360?sslmode=verify-full`).
    #[arg(long, env = "IO360_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// A file holding the connection string, instead of `--database-url`.
    #[arg(long, env = "IO360_DATABASE_URL_FILE")]
    database_url_file: Option<PathBuf>,
}

/// Runs `io360 move-store`: copies every record, checks both sides agree, prints what moved.
pub async fn move_store(args: MoveStoreArgs) -> anyhow::Result<()> {
    let url = io360_store::EngineConfig {
        engine: io360_store::EngineKind::Postgres,
        database_url: args.database_url,
        database_url_file: args.database_url_file,
        ..io360_store::EngineConfig::default()
    }
    .url()
    .map_err(anyhow::Error::msg)?;
    let dir = args
        .store_dir
        .unwrap_or_else(|| args.data_dir.join("store"));
    let (moved, whence) = match args.to {
        io360_store::EngineKind::Postgres => (
            io360_store::transfer::fjall_to_postgres(&dir, url).await?,
            format!("from {} into PostgreSQL", dir.display()),
        ),
        io360_store::EngineKind::Fjall => (
            io360_store::transfer::postgres_to_fjall(url, &dir).await?,
            format!("from PostgreSQL into {}", dir.display()),
        ),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "moved {whence}: {moved}")?;
    writeln!(
        out,
        "checked on both sides: each of the {} threads' comments, last sequence number and approved count; feed position {}, last comment id {}, and every other record's count",
        moved.threads.len(),
        moved.feed_position,
        moved.last_comment_id,
    )?;
    Ok(())
}
