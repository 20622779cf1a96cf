//! Who the client is, and how often it may act.
//!
//! The client address comes from the connection, or, behind a trusted proxy, from the header
//! that proxy sets (its last entry: the address the proxy itself saw). Addresses are kept only
//! truncated (/24 for IPv4, /48 for IPv6), as Isso does.
//!
//! Limits and votes count per network, not per address: one client can use every address of
//! an IPv4 /24 it controls, and an IPv6 client is given a /64 or more, so counting per address
//! would give it hundreds of posts and votes. The cost: readers who share a /24 share a budget
//! and one vote per comment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, StatusCode};
use io360_common::Problem;

/// The client's address, from the trusted proxy header when one is configured.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trusted_header: Option<&str>) -> IpAddr {
    if let Some(name) = trusted_header
        && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
        && let Some(last) = v.rsplit(',').next()
        && let Ok(ip) = last.trim().parse::<IpAddr>()
    {
        return ip;
    }
    peer.ip()
}

/// The address with its host part zeroed.
pub fn truncate(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Ipv4Addr::new(o[0], o[1], o[2], 0).to_string()
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
    }
}

/// The network an address counts for: its IPv4 /24 or its IPv6 /64.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A per-network rate limit (see [`network`]).
#[derive(Clone)]
pub struct Limit {
    what: &'static str,
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl Limit {
    /// `per_minute` actions a minute with bursts of `burst`; 0 switches the limit off.
    pub fn new(what: &'static str, per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            let burst = NonZeroU32::new(burst).unwrap_or(n);
            Arc::new(RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst)))
        });
        Limit { what, limiter }
    }

    /// Counts one action by `ip`'s network, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Problem> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&network(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + 1;
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "too many {} from your network; try again in {secs} s",
                    self.what
                ),
            );
            p.retry_after = Some(secs);
            p
        })
    }

    /// Forgets clients that have been quiet; call now and then to bound memory.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// How often idle clients are forgotten.
pub const FORGET_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_addresses() {
        assert_eq!(truncate("203.0.113.77".parse().unwrap()), "203.0.113.0");
        assert_eq!(
            truncate("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1::"
        );
    }

    #[test]
    fn networks() {
        let n = |a: &str| network(a.parse().unwrap()).to_string();
        assert_eq!(n("203.0.113.77"), "203.0.113.0");
        assert_eq!(n("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(n("::ffff:203.0.113.77"), "203.0.113.0");
    }

    #[test]
    fn one_network_shares_one_limit() {
        let l = Limit::new("posts", 2, 2);
        assert!(l.check("192.0.2.1".parse().unwrap()).is_ok());
        assert!(l.check("192.0.2.2".parse().unwrap()).is_ok());
        assert!(l.check("192.0.2.3".parse().unwrap()).is_err());
        assert!(l.check("192.0.3.1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8::1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8::ffff:2".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8::3".parse().unwrap()).is_err());
    }

    #[test]
    fn trusted_header_wins_only_when_configured() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9".parse().unwrap(),
        );
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(client_ip(&h, peer, None), peer.ip());
        assert_eq!(
            client_ip(&h, peer, Some("x-forwarded-for")),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn limit_refuses_after_burst() {
        let l = Limit::new("posts", 2, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(ip).is_ok());
        assert!(l.check(ip).is_ok());
        let p = l.check(ip).unwrap_err();
        assert_eq!(p.status, 429);
        assert!(p.retry_after.is_some());
        assert!(Limit::new("posts", 0, 0).check(ip).is_ok());
    }
}
