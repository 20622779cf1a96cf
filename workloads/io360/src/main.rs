//! The io360 binary: every tier in one process (`io360 up`), or one tier (`io360 serve <tier>`).
//!
//! Both are the same code started differently: each tier is a library with a `Config` and a
//! `serve` entry point, listed once in [`tiers`]. `up` binds every tier on loopback, points
//! them at each other and puts the public face on `--addr`.

mod tiers;
mod up;

/// mimalloc: every tier allocates small, short-lived buffers per request, from many threads;
/// glibc's allocator spent about a tenth of the frontend's time on a static page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

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
        tier: tiers::Tier,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    io360_common::telemetry::init_logging();
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
            Command::Serve { tier } => tiers::serve_one(tier).await,
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
