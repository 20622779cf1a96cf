//! The rules a request must follow, written once for every tier that checks them (logic,
//! store, sync, longpoll, logger), so the same mistake gets the same problem wherever it is
//! made. Each check answers [`Invalid`], which becomes a 400 `invalid-field` problem naming
//! the field; a tier's storage layer can keep it as its own error instead.

use crate::Problem;
use crate::model::validate_thread;

/// Most items one page or list answers.
pub const MAX_PAGE: usize = 1000;

/// Most threads one request names.
pub const MAX_THREADS: usize = 1000;

/// Longest email address accepted, in bytes (RFC 5321's limit on a path).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A field that breaks a rule: `field` names it as the client wrote it (a JSON path, a query
/// parameter), `rule` says what is allowed ("must be between 1 and 1000").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {rule}")]
pub struct Invalid {
    /// The field.
    pub field: String,
    /// The rule it breaks, as the end of a sentence that starts with the field.
    pub rule: String,
}

impl Invalid {
    /// `field` breaks `rule`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl From<Invalid> for Problem {
    fn from(i: Invalid) -> Problem {
        Problem::invalid(&i.field, i.rule)
    }
}

/// A thread name in `field` (usually `thread`; `threads[3]` in a list).
pub fn thread(field: &str, name: &str) -> Result<(), Invalid> {
    validate_thread(name).map_err(|rule| Invalid::new(field, rule))
}

/// A list of thread names in `field`: at most [`MAX_THREADS`], each a valid name.
pub fn threads(field: &str, names: &[String]) -> Result<(), Invalid> {
    if names.len() > MAX_THREADS {
        return Err(Invalid::new(field, "must list at most 1000 threads"));
    }
    for (i, t) in names.iter().enumerate() {
        thread(&format!("{field}[{i}]"), t)?;
    }
    Ok(())
}

/// A page size in `limit`: 1 to [`MAX_PAGE`]; `default` when absent.
pub fn limit(limit: Option<usize>, default: usize) -> Result<usize, Invalid> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Invalid::new("limit", "must be between 1 and 1000")),
    }
}

/// A comment id in the path (`id`).
pub fn comment_id(raw: &str) -> Result<u64, Invalid> {
    raw.parse()
        .map_err(|_| Invalid::new("id", "must be a comment id (a positive integer)"))
}

/// A vote in `value`: up or down by one.
pub fn vote(value: i8) -> Result<i8, Invalid> {
    match value {
        1 | -1 => Ok(value),
        _ => Err(Invalid::new("value", "must be 1 or -1")),
    }
}

/// An email address in `email`: one `@` with something before it and a domain with a dot
/// after it, no spaces, at most [`MAX_EMAIL_BYTES`]. Callers that take an address to look
/// someone up trim it first; the address is not otherwise changed.
pub fn email(address: &str) -> Result<(), Invalid> {
    let bad = || Invalid::new("email", "must be an address like name@example.org");
    let mut parts = address.split('@');
    let (Some(user), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if user.is_empty()
        || !domain.contains('.')
        || address.contains(char::is_whitespace)
        || address.len() > MAX_EMAIL_BYTES
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_its_field_and_what_is_allowed() {
        let p = Problem::from(limit(Some(0), 50).unwrap_err());
        assert_eq!(
            (p.status, p.field.as_deref(), p.title.as_str()),
            (400, Some("limit"), "`limit` must be between 1 and 1000")
        );
        assert_eq!(limit(None, 50), Ok(50));
        assert_eq!(limit(Some(1000), 50), Ok(1000));
        assert!(limit(Some(1001), 50).is_err());
        assert_eq!(comment_id("42"), Ok(42));
        assert_eq!(comment_id("-1").unwrap_err().field, "id");
        assert_eq!(vote(-1), Ok(-1));
        assert_eq!(vote(2).unwrap_err().rule, "must be 1 or -1");
        assert_eq!(thread("thread", "").unwrap_err().rule, "must not be empty");
        let many = vec!["/a".to_owned(), String::new()];
        assert_eq!(threads("threads", &many).unwrap_err().field, "threads[1]");
        let too_many = vec!["/a".to_owned(); 1001];
        assert_eq!(threads("threads", &too_many).unwrap_err().field, "threads");
    }

    #[test]
    fn one_email_rule() {
        for ok in ["ann@example.org", "a.b+c@mail.example.co.uk"] {
            assert_eq!(email(ok), Ok(()), "{ok}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        for bad in [
            "",
            "ann",
            "@example.org",
            "ann@localhost",
            "ann@@example.org",
            "a@b@example.org",
            "ann @example.org",
            long.as_str(),
        ] {
            let e = email(bad).unwrap_err();
            assert_eq!(e.field, "email", "{bad}");
        }
    }
}
