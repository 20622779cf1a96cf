//! Small parsers every reader shares: URLs to thread names, and the sources' ways of writing
//! a time.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The path of a URL or path, without query or fragment: `https://example.org/a/?x#y` is
/// `/a/`, `example.org/a` is `/a`, an empty path is `/`.
pub fn url_path(url: &str) -> String {
    let url = url.trim();
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None if url.starts_with("//") => &url[2..],
        None if url.starts_with('/') => {
            return clean_path(url);
        }
        // A bare host and path, as some exports write a locator.
        None => url,
    };
    match rest.find('/') {
        Some(i) => clean_path(&rest[i..]),
        None => "/".to_owned(),
    }
}

fn clean_path(p: &str) -> String {
    let end = p.find(['?', '#']).unwrap_or(p.len());
    let p = &p[..end];
    if p.is_empty() {
        "/".to_owned()
    } else {
        p.to_owned()
    }
}

/// An RFC 3339 time (`2013-04-11T20:39:12Z`, `2020-01-01T10:00:00.5+02:00`), as UTC.
pub fn rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))
}

/// A time without zone (`2013-04-11 20:39:12`, as WordPress writes its `_gmt` times), as UTC.
pub fn naive_utc(s: &str) -> Result<OffsetDateTime, String> {
    let f = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(s.trim(), &f)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|e| format!("{s:?} is not a time of the form 2013-04-11 20:39:12 ({e})"))
}

/// Seconds since the Unix epoch, with a fraction (as Isso stores times).
pub fn unix_seconds(s: f64) -> Result<OffsetDateTime, String> {
    if !s.is_finite() {
        return Err(format!("{s} is not a time"));
    }
    OffsetDateTime::from_unix_timestamp_nanos((s * 1e9) as i128)
        .map_err(|e| format!("{s} is not a time ({e})"))
}

/// `Some(s)` trimmed, or `None` when empty.
pub fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{naive_utc, rfc3339, unix_seconds, url_path};

    #[test]
    fn urls_become_thread_names() {
        assert_eq!(
            url_path("https://example.org/posts/a/?utm=1#c3"),
            "/posts/a/"
        );
        assert_eq!(url_path("http://example.org"), "/");
        assert_eq!(url_path("//example.org/x"), "/x");
        assert_eq!(url_path("/already/a/path"), "/already/a/path");
        assert_eq!(url_path("example.org/b"), "/b");
    }

    #[test]
    fn times_in_every_source_spelling_are_utc() {
        let a = rfc3339("2013-04-11T22:39:12+02:00").unwrap();
        let b = naive_utc("2013-04-11 20:39:12").unwrap();
        let c = unix_seconds(1365712752.0).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert!(rfc3339("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(naive_utc("0000-00-00 00:00:00").is_err());
    }
}
