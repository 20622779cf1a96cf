//! A mail server for tests: speaks SMTP on loopback (EHLO, AUTH PLAIN, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT), keeps every message it accepts, and can be stopped and started on the
//! same port to play a mail server that is down for a while.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope recipients.
    pub rcpt: Vec<String>,
    /// The message as sent after DATA, with CRLFs and dot-stuffing undone.
    pub data: String,
}

impl Received {
    /// The value of a header (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut()
                && (line.starts_with(' ') || line.starts_with('\t'))
            {
                v.push_str(line.trim_start());
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// The body with quoted-printable soft breaks and escapes undone, enough to find links.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let joined = body.replace("=\r\n", "");
        let mut out = String::new();
        let mut chars = joined.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '=' {
                let h: String = chars.clone().take(2).collect();
                if h.len() == 2
                    && let Ok(b) = u8::from_str_radix(&h, 16)
                {
                    out.push(b as char);
                    chars.next();
                    chars.next();
                    continue;
                }
            }
            out.push(c);
        }
        out
    }
}

/// The server: what it received, and its listener while up.
pub struct MailServer {
    /// The address it listens on: loopback, or where a test's pods can reach it.
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// When set, a message is kept but its `250` is never answered: the state of a server
    /// that took a message just before its client died.
    pub stall: Arc<AtomicBool>,
    /// The user name and password a client must log in with (`AUTH PLAIN`) before `MAIL`;
    /// `None`: no login.
    pub login: Option<(String, String)>,
    /// Every login a client tried, as (user, accepted).
    pub logins: Arc<Mutex<Vec<(String, bool)>>>,
    task: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    stall: Arc<AtomicBool>,
    login: Option<(String, String)>,
    logins: Arc<Mutex<Vec<(String, bool)>>>,
}

impl MailServer {
    /// Starts on a free loopback port.
    pub async fn start() -> MailServer {
        Self::start_with(std::net::Ipv4Addr::LOCALHOST, None).await
    }

    /// Starts on a free loopback port, taking mail only from a client logged in as `user`
    /// with `password`.
    pub async fn start_with_login(user: &str, password: &str) -> MailServer {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST, user, password).await
    }

    /// As [`MailServer::start_with_login`], on a free port of `ip`.
    pub async fn start_at(ip: std::net::Ipv4Addr, user: &str, password: &str) -> MailServer {
        Self::start_with(ip, Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start_with(ip: std::net::Ipv4Addr, login: Option<(String, String)>) -> MailServer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut s = MailServer {
            ip,
            port,
            received: Arc::default(),
            stall: Arc::default(),
            login,
            logins: Arc::default(),
            task: None,
        };
        s.task = Some(tokio::spawn(accept(listener, s.shared())));
        s
    }

    fn shared(&self) -> Shared {
        Shared {
            received: self.received.clone(),
            stall: self.stall.clone(),
            login: self.login.clone(),
            logins: self.logins.clone(),
        }
    }

    /// Stops listening: connections are refused until [`MailServer::up`].
    pub async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            // The listener closes when the aborted task is dropped: wait for that.
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind((self.ip, self.port)).await.unwrap();
        self.task = Some(tokio::spawn(accept(listener, self.shared())));
    }

    pub fn url(&self) -> String {
        format!("smtp://{}:{}", self.ip, self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn to(&self, rcpt: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpt.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
            .collect()
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn accept(listener: TcpListener, shared: Shared) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        conns.spawn(session(sock, shared.clone()));
    }
}

/// Checks `AUTH PLAIN <base64 of "\0user\0password">` against the expected login.
fn plain_login(arg: &str, shared: &Shared) -> bool {
    use base64::Engine as _;
    let Some((user, password)) = shared.login.as_ref() else {
        return false;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(arg.trim())
        .unwrap_or_default();
    let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
    let (got_user, got_password) = match parts.as_slice() {
        [_, u, p] => (String::from_utf8_lossy(u), String::from_utf8_lossy(p)),
        _ => return false,
    };
    let ok = got_user == user.as_str() && got_password == password.as_str();
    shared
        .logins
        .lock()
        .unwrap()
        .push((got_user.into_owned(), ok));
    ok
}

async fn session(sock: tokio::net::TcpStream, shared: Shared) {
    let Shared {
        received, stall, ..
    } = shared.clone();
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let _ = w.write_all(b"220 mail.test ESMTP\r\n").await;
    let mut rcpt = Vec::new();
    let mut logged_in = shared.login.is_none();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") && shared.login.is_some() {
            b"250-mail.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
        } else if cmd.starts_with("EHLO") {
            b"250-mail.test\r\n250 8BITMIME\r\n"
        } else if cmd.starts_with("AUTH PLAIN ") {
            // The argument is case-sensitive base64: take it from the line as sent.
            let raw = line.trim_end()["AUTH PLAIN ".len()..].to_owned();
            if plain_login(&raw, &shared) {
                logged_in = true;
                b"235 2.7.0 accepted\r\n"
            } else {
                b"535 5.7.8 bad user name or password\r\n"
            }
        } else if cmd.starts_with("MAIL FROM") && !logged_in {
            b"530 5.7.0 log in first\r\n"
        } else if cmd.starts_with("HELO") || cmd.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if cmd.starts_with("MAIL FROM") {
            rcpt.clear();
            b"250 OK\r\n"
        } else if cmd.starts_with("RCPT TO") {
            let addr = line.trim_end()[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_owned();
            rcpt.push(addr);
            b"250 OK\r\n"
        } else if cmd == "DATA" {
            let _ = w.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            received.lock().unwrap().push(Received {
                rcpt: std::mem::take(&mut rcpt),
                data,
            });
            if stall.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            b"250 queued\r\n"
        } else if cmd.starts_with("RSET") {
            rcpt.clear();
            b"250 OK\r\n"
        } else if cmd.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        if w.write_all(reply).await.is_err() {
            return;
        }
    }
}
