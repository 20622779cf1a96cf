//! The table of tiers, and how each is configured and started.
//!
//! [`TABLE`] is the one list of tiers: `io360 serve <tier>` takes its default addresses and
//! help from it, `io360 up` its names, and `docs/CONTRACTS.md` its table of tiers (a test
//! checks the page against it).

use anyhow::Context;
use clap::{Args, Subcommand};
use io360_common::serve::Shutdown;
use tokio::net::{TcpListener, TcpSocket};

/// One row of the table of tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierInfo {
    /// The tier's name: `io360 serve <name>`, and how logs, metrics and audit events name it.
    pub name: &'static str,
    /// Where `io360 serve <name>` listens when `IO360_ADDR` is unset.
    pub default_addr: &'static str,
    /// What the tier does, in a line.
    pub about: &'static str,
}

impl TierInfo {
    /// The help line of `io360 serve <name>`.
    fn help(&self) -> String {
        format!("{} (default address {})", self.about, self.default_addr)
    }
}

/// The site's pages and the widget; the public face of `io360 up`.
pub const FRONTEND: TierInfo = TierInfo {
    name: "frontend",
    default_addr: "127.0.0.1:8080",
    about: "The site's pages with comment snapshots, and the widget",
};
/// The public comment API.
pub const LOGIC: TierInfo = TierInfo {
    name: "logic",
    default_addr: "127.0.0.1:8081",
    about: "The public comment API: validation, rate limits, moderation, the admin API",
};
/// Live delivery to browsers.
pub const LONGPOLL: TierInfo = TierInfo {
    name: "longpoll",
    default_addr: "127.0.0.1:8086",
    about: "Holds browsers' long polls and event streams",
};
/// The change feed's recent history.
pub const SYNC: TierInfo = TierInfo {
    name: "sync",
    default_addr: "127.0.0.1:8085",
    about: "Follows the store's change feed, keeps recent history and feeds longpoll",
};
/// Durable comments.
pub const STORE: TierInfo = TierInfo {
    name: "store",
    default_addr: "127.0.0.1:8084",
    about: "Durable comments on fjall or PostgreSQL: sequence numbers, idempotency, the change feed",
};
/// The audit trail.
pub const LOGGER: TierInfo = TierInfo {
    name: "logger",
    default_addr: "127.0.0.1:8087",
    about: "The audit trail: every tier's events, kept and searchable",
};

/// Email notifications and webhooks.
pub const NOTIFY: TierInfo = TierInfo {
    name: "notify",
    default_addr: "127.0.0.1:8088",
    about: "Emails readers about replies and POSTs signed webhooks, from the store's change feed, through a durable outbox",
};

/// Every tier, from the public face inwards.
pub const TABLE: [TierInfo; 7] = [FRONTEND, LOGIC, LONGPOLL, SYNC, STORE, LOGGER, NOTIFY];

/// Where a tier listens, and how it stops.
#[derive(Debug, Clone, Args)]
pub struct Listen {
    /// Address to listen on.
    #[arg(long, env = "IO360_ADDR")]
    pub addr: Option<String>,

    /// Address of a second listener that serves only /metrics, /healthz and /readyz, so a
    /// network policy can let a metrics scraper in without opening the API to it. Unset: the
    /// endpoints are on the main address only.
    #[arg(long, env = "IO360_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// After SIGTERM, keep accepting and answering this many seconds, with /readyz unready and
    /// every connection closed after its answer, before closing the listener: the time a load
    /// balancer takes to stop sending requests here. A second signal cuts it short. In a
    /// Kubernetes pod the preStop hook first waits for the endpoints to drop the pod; this
    /// delay then moves clients off their keep-alive connections.
    #[arg(long, env = "IO360_SHUTDOWN_DELAY_SECS", default_value_t = 0.0)]
    pub shutdown_delay_secs: f64,
}

impl Listen {
    fn shutdown_delay(&self) -> anyhow::Result<std::time::Duration> {
        if !(0.0..=600.0).contains(&self.shutdown_delay_secs) {
            anyhow::bail!(
                "--shutdown-delay-secs (IO360_SHUTDOWN_DELAY_SECS) must be from 0 to 600, not {}",
                self.shutdown_delay_secs
            );
        }
        Ok(std::time::Duration::from_secs_f64(self.shutdown_delay_secs))
    }
}

impl Tier {
    fn listen(&self) -> &Listen {
        match self {
            Tier::Store { listen, .. }
            | Tier::Frontend { listen, .. }
            | Tier::Logic { listen, .. }
            | Tier::Logger { listen, .. }
            | Tier::Sync { listen, .. }
            | Tier::Longpoll { listen, .. }
            | Tier::Notify { listen, .. } => listen,
        }
    }

    /// This tier's row of the table.
    fn info(&self) -> TierInfo {
        match self {
            Tier::Store { .. } => STORE,
            Tier::Frontend { .. } => FRONTEND,
            Tier::Logic { .. } => LOGIC,
            Tier::Logger { .. } => LOGGER,
            Tier::Sync { .. } => SYNC,
            Tier::Longpoll { .. } => LONGPOLL,
            Tier::Notify { .. } => NOTIFY,
        }
    }
}

/// One tier and its configuration.
#[derive(Debug, Subcommand)]
pub enum Tier {
    #[command(about = STORE.help())]
    Store {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_store::Config,
        #[command(flatten)]
        engine: io360_store::EngineConfig,
    },
    #[command(about = FRONTEND.help())]
    Frontend {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_frontend::Config,
    },
    #[command(about = LOGIC.help())]
    Logic {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_logic::Config,
    },
    #[command(about = LOGGER.help())]
    Logger {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_logger::Config,
    },
    #[command(about = SYNC.help())]
    Sync {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_sync::Config,
    },
    #[command(about = LONGPOLL.help())]
    Longpoll {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_longpoll::Config,
    },
    #[command(about = NOTIFY.help())]
    Notify {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_notify::Config,
    },
}

/// Connections the kernel queues for a tier before the tier accepts them. A burst of browsers
/// reconnecting at once (after a longpoll instance restarts, or a page goes viral) must not
/// overflow the queue: past it the kernel falls back to SYN cookies and can reset connections.
/// Tokio's default is 1,024; the kernel caps this at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// Binds `addr`, saying which tier wanted it when that fails.
pub async fn bind(tier: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let cannot = || format!("{tier}: cannot listen on {addr}");
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await.with_context(cannot)? {
        match listen_on(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("the name resolves to no address"));
    Err(anyhow::Error::from(e).context(cannot()))
}

fn listen_on(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted tier can listen again while connections of
    // its previous run linger in TIME_WAIT. A port another process listens on stays refused.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Runs one tier until SIGINT or SIGTERM.
pub async fn serve_one(tier: Tier) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    let delay = tier.listen().shutdown_delay()?;
    if let Some(addr) = tier.listen().metrics_addr.as_deref() {
        let l = bind("metrics", addr).await?;
        let s = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = io360_common::serve::serve_metrics(l, s).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    tokio::spawn(async move { trigger.on_signals_after(delay).await });
    let info = tier.info();
    if info == LOGGER {
        no_huge_pages();
    }
    let l = bind(
        info.name,
        tier.listen().addr.as_deref().unwrap_or(info.default_addr),
    )
    .await?;
    match tier {
        Tier::Store { config, engine, .. } => {
            io360_store::serve_on(config, engine, l, shutdown).await?
        }
        Tier::Frontend { config, .. } => io360_frontend::serve(config, l, shutdown).await?,
        Tier::Logic { config, .. } => io360_logic::serve(config, l, shutdown).await?,
        Tier::Logger { config, .. } => io360_logger::serve(config, l, shutdown).await?,
        Tier::Sync { config, .. } => io360_sync::serve(config, l, shutdown).await?,
        Tier::Longpoll { config, .. } => io360_longpoll::serve(config, l, shutdown).await?,
        Tier::Notify { config, .. } => io360_notify::serve(config, l, shutdown).await?,
    }
    Ok(())
}

/// Turns transparent huge pages off for this process (the logger on its own). The logger
/// takes events in bursts of batches, and the allocator kept faulting in fresh huge pages for
/// them, each zeroed by the kernel: with them off, the logger used about a tenth less CPU per
/// event and about 50 against 80 MiB (3.9 against 4.4 µs, shipping 15,000 comment POSTs a
/// second). The request-serving tiers are faster with huge pages, so this is not done in
/// `io360 up`, where every tier shares the process. Linux only: elsewhere there is no such
/// switch, and nothing to do.
#[cfg(target_os = "linux")]
fn no_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off for the logger; it runs with them"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, Subcommand};

    use super::{TABLE, Tier, bind};

    /// The table of tiers as `docs/CONTRACTS.md` shows it.
    fn markdown() -> String {
        let mut out =
            String::from("| tier | `io360 serve` listens on | what it does |\n|---|---|---|\n");
        for t in TABLE {
            out += &format!("| `{}` | `{}` | {} |\n", t.name, t.default_addr, t.about);
        }
        out
    }

    #[test]
    fn serve_has_one_subcommand_per_row_of_the_table() {
        let cmd = Tier::augment_subcommands(clap::Command::new("serve"));
        let mut names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        let mut rows: Vec<&str> = TABLE.iter().map(|t| t.name).collect();
        names.sort();
        rows.sort();
        assert_eq!(names, rows);
        for row in TABLE {
            let matches = cmd
                .clone()
                .try_get_matches_from(["serve", row.name])
                .unwrap();
            let tier = Tier::from_arg_matches(&matches).unwrap();
            assert_eq!(tier.info(), row, "`serve {}` runs another tier", row.name);
        }
    }

    #[test]
    fn the_contracts_page_shows_the_table() {
        let page = include_str!("../../../docs/CONTRACTS.md");
        let (begin, end) = ("<!-- tiers: begin -->\n", "<!-- tiers: end -->");
        let start = page
            .find(begin)
            .expect("the page marks where the table goes")
            + begin.len();
        let stop = page.find(end).expect("the page marks where the table ends");
        assert_eq!(
            &page[start..stop],
            markdown(),
            "docs/CONTRACTS.md's table of tiers is not the table in workloads/io360/src/tiers.rs"
        );
    }

    #[tokio::test]
    async fn a_port_another_listener_holds_is_refused_with_the_tier_named() {
        let first = bind("store", "127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let err = bind("sync", &addr).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("sync: cannot listen on {addr}")),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");
    }

    #[tokio::test]
    async fn a_name_is_resolved_and_a_bad_one_is_named_in_the_error() {
        let l = bind("logic", "localhost:0").await.unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        let err = bind("logic", "no-such-host.invalid:1").await.unwrap_err();
        assert!(
            format!("{err:#}").contains("logic: cannot listen on no-such-host.invalid:1"),
            "{err:#}"
        );
    }
}
