//! A real PostgreSQL server for the tests of the store's PostgreSQL engine: `initdb` into a
//! temporary directory, `postgres` on 127.0.0.1 on a free port with its own socket directory,
//! stopped and removed when dropped. PostgreSQL refuses to run as root: as root, the server
//! runs as `nobody`, owning its directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test support: a panic is the failure report, and each test uses part of it"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server of the test's own.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    fsync: bool,
    tls: bool,
}

/// The newest PostgreSQL's binaries under `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL is not installed (no /usr/lib/postgresql): install the postgresql package",
        )
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb: install the postgresql package")
        .1
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs `program` as the server's user (`nobody` when the tests run as root),
/// in place of this process's child, so its pid is the program's own.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        // The kernel forgets a parent-death signal when the user changes: setpriv sets it
        // again, so a test run that is killed leaves no server behind.
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--pdeathsig=INT",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// Makes a database cluster and starts its server; answers once it takes connections.
    /// The tests' server does not fsync: a killed server loses nothing all the same, as the
    /// machine stays up.
    pub async fn start() -> Postgres {
        Postgres::start_with(false).await
    }

    /// A server that makes every commit durable with fsync, as in production.
    pub async fn start_durable() -> Postgres {
        Postgres::start_with(true).await
    }

    /// The server's major version, as its binaries' directory names it.
    pub fn version(&self) -> String {
        self.bin
            .parent()
            .and_then(|v| v.file_name())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// A server that takes TCP connections over TLS only (`hostssl` in `pg_hba.conf`), with
    /// this certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        Postgres::start_full(false, Some((cert_pem, key_pem))).await
    }

    async fn start_with(fsync: bool) -> Postgres {
        Postgres::start_full(fsync, None).await
    }

    async fn start_full(fsync: bool, tls: Option<(&str, &str)>) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("io360-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the server's directory");
        }
        let data = dir.path().join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            if is_root() {
                for f in ["server.crt", "server.key", "pg_hba.conf"] {
                    Command::new("chown")
                        .args(["65534:65534"])
                        .arg(data.join(f))
                        .status()
                        .unwrap();
                }
            }
        }
        std::fs::create_dir_all(dir.path().join("socket")).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["65534:65534"])
                .arg(dir.path().join("socket"))
                .status()
                .unwrap();
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            child: None,
            fsync,
            tls: tls.is_some(),
        };
        pg.up().await;
        pg
    }

    /// The connection string of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=2",
            self.port
        )
    }

    /// The connection string of a database of this server, created when missing.
    pub async fn database(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .unwrap();
        if exists.is_none() {
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap();
        }
        drop(client);
        let _ = driver.await;
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?connect_timeout=2",
            self.port
        )
    }

    /// Where readiness is probed: over TCP, or through the Unix socket for a server that
    /// takes TCP connections over TLS only.
    fn probe_url(&self) -> String {
        if self.tls {
            format!(
                "host={} port={} user=postgres dbname=postgres",
                self.dir.path().join("socket").display(),
                self.port
            )
        } else {
            self.url()
        }
    }

    async fn up(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = as_owner(&self.bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-k")
                .arg(self.dir.path().join("socket"))
                .args(["-c", if self.fsync { "fsync=on" } else { "fsync=off" }])
                .args(["-c", if self.tls { "ssl=on" } else { "ssl=off" }])
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap();
            self.child = Some(child);
            // Ready when it answers a query.
            while Instant::now() < deadline {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    // A server killed a moment ago may leave backends holding its shared
                    // memory for a moment: start again.
                    eprintln!("postgres exited at start ({status}); starting again");
                    self.child = None;
                    break;
                }
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&self.probe_url(), tokio_postgres::NoTls).await
                {
                    let driver = tokio::spawn(conn);
                    let ok = client.simple_query("SELECT 1").await.is_ok();
                    drop(client);
                    let _ = driver.await;
                    if ok {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                Instant::now() < deadline,
                "postgres never took connections; its log: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn signal(&mut self, sig: &str) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        self.child = None;
    }

    /// Stops the server (a fast shutdown: sessions are ended, the WAL flushed).
    pub fn stop(&mut self) {
        self.signal("-INT");
    }

    /// Kills the server's postmaster with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.up().await;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // An immediate shutdown: the directory is removed next.
        self.signal("-QUIT");
    }
}
