//! A stand-in for `io360 serve store|sync|longpoll`, for running the live tests before the
//! `io360` binary lists these tiers. Same flags and environment as the real binary.

use clap::{Parser, Subcommand};
use io360_common::serve::Shutdown;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one tier.
    Serve {
        #[command(subcommand)]
        tier: Tier,
    },
}

#[derive(Subcommand)]
enum Tier {
    Store {
        #[arg(long, env = "IO360_ADDR", default_value = "127.0.0.1:8084")]
        addr: String,
        #[command(flatten)]
        config: io360_store::Config,
    },
    Sync {
        #[arg(long, env = "IO360_ADDR", default_value = "127.0.0.1:8085")]
        addr: String,
        #[command(flatten)]
        config: io360_sync::Config,
    },
    Longpoll {
        #[arg(long, env = "IO360_ADDR", default_value = "127.0.0.1:8086")]
        addr: String,
        #[command(flatten)]
        config: io360_longpoll::Config,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    io360_common::telemetry::init_logging();
    let Cmd::Serve { tier } = Cli::parse().cmd;
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move { trigger.on_signals().await });
    match tier {
        Tier::Store { addr, config } => {
            let l = tokio::net::TcpListener::bind(&addr).await?;
            io360_store::serve(config, l, shutdown).await?;
        }
        Tier::Sync { addr, config } => {
            let l = tokio::net::TcpListener::bind(&addr).await?;
            io360_sync::serve(config, l, shutdown).await?;
        }
        Tier::Longpoll { addr, config } => {
            let l = tokio::net::TcpListener::bind(&addr).await?;
            io360_longpoll::serve(config, l, shutdown).await?;
        }
    }
    Ok(())
}
