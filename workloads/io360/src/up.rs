//! `io360 up`: every tier in one process, on loopback, with the public face on `--addr`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use io360_common::serve::Shutdown;
use tokio::task::JoinSet;

use crate::tiers::{FRONTEND, LOGGER, LOGIC, LONGPOLL, NOTIFY, STORE, SYNC, TABLE, TierInfo, bind};

/// What `io360 up --help` says after its flags.
const AFTER_HELP: &str = "\
Every tier reads its IO360_* environment variables as under `io360 serve <tier>` (see
`io360 serve <tier> --help`), with the same meaning: IO360_MODERATION=all io360 up holds every
comment. `io360 up` sets these itself, as the tiers find each other on loopback and share one
data directory: IO360_ADDR (the public face; --addr), IO360_DATA_DIR (--data-dir),
IO360_SITE_DIR (--site), IO360_STORE_URL, IO360_SYNC_URL, IO360_LOGIC_URL, IO360_LONGPOLL_URL,
IO360_LOGGER_URL, IO360_PUBLIC_URL, IO360_TIER_TOKEN_FILE and IO360_TIER_KEYS_FILE (a key in
memory, new at every start). Without IO360_ADMIN_TOKEN or IO360_ADMIN_TOKEN_FILE, the admin
token is the one saved in the data directory, or a new one saved there.";

/// Flags of `io360 up`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct UpArgs {
    /// The public address: pages, /api, /v1, /embed.js, /admin.
    #[arg(long, env = "IO360_ADDR", default_value = "127.0.0.1:8080")]
    addr: String,

    /// Where comments and the admin token are kept.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// The site's static files (default: the demo site shipped with io360).
    #[arg(long, env = "IO360_SITE_DIR")]
    site: Option<PathBuf>,
}

/// The admin token: from the environment, else the one saved in the data directory, else a new
/// one saved there (so edit tokens keep working across restarts).
pub(crate) fn admin_token(
    given: Option<String>,
    data_dir: &Path,
) -> anyhow::Result<(String, bool)> {
    if let Some(t) = given {
        return Ok((t, false));
    }
    let path = data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            return Ok((t, true));
        }
    }
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    write_private(&path, &token)
        .with_context(|| format!("cannot save the admin token in {}", path.display()))?;
    Ok((token, true))
}

pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}

/// A tier's configuration from its defaults and `IO360_*` variables (no flags).
pub(crate) fn default_config<C: clap::Args>() -> C {
    #[derive(clap::Parser)]
    struct Defaults<C: clap::Args> {
        #[command(flatten)]
        config: C,
    }
    <Defaults<C> as clap::Parser>::parse_from(["io360"]).config
}

/// A tier's serve future, labelled with its name for the join set.
async fn tier<E: Into<anyhow::Error>>(
    name: &'static str,
    serve: impl std::future::Future<Output = Result<(), E>>,
) -> (&'static str, anyhow::Result<()>) {
    (name, serve.await.map_err(Into::into))
}

/// Runs every tier until SIGINT or SIGTERM, or until one of them fails.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let mut logic = default_config::<io360_logic::Config>();
    logic.read_admin_token_file().map_err(anyhow::Error::msg)?;
    let (token, from_file) = admin_token(logic.admin_token.take(), &args.data_dir)?;

    // Every tier but the frontend listens on a loopback port of its own; the frontend is the
    // public face.
    let mut inner = Vec::new();
    for t in TABLE.iter().filter(|t| **t != FRONTEND) {
        let l = bind(t.name, "127.0.0.1:0").await?;
        let url = format!("http://{}", l.local_addr()?);
        inner.push((t.name, l, url));
    }
    let mut take = |t: TierInfo| {
        let i = inner.iter().position(|(name, ..)| *name == t.name);
        let (_, l, url) = inner.swap_remove(i.context("every inner tier is bound")?);
        anyhow::Ok((l, url))
    };
    let (store_l, store_url) = take(STORE)?;
    let (logger_l, logger_url) = take(LOGGER)?;
    let (sync_l, sync_url) = take(SYNC)?;
    let (longpoll_l, longpoll_url) = take(LONGPOLL)?;
    let (logic_l, logic_url) = take(LOGIC)?;
    let (notify_l, notify_url) = take(NOTIFY)?;
    let public = bind("public face", &args.addr).await?;
    let public_addr = public.local_addr()?;

    // The tiers know each other by credentials made from a key that lives in this process's
    // memory only: nothing on disk, a new one at every start.
    let keyring = io360_common::auth::Keyring::generate();
    let tier_auth = io360_common::auth::TierAuthConfig::in_memory(&keyring);

    logic.store_url = store_url.clone();
    logic.tier_auth = tier_auth.clone();
    // Every tier ships its audit events (and its start and stop) to the logger.
    let audit = io360_logger::ShipperConfig {
        logger_url: Some(logger_url),
        ..io360_logger::ShipperConfig::default()
    };
    logic.audit = audit.clone();
    logic.admin_token = Some(token.clone());
    logic.public_url = format!("http://{public_addr}");
    // An uploaded import sorts next to the data it goes into.
    logic
        .import_scratch_dir
        .get_or_insert_with(|| args.data_dir.clone());
    // Email notifications run when a mail server is configured (IO360_SMTP_URL).
    let mut notify = default_config::<io360_notify::Config>();
    let notify_on = notify.enabled();
    if notify_on {
        logic.notify_url = Some(notify_url);
        logic.notify_email = notify.smtp_url.is_some();
        notify.store_url = store_url.clone();
        notify.data_dir = args.data_dir.join("notify");
        notify.tier_auth = tier_auth.clone();
        notify.audit = audit.clone();
        notify
            .public_url
            .get_or_insert_with(|| logic.public_url.clone());
    }
    // Browsers reach logic through the frontend, which appends their address to this header.
    logic
        .trusted_proxy_header
        .get_or_insert_with(|| "x-forwarded-for".to_owned());

    let frontend = io360_frontend::Config {
        site_dir: args.site,
        logic_url: Some(logic_url.clone()),
        longpoll_url: Some(longpoll_url),
        audit: audit.clone(),
        tier_auth: tier_auth.clone(),
        ..default_config::<io360_frontend::Config>()
    };

    let sync = io360_sync::Config {
        store_url: store_url.clone(),
        audit: audit.clone(),
        tier_auth: tier_auth.clone(),
        ..default_config::<io360_sync::Config>()
    };
    let longpoll = io360_longpoll::Config {
        sync_url,
        // Asked whether comments are suspended, so open pages learn of it at once.
        logic_url: Some(logic_url),
        audit: audit.clone(),
        tier_auth: tier_auth.clone(),
        ..default_config::<io360_longpoll::Config>()
    };

    let store = io360_store::Config {
        data_dir: args.data_dir.join("store"),
        audit,
        tier_auth: tier_auth.clone(),
        ..default_config::<io360_store::Config>()
    };

    let (trigger, shutdown) = Shutdown::new();
    let mut tiers: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let logger = io360_logger::Config {
        data_dir: args.data_dir.join("logger"),
        tier_auth,
        ..default_config::<io360_logger::Config>()
    };
    // The logger stops last, so the other tiers' `tier.stopped` events still reach it.
    let (logger_trigger, logger_shutdown) = Shutdown::new();
    tiers.spawn(tier(
        LOGGER.name,
        io360_logger::serve(logger, logger_l, logger_shutdown),
    ));
    tiers.spawn(tier(
        STORE.name,
        io360_store::serve(store, store_l, shutdown.clone()),
    ));
    // Sync after store, longpoll after sync: each retries its upstream until it answers.
    tiers.spawn(tier(
        SYNC.name,
        io360_sync::serve(sync, sync_l, shutdown.clone()),
    ));
    tiers.spawn(tier(
        LONGPOLL.name,
        io360_longpoll::serve(longpoll, longpoll_l, shutdown.clone()),
    ));
    if notify_on {
        tiers.spawn(tier(
            NOTIFY.name,
            io360_notify::serve(notify, notify_l, shutdown.clone()),
        ));
    } else {
        drop(notify_l);
    }
    tiers.spawn(tier(
        LOGIC.name,
        io360_logic::serve(logic, logic_l, shutdown.clone()),
    ));
    tiers.spawn(tier(
        FRONTEND.name,
        io360_frontend::serve(frontend, public, shutdown.clone()),
    ));

    println!("io360 is up on http://{public_addr}/");
    if from_file {
        println!(
            "admin token (kept in {}): {token}",
            args.data_dir.join("admin-token").display()
        );
    }
    println!("press Ctrl-C to stop");

    let signals = trigger.on_signals();
    tokio::pin!(signals);
    let mut failure = None;
    loop {
        tokio::select! {
            _ = &mut signals => break,
            done = tiers.join_next() => {
                let Some(done) = done else { break };
                let (name, result) = done.context("a tier task panicked")?;
                if let Err(e) = result {
                    // One tier down takes the process down cleanly: stop the others too.
                    failure = Some(e.context(format!("the {name} tier stopped")));
                    trigger.trigger();
                    break;
                }
            }
        }
    }
    trigger.trigger();
    while let Some(done) = tiers.join_next().await {
        if let Ok((name, Err(e))) = done {
            tracing::warn!(tier = name, error = %e, "tier stopped with an error during shutdown");
        }
        if tiers.len() <= 1 {
            logger_trigger.trigger();
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
