//! The list of tiers: how each is configured and started.

use anyhow::Context;
use clap::{Args, Subcommand};
use io360_common::serve::Shutdown;
use tokio::net::{TcpListener, TcpSocket};

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
            | Tier::Longpoll { listen, .. } => listen,
        }
    }
}

/// One tier and its configuration.
#[derive(Debug, Subcommand)]
pub enum Tier {
    /// Durable comments on fjall (default address 127.0.0.1:8084).
    Store {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_store::Config,
    },
    /// The site's pages with comment snapshots, and the widget (default address 127.0.0.1:8080).
    Frontend {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_frontend::Config,
    },
    /// The public comment API (default address 127.0.0.1:8081).
    Logic {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_logic::Config,
    },
    /// The audit log (default address 127.0.0.1:8087).
    Logger {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_logger::Config,
    },
    /// Follows the store's change feed and feeds longpoll (default address 127.0.0.1:8085).
    Sync {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_sync::Config,
    },
    /// Holds browsers' long polls and event streams (default address 127.0.0.1:8086).
    Longpoll {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        config: io360_longpoll::Config,
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
    match tier {
        Tier::Store { listen, config } => {
            let l = bind("store", listen.addr.as_deref().unwrap_or("127.0.0.1:8084")).await?;
            io360_store::serve(config, l, shutdown).await?;
        }
        Tier::Frontend { listen, config } => {
            let l = bind(
                "frontend",
                listen.addr.as_deref().unwrap_or("127.0.0.1:8080"),
            )
            .await?;
            io360_frontend::serve(config, l, shutdown).await?;
        }
        Tier::Logic { listen, config } => {
            let l = bind("logic", listen.addr.as_deref().unwrap_or("127.0.0.1:8081")).await?;
            io360_logic::serve(config, l, shutdown).await?;
        }
        Tier::Logger { listen, config } => {
            no_huge_pages();
            let l = bind("logger", listen.addr.as_deref().unwrap_or("127.0.0.1:8087")).await?;
            io360_logger::serve(config, l, shutdown).await?;
        }
        Tier::Sync { listen, config } => {
            let l = bind("sync", listen.addr.as_deref().unwrap_or("127.0.0.1:8085")).await?;
            io360_sync::serve(config, l, shutdown).await?;
        }
        Tier::Longpoll { listen, config } => {
            let l = bind(
                "longpoll",
                listen.addr.as_deref().unwrap_or("127.0.0.1:8086"),
            )
            .await?;
            io360_longpoll::serve(config, l, shutdown).await?;
        }
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
    use super::bind;

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
