//! What one client may hold, and the descriptors kept for pages.
//!
//! Every connection, every proxied request and every held poll costs file descriptors (a held
//! poll through `io360 up` costs three: the browser's connection, the connection on to
//! longpoll, and longpoll's end of it), and the table is shared by everything in the process.
//! So one client address may hold at most so many connections and so many `/api` and `/v1`
//! requests at once, and the last part of the table is kept for pages: when what is open
//! nears the limit, dynamic requests are refused with 503 and idle connections are closed
//! sooner, while page requests keep being answered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use io360_common::Problem;

/// Limits on what clients hold. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Clients {
    per_client_connections: usize,
    per_client_dynamic: usize,
    /// Descriptors the process may have open before only pages are served.
    budget: usize,
    connections: Mutex<HashMap<IpAddr, usize>>,
    dynamic: Mutex<HashMap<IpAddr, usize>>,
    /// Open descriptors as last counted, and what this tier opened since.
    counted: AtomicUsize,
    opened_since: AtomicUsize,
}

impl Clients {
    /// Limits with `per_client_connections` and `per_client_dynamic` per address (0: none),
    /// and a process limit of `nofile` descriptors of which `reserve` are kept for pages.
    pub fn new(
        per_client_connections: usize,
        per_client_dynamic: usize,
        nofile: usize,
        reserve: usize,
    ) -> Clients {
        let cap = |n: usize| if n == 0 { usize::MAX } else { n };
        Clients {
            per_client_connections: cap(per_client_connections),
            per_client_dynamic: cap(per_client_dynamic),
            budget: nofile.saturating_sub(reserve),
            connections: Mutex::new(HashMap::new()),
            dynamic: Mutex::new(HashMap::new()),
            counted: AtomicUsize::new(0),
            opened_since: AtomicUsize::new(0),
        }
    }

    /// Counts a new connection from `ip`; `None` when that address holds its share already.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        take(&self.connections, ip, self.per_client_connections)?;
        self.opened_since.fetch_add(1, Ordering::Relaxed);
        Some(Held {
            clients: self.clone(),
            ip,
            dynamic: false,
        })
    }

    /// Admits an `/api`, `/admin` or `/v1` request from `ip`, for as long as the answer lasts.
    pub fn admit_dynamic(self: &Arc<Self>, ip: IpAddr) -> Result<Held, Problem> {
        // Two more descriptors: the connection on to the other tier, and its far end when
        // that tier runs in this process.
        if self.in_use() + 2 > self.budget {
            return Err(Problem::unavailable(
                "overloaded",
                "io360 is holding as many connections as it can; comments will be back in a moment",
                Duration::from_secs(5),
            ));
        }
        if take(&self.dynamic, ip, self.per_client_dynamic).is_none() {
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests-open",
                format!(
                    "your address has {} comment requests open already; close some first",
                    self.per_client_dynamic
                ),
            );
            p.retry_after = Some(5);
            return Err(p);
        }
        self.opened_since.fetch_add(2, Ordering::Relaxed);
        Ok(Held {
            clients: self.clone(),
            ip,
            dynamic: true,
        })
    }

    /// Whether descriptors are scarce: idle connections should then be let go quickly.
    pub fn scarce(&self) -> bool {
        self.in_use() > self.budget
    }

    fn in_use(&self) -> usize {
        self.counted.load(Ordering::Relaxed) + self.opened_since.load(Ordering::Relaxed)
    }

    /// Counts the process's open descriptors now and then (Linux), so the budget covers what
    /// every tier in the process holds, not only this one's connections.
    pub async fn count_descriptors(self: Arc<Self>, shutdown: io360_common::serve::Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            let counted = tokio::task::spawn_blocking(|| {
                std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok()
            })
            .await
            .ok()
            .flatten();
            match counted {
                Some(n) => {
                    self.counted.store(n, Ordering::Relaxed);
                    self.opened_since.store(0, Ordering::Relaxed);
                }
                // No /proc: count only what this tier holds.
                None if self.counted.load(Ordering::Relaxed) == 0 => return,
                // The table is full (the count needs a descriptor too): keep the last count
                // and what was opened since, which says as much.
                None => {}
            }
        }
    }
}

/// Takes one of `ip`'s `cap` places in `map`.
fn take(map: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr, cap: usize) -> Option<()> {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    let n = m.entry(ip).or_insert(0);
    if *n >= cap {
        return None;
    }
    *n += 1;
    Some(())
}

/// A connection or request counted against its client; let go when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    clients: Arc<Clients>,
    ip: IpAddr,
    dynamic: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let map = if self.dynamic {
            &self.clients.dynamic
        } else {
            &self.clients.connections
        };
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The process's limit on open descriptors.
pub(crate) fn open_file_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and has no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
        lim.rlim_cur as usize
    } else {
        1 << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_its_share_and_gives_it_back() {
        let c = Arc::new(Clients::new(2, 1, 10_000, 100));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let one = c.connect(a).unwrap();
        let _two = c.connect(a).unwrap();
        assert!(c.connect(a).is_none());
        assert!(c.connect(b).is_some());
        drop(one);
        assert!(c.connect(a).is_some());
        let held = c.admit_dynamic(a).unwrap();
        assert_eq!(c.admit_dynamic(a).unwrap_err().status, 429);
        drop(held);
        assert!(c.admit_dynamic(a).is_ok());
    }

    #[test]
    fn the_reserve_refuses_dynamic_requests_only() {
        let c = Arc::new(Clients::new(100, 100, 1000, 100));
        c.counted.store(899, Ordering::Relaxed);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(c.admit_dynamic(ip).unwrap_err().status, 503);
        assert!(c.connect(ip).is_some());
        assert!(!c.scarce());
        c.counted.store(950, Ordering::Relaxed);
        assert!(c.scarce());
        c.counted.store(500, Ordering::Relaxed);
        c.opened_since.store(0, Ordering::Relaxed);
        assert!(c.admit_dynamic(ip).is_ok());
        assert!(!c.scarce());
    }
}
