//! A PostgreSQL server for the real node's pods: Debian's PostgreSQL, run by the harness as
//! a process in the run's namespaces and listening on the node's address, as a database a
//! site runs beside its cluster would. Store pods reach it at `NODE_IP:5432` with a password
//! (SCRAM); the data directory is the run's and goes with it.
//!
//! PostgreSQL refuses to run as root, so it runs as `nobody` (through `setpriv`), its data and
//! socket directories owned by that user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::isolate::NODE_IP;
use crate::process::{Process, run_blocking};
use crate::{Error, Result, wait};

/// The port the server listens on, at the node's address and on the namespace's loopback.
pub const POSTGRES_PORT: u16 = 5432;
/// The database and role the store uses.
const DATABASE: &str = "io360";
/// `nobody`.
const UID: u32 = 65534;

/// A running PostgreSQL server; stopped on drop.
#[derive(Debug)]
pub struct PostgresServer {
    process: Process,
    password: String,
    bin: PathBuf,
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| Error::MissingTool {
            tool: format!(
                "PostgreSQL (Debian package postgresql; tests/run-all.sh installs it): {e}"
            ),
            path: "/usr/lib/postgresql".into(),
        })?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::MissingTool {
            tool: "PostgreSQL (Debian package postgresql; tests/run-all.sh installs it)".into(),
            path: "/usr/lib/postgresql/*/bin/postgres".into(),
        })
}

fn chown_nobody(path: &Path) -> Result<()> {
    std::os::unix::fs::chown(path, Some(UID), Some(UID))
        .map_err(|e| Error::io(format!("giving {} to nobody", path.display()), e))
}

/// `setpriv` arguments that run a program as `nobody`. The kernel forgets a parent-death
/// signal when the user changes, so `setpriv` sets it again: a killed run leaves no server.
fn as_nobody(program: &Path) -> Vec<String> {
    vec![
        format!("--reuid={UID}"),
        format!("--regid={UID}"),
        "--clear-groups".into(),
        "--pdeathsig=INT".into(),
        program.display().to_string(),
    ]
}

impl PostgresServer {
    /// Makes a cluster in `dir/postgres` and starts it; waits until it accepts connections.
    pub(crate) async fn start(dir: &Path) -> Result<PostgresServer> {
        let bin = bin_dir()?;
        let root = dir.join("postgres");
        let data = root.join("data");
        let sockets = root.join("sockets");
        for d in [&root, &sockets] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            chown_nobody(d)?;
        }
        let password = format!("{:032x}", rand_u128());
        let pwfile = root.join("password");
        std::fs::write(&pwfile, &password)
            .map_err(|e| Error::io(format!("writing {}", pwfile.display()), e))?;
        chown_nobody(&pwfile)?;

        let mut initdb = as_nobody(&bin.join("initdb"));
        initdb.extend([
            format!("--pgdata={}", data.display()),
            format!("--username={DATABASE}"),
            format!("--pwfile={}", pwfile.display()),
            "--auth-local=trust".into(),
            "--auth-host=scram-sha-256".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
        ]);
        let args: Vec<&str> = initdb.iter().map(String::as_str).collect();
        run_blocking("setpriv", &args)?;
        // Store pods connect from the pod network, with the password.
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba)
            .map_err(|e| Error::io(format!("reading {}", hba.display()), e))?;
        rules.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
        std::fs::write(&hba, rules)
            .map_err(|e| Error::io(format!("writing {}", hba.display()), e))?;

        let mut args = as_nobody(&bin.join("postgres"));
        args.extend([
            "-D".into(),
            data.display().to_string(),
            "-c".into(),
            format!("listen_addresses=127.0.0.1,{NODE_IP}"),
            "-c".into(),
            format!("port={POSTGRES_PORT}"),
            "-c".into(),
            format!("unix_socket_directories={}", sockets.display()),
            "-c".into(),
            "max_connections=200".into(),
        ]);
        let process = Process::start(
            "postgres",
            Path::new("/usr/bin/setpriv"),
            args,
            root.join("postgres.log"),
        )?;
        let mut server = PostgresServer {
            process,
            password,
            bin,
        };
        let ready = server.bin.join("pg_isready");
        wait::until(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let ready = ready.clone();
                async move {
                    run_blocking(
                        &ready.display().to_string(),
                        &["-h", "127.0.0.1", "-p", &POSTGRES_PORT.to_string()],
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                }
            },
        )
        .await
        .map_err(|e| match server.process.check_running() {
            Err(dead) => dead,
            Ok(()) => e,
        })?;
        let mut createdb = as_nobody(&server.bin.join("createdb"));
        createdb.extend([
            "-h".into(),
            sockets.display().to_string(),
            "-p".into(),
            POSTGRES_PORT.to_string(),
            "-U".into(),
            DATABASE.into(),
            DATABASE.into(),
        ]);
        let args: Vec<&str> = createdb.iter().map(String::as_str).collect();
        run_blocking("setpriv", &args)?;
        Ok(server)
    }

    /// The URL store pods connect with: the node's address, the password, no TLS.
    pub fn url(&self) -> String {
        format!(
            "postgres://{DATABASE}:{}@{NODE_IP}:{POSTGRES_PORT}/{DATABASE}?sslmode=disable",
            self.password
        )
    }

    /// Fails with a log tail if the server has died.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }
}

/// 128 random bits from the kernel, for the password.
fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u128::from_le_bytes(bytes)
}
