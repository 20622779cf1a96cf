//! What logic tells the audit trail, and who may not comment.
//!
//! Every action a reader or a moderator takes through logic becomes an audit event shipped to
//! the logger (see `io360_logger::Shipper`; shipping never slows the request). Bans live in
//! store so every replica enforces the same list; each replica keeps a parsed copy here,
//! refreshed every few seconds and at once when a moderator changes it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use io360_logger::{Event, Kind};
use io360_store::api::Bans;
use ipnet::IpNet;

/// The tier name stamped on logic's events.
pub const TIER: &str = "logic";

/// How a reader appears in the trail: their display name, or `anonymous`.
pub fn reader(author: Option<&str>) -> String {
    match author {
        Some(a) if !a.is_empty() => a.to_owned(),
        _ => "anonymous".to_owned(),
    }
}

/// A new event of `kind` done by `actor`.
pub fn event(kind: Kind, actor: impl Into<String>) -> Event {
    Event::now(kind, TIER, actor)
}

/// Parsed bans, shared by the request handlers.
#[derive(Debug, Clone, Default)]
pub struct BanList {
    inner: Arc<RwLock<Parsed>>,
}

#[derive(Debug, Default)]
struct Parsed {
    authors: HashSet<String>,
    ranges: Vec<IpNet>,
}

/// Why a post is refused by a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Banned {
    /// The author is banned.
    Author,
    /// The address is in a banned range.
    Address,
}

impl BanList {
    /// Replaces the parsed copy with the store's list.
    pub fn set(&self, bans: &Bans) {
        let parsed = Parsed {
            authors: bans.authors.iter().map(|a| a.key.clone()).collect(),
            ranges: bans
                .ranges
                .iter()
                .filter_map(|r| r.cidr.parse::<IpNet>().ok())
                .collect(),
        };
        if let Ok(mut p) = self.inner.write() {
            *p = parsed;
        }
    }

    /// Whether a post by `author_key` from `ip` is refused.
    pub fn check(&self, author_key: Option<&str>, ip: IpAddr) -> Option<Banned> {
        let p = self.inner.read().ok()?;
        if author_key.is_some_and(|k| p.authors.contains(k)) {
            return Some(Banned::Author);
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        p.ranges
            .iter()
            .any(|r| r.contains(&ip))
            .then_some(Banned::Address)
    }
}

/// Parses an address range (`203.0.113.0/24`, `2001:db8::/48`, or one address) into its
/// canonical CIDR form.
pub fn parse_range(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let net: IpNet = match raw.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(raw.parse::<IpAddr>().ok()?),
    };
    Some(net.trunc().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use io360_store::api::{BannedAuthor, BannedRange};

    #[test]
    fn bans_match_authors_and_ranges() {
        let list = BanList::default();
        list.set(&Bans {
            authors: vec![BannedAuthor {
                key: "k1".into(),
                label: "Ann".into(),
                since: String::new(),
            }],
            ranges: vec![BannedRange {
                cidr: parse_range("203.0.113.9/24").unwrap(),
                since: String::new(),
            }],
        });
        let home: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(list.check(Some("k1"), home), Some(Banned::Author));
        assert_eq!(list.check(Some("k2"), home), None);
        assert_eq!(
            list.check(None, "203.0.113.200".parse().unwrap()),
            Some(Banned::Address)
        );
        assert_eq!(
            list.check(None, "::ffff:203.0.113.5".parse().unwrap()),
            Some(Banned::Address)
        );
        assert_eq!(
            parse_range("203.0.113.9/24").as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(parse_range("10.1.2.3").as_deref(), Some("10.1.2.3/32"));
        assert_eq!(parse_range("nonsense"), None);
    }
}
