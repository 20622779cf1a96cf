//! The io360 binary: every tier in one process (`io360 up`), or one tier (`io360 serve <tier>`).
//!
//! Both are the same code started differently: each tier is a library with a `Config` and a
//! `serve` entry point, listed once in [`tiers`]. `up` binds every tier on loopback, points
//! them at each other and puts the public face on `--addr`.

mod moving;
mod tiers;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc: every tier allocates small, short-lived buffers per request, from many threads;
/// glibc's allocator spent about a tenth of the frontend's time on a static page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's number for its purge delay option (`mi_option_purge_delay` in the `mimalloc.h`
/// of mimalloc 3, which the `mimalloc` crate builds; the bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory with the allocator for 10 s before it goes back to the OS, instead of
/// mimalloc's 1 s, unless `MIMALLOC_PURGE_DELAY` says otherwise. Memory given back is
/// faulted in again at the next burst, a huge page at a time, each zeroed by the kernel:
/// logic shipping audit events spent about 4% of its CPU there, and a 10 s delay took its
/// page faults per request from 0.06 to 0.001. Idle memory still goes back to the OS.
fn keep_freed_memory_a_while(overridden: bool) {
    set_purge_delay(overridden, 10_000);
}

/// Sets mimalloc's purge delay in milliseconds, unless `MIMALLOC_PURGE_DELAY` said otherwise.
fn set_purge_delay(overridden: bool, ms: std::ffi::c_long) {
    if !overridden {
        // SAFETY: sets one integer option, before any thread of ours is started.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
    }
}

/// io360: comment infrastructure for sites that must stay up when traffic spikes.
#[derive(Debug, Parser)]
#[command(name = "io360", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every tier in this process, serving the site, the API and live updates on one address.
    Up(up::UpArgs),
    /// Runs one tier, configured by flags and IO360_* environment variables.
    Serve {
        #[command(subcommand)]
        tier: Box<tiers::Tier>,
    },
    /// Writes a new keyring (`keys`) and one credential per tier (`<tier>.token`) into a
    /// directory, for tiers run with `io360 serve` outside Kubernetes (IO360_TIER_KEYS_FILE,
    /// IO360_TIER_TOKEN_FILE). Files are readable by their owner only.
    TierKeys {
        /// The directory to write into (created when missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Imports another comment system's export (or io360's own) into a data directory that
    /// no running io360 holds. Idempotent: a second run of the same file adds nothing, and a
    /// run stopped half way continues where it stopped.
    Import(moving::ImportArgs),
    /// Writes every thread and comment of a data directory that no running io360 holds, as
    /// versioned NDJSON, to stdout (re-importable with `io360 import --from io360`).
    Export(moving::ExportArgs),
    /// Renames threads whose name starts with --from (a site that moved), with their comments,
    /// counts and history, in a data directory that no running io360 holds; --dry-run lists
    /// what would change.
    Remap(moving::RemapArgs),
    /// Moves the store between its engines, with no io360 running on either side: from a data
    /// directory into an empty PostgreSQL database (`--to postgres`), or from the database
    /// into a fresh data directory (`--to fjall`). Ids, sequence numbers and feed positions are
    /// kept; both sides are counted and compared afterwards.
    MoveStore(moving::MoveStoreArgs),
}

/// Writes a keyring and every tier's credential into `dir`.
fn write_tier_keys(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let keyring = io360_common::auth::Keyring::generate();
    let mut files = vec![("keys".to_owned(), keyring.to_text())];
    for tier in io360_common::auth::TIERS {
        files.push((format!("{tier}.token"), keyring.credential(tier) + "\n"));
    }
    for (name, text) in files {
        let path = dir.join(name);
        up::write_private(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "wrote a keyring and the tiers' credentials into {}",
        dir.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Import, export and remap are one long pass over data, not bursts of requests: freed
    // memory goes back at once, which keeps a large import's peak memory down by about 20%.
    let overridden = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
    if matches!(
        cli.command,
        Command::Import(_) | Command::Export(_) | Command::Remap(_) | Command::MoveStore(_)
    ) {
        set_purge_delay(overridden, 0);
    } else {
        keep_freed_memory_a_while(overridden);
    }
    // Import and export speak to a person on stderr and write data to stdout: no log lines.
    if !matches!(
        cli.command,
        Command::Import(_) | Command::Export(_) | Command::Remap(_) | Command::MoveStore(_)
    ) {
        io360_common::telemetry::init_logging();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("io360: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Serve { tier } => tiers::serve_one(*tier).await,
            Command::TierKeys { out } => write_tier_keys(&out),
            Command::Import(args) => moving::import(args).await,
            Command::Export(args) => moving::export(args).await,
            Command::Remap(args) => moving::remap(args).await,
            Command::MoveStore(args) => moving::move_store(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("io360: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MI_OPTION_PURGE_DELAY, keep_freed_memory_a_while};

    #[test]
    fn freed_memory_is_kept_ten_seconds() {
        // SAFETY: reads one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc reads MIMALLOC_PURGE_DELAY for this option only if it is the purge delay.
        let default = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        assert_eq!(
            get(),
            default,
            "the option is mimalloc's purge delay, 1 s by default"
        );
        keep_freed_memory_a_while(true);
        assert_eq!(get(), default, "a delay the environment sets is kept");
        keep_freed_memory_a_while(false);
        assert_eq!(get(), 10_000);
    }
}
