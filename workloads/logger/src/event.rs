//! The audit event: what happened, who did it, where, and when.
//!
//! One typed model shared by the tiers that ship events and the logger that stores them, so a
//! kind the logger does not know is refused at the door (400 naming `events[i].kind`) instead
//! of being stored as noise. Personal data in an event is limited to the actor's display name,
//! a pseudonymous author key (for erase and export requests) and a truncated client address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use io360_common::Problem;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// A comment was published or held.
    #[serde(rename = "comment.posted")]
    CommentPosted,
    /// A comment's text was changed by its author.
    #[serde(rename = "comment.edited")]
    CommentEdited,
    /// A comment was deleted, by its author or a moderator.
    #[serde(rename = "comment.deleted")]
    CommentDeleted,
    /// A new comment was held for moderation.
    #[serde(rename = "comment.held")]
    CommentHeld,
    /// A moderator approved a held comment.
    #[serde(rename = "comment.approved")]
    CommentApproved,
    /// A moderator rejected a held comment.
    #[serde(rename = "comment.rejected")]
    CommentRejected,
    /// A reader voted on a comment.
    #[serde(rename = "comment.voted")]
    CommentVoted,
    /// A thread was closed to new comments.
    #[serde(rename = "thread.closed")]
    ThreadClosed,
    /// A thread was reopened.
    #[serde(rename = "thread.reopened")]
    ThreadReopened,
    /// Comments were suspended site-wide (`reason`: manual or overload).
    #[serde(rename = "comments.suspended")]
    CommentsSuspended,
    /// Comments were resumed.
    #[serde(rename = "comments.resumed")]
    CommentsResumed,
    /// Writes refused by the rate limit, aggregated per address (`count`).
    #[serde(rename = "ratelimit.rejected")]
    RateLimitRejected,
    /// Posts refused as spam or from a banned author or address, aggregated (`count`).
    #[serde(rename = "spam.rejected")]
    SpamRejected,
    /// A moderator banned an author.
    #[serde(rename = "author.banned")]
    AuthorBanned,
    /// A moderator banned an address range.
    #[serde(rename = "address.banned")]
    AddressBanned,
    /// A moderator lifted a ban.
    #[serde(rename = "ban.lifted")]
    BanLifted,
    /// An author's personal data was erased on request.
    #[serde(rename = "author.erased")]
    AuthorErased,
    /// An author's personal data was exported on request.
    #[serde(rename = "author.exported")]
    AuthorExported,
    /// A moderator imported another system's export into the site (`reason`: the format;
    /// `detail`: the counts, or why it stopped).
    #[serde(rename = "site.imported")]
    SiteImported,
    /// A moderator exported the whole site (`detail`: what the export held).
    #[serde(rename = "site.exported")]
    SiteExported,
    /// A tier started.
    #[serde(rename = "tier.started")]
    TierStarted,
    /// A tier stopped.
    #[serde(rename = "tier.stopped")]
    TierStopped,
}

impl Kind {
    /// The wire name, e.g. `comment.posted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CommentPosted => "comment.posted",
            Kind::CommentEdited => "comment.edited",
            Kind::CommentDeleted => "comment.deleted",
            Kind::CommentHeld => "comment.held",
            Kind::CommentApproved => "comment.approved",
            Kind::CommentRejected => "comment.rejected",
            Kind::CommentVoted => "comment.voted",
            Kind::ThreadClosed => "thread.closed",
            Kind::ThreadReopened => "thread.reopened",
            Kind::CommentsSuspended => "comments.suspended",
            Kind::CommentsResumed => "comments.resumed",
            Kind::RateLimitRejected => "ratelimit.rejected",
            Kind::SpamRejected => "spam.rejected",
            Kind::AuthorBanned => "author.banned",
            Kind::AddressBanned => "address.banned",
            Kind::BanLifted => "ban.lifted",
            Kind::AuthorErased => "author.erased",
            Kind::AuthorExported => "author.exported",
            Kind::SiteImported => "site.imported",
            Kind::SiteExported => "site.exported",
            Kind::TierStarted => "tier.started",
            Kind::TierStopped => "tier.stopped",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Kind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// The logger's key for this event (a paging cursor); set by the logger, ignored on ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When it happened, RFC 3339.
    pub time: String,
    /// What happened.
    pub kind: Kind,
    /// The tier that saw it (`logic`, `frontend`, ...).
    pub tier: String,
    /// Who did it: `admin`, `admin:<name>`, an author's display name, `anonymous` or `system`.
    pub actor: String,
    /// The thread concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The comment concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<u64>,
    /// The client's address, truncated (`/24`, `/48`) unless the logger is told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The pseudonymous key of the author concerned, for erase and export requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_key: Option<String>,
    /// Why: `manual` or `overload` for suspensions, the rule for rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human sentence (a suspension's message, a ban's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How many times it happened, for aggregated kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Longest free-text field accepted in an event, in bytes.
pub const MAX_TEXT: usize = 1000;
/// Events more than this far in the future are refused (clock skew allowance), in seconds.
pub const MAX_FUTURE_SECS: i64 = 300;

impl Event {
    /// A new event of `kind` seen now by `tier`, done by `actor`.
    pub fn now(kind: Kind, tier: &str, actor: impl Into<String>) -> Event {
        Event {
            id: None,
            time: now_rfc3339(),
            kind,
            tier: tier.to_owned(),
            actor: actor.into(),
            thread: None,
            comment: None,
            address: None,
            author_key: None,
            reason: None,
            detail: None,
            count: None,
        }
    }

    /// Sets the thread.
    pub fn thread(mut self, thread: impl Into<String>) -> Self {
        self.thread = Some(thread.into());
        self
    }

    /// Sets the comment.
    pub fn comment(mut self, id: u64) -> Self {
        self.comment = Some(id);
        self
    }

    /// Sets the client address; it is truncated here already.
    pub fn address(mut self, ip: IpAddr) -> Self {
        self.address = Some(truncate(ip));
        self
    }

    /// Sets the author key.
    pub fn author_key(mut self, key: Option<String>) -> Self {
        self.author_key = key;
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The time as Unix nanoseconds, checking the event on the way. `at` names the event in
    /// problems (`events[3]`). Addresses are truncated unless `keep_addresses`.
    pub fn validate(
        &mut self,
        at: impl std::fmt::Display,
        keep_addresses: bool,
    ) -> Result<u64, Problem> {
        // The field's name is only spelled out for an error.
        let field = |name: &str| format!("{at}.{name}");
        let t = OffsetDateTime::parse(&self.time, &Rfc3339).map_err(|_| {
            Problem::invalid(
                &field("time"),
                "must be an RFC 3339 time like 2026-01-02T03:04:05Z",
            )
        })?;
        let now = OffsetDateTime::now_utc();
        if (t - now).whole_seconds() > MAX_FUTURE_SECS {
            return Err(Problem::invalid(
                &field("time"),
                "must not be more than 5 minutes in the future",
            ));
        }
        let nanos = t.unix_timestamp_nanos();
        if nanos < 0 || nanos > u64::MAX as i128 {
            return Err(Problem::invalid(&field("time"), "must be after 1970"));
        }
        short(|| field("tier"), &self.tier, 1, 32)?;
        short(|| field("actor"), &self.actor, 1, 200)?;
        if let Some(t) = &self.thread {
            io360_common::rules::thread(&field("thread"), t)?;
        }
        if let Some(a) = &self.address {
            let ip: IpAddr = a.parse().map_err(|_| {
                Problem::invalid(&field("address"), "must be an IPv4 or IPv6 address")
            })?;
            // Tiers send addresses truncated already; only one that is not is written anew.
            let cut = truncated(ip);
            if !keep_addresses && cut != ip {
                self.address = Some(cut.to_string());
            }
        }
        if let Some(k) = &self.author_key {
            short(|| field("authorKey"), k, 1, 200)?;
        }
        if let Some(r) = &self.reason {
            short(|| field("reason"), r, 0, 200)?;
        }
        if let Some(d) = &self.detail {
            short(|| field("detail"), d, 0, MAX_TEXT)?;
        }
        self.id = None;
        Ok(nanos as u64)
    }
}

/// Checks a string field's length and characters; `field` names it, for an error only.
fn short(field: impl Fn() -> String, v: &str, min: usize, max: usize) -> Result<(), Problem> {
    if v.len() < min {
        return Err(Problem::invalid(&field(), "must not be empty"));
    }
    if v.len() > max {
        return Err(Problem::invalid(
            &field(),
            format!("must be at most {max} bytes"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Problem::invalid(
            &field(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The current time, RFC 3339 with nanoseconds.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The address with its host part zeroed (`/24` for IPv4, `/48` for IPv6), as Isso does.
pub fn truncate(ip: IpAddr) -> String {
    truncated(ip).to_string()
}

/// [`truncate`] before it is written out; an IPv4-mapped IPv6 address comes back as IPv4.
fn truncated(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Ipv4Addr::new(o[0], o[1], o[2], 0).into()
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return truncated(IpAddr::V4(v4));
            }
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in [
            Kind::CommentPosted,
            Kind::CommentsSuspended,
            Kind::TierStopped,
        ] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("comment.exploded"), None);
    }

    #[test]
    fn validation_truncates_and_names_fields() {
        let mut e = Event::now(Kind::CommentPosted, "logic", "Ann").thread("/a");
        e.address = Some("203.0.113.77".into());
        e.validate("events[0]", false).unwrap();
        assert_eq!(e.address.as_deref(), Some("203.0.113.0"));
        let mut kept = e.clone();
        kept.address = Some("203.0.113.77".into());
        kept.validate("events[0]", true).unwrap();
        assert_eq!(kept.address.as_deref(), Some("203.0.113.77"));
        let mut mapped = e.clone();
        mapped.address = Some("::ffff:203.0.113.0".into());
        mapped.validate("events[0]", false).unwrap();
        assert_eq!(mapped.address.as_deref(), Some("203.0.113.0"));
        e.time = "yesterday".into();
        let p = e.validate("events[2]", false).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("events[2].time"));
        let mut e = Event::now(Kind::CommentPosted, "logic", "");
        let p = e.validate("events[1]", false).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("events[1].actor"));
    }

    #[test]
    fn ipv6_is_cut_to_48_bits() {
        assert_eq!(
            truncate("2001:db8:1:2:3::9".parse().unwrap()),
            "2001:db8:1::"
        );
    }
}
