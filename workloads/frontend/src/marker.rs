//! Finding the element where a page wants its comments.
//!
//! A page marks its thread with an element whose id is `io360-thread`, for example
//! `<section id="io360-thread" data-thread="/posts/hello">`. The snapshot goes right after that
//! element's opening tag, so it is found once, when the page is loaded, and the page is kept
//! split at that point.

/// The id that marks the comment element.
pub(crate) const MARKER_ID: &str = "io360-thread";

/// Where a page's thread is and which thread it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// Byte offset just past the marked element's opening tag.
    pub insert_at: usize,
    /// The `data-thread` attribute, decoded; `None` when the page names no thread.
    pub thread: Option<String>,
}

/// Finds the first element with `id="io360-thread"` outside comments.
pub(crate) fn find(html: &[u8]) -> Option<Marker> {
    let mut from = 0;
    while let Some(rel) = find_bytes(&html[from..], MARKER_ID.as_bytes()) {
        let at = from + rel;
        from = at + MARKER_ID.len();
        let Some(open) = html[..at].iter().rposition(|&b| b == b'<') else {
            continue;
        };
        if inside_comment(html, open) {
            continue;
        }
        let Some((attrs, end)) = parse_tag(html, open) else {
            continue;
        };
        if attrs
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("id") && v == MARKER_ID)
        {
            let thread = attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("data-thread"))
                // One thread for one name, however the page's editor encoded its accents.
                .map(|(_, v)| io360_common::model::normalize_thread(v))
                .filter(|v| !v.is_empty());
            return Some(Marker {
                insert_at: end,
                thread,
            });
        }
    }
    None
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn inside_comment(html: &[u8], pos: usize) -> bool {
    let before = &html[..pos];
    match before.windows(4).rposition(|w| w == b"<!--") {
        Some(start) => find_bytes(&before[start..], b"-->").is_none(),
        None => false,
    }
}

/// Parses the tag opening at `open` (`<name attr=value ...>`): its attributes and the offset
/// just past its `>`. `None` when it is not an element's opening tag.
fn parse_tag(html: &[u8], open: usize) -> Option<(Vec<(String, String)>, usize)> {
    let mut i = open + 1;
    if !html.get(i)?.is_ascii_alphabetic() {
        return None;
    }
    while i < html.len() && !html[i].is_ascii_whitespace() && html[i] != b'>' && html[i] != b'/' {
        i += 1;
    }
    let mut attrs = Vec::new();
    loop {
        while i < html.len() && (html[i].is_ascii_whitespace() || html[i] == b'/') {
            i += 1;
        }
        match html.get(i)? {
            b'>' => return Some((attrs, i + 1)),
            b'<' => return None,
            _ => {}
        }
        let name_start = i;
        while i < html.len()
            && !html[i].is_ascii_whitespace()
            && !matches!(html[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        let name = String::from_utf8_lossy(&html[name_start..i]).into_owned();
        while i < html.len() && html[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if html.get(i) == Some(&b'=') {
            i += 1;
            while i < html.len() && html[i].is_ascii_whitespace() {
                i += 1;
            }
            let quote = *html.get(i)?;
            let (start, end) = if quote == b'"' || quote == b'\'' {
                let start = i + 1;
                let len = html[start..].iter().position(|&b| b == quote)?;
                i = start + len + 1;
                (start, start + len)
            } else {
                let start = i;
                while i < html.len() && !html[i].is_ascii_whitespace() && html[i] != b'>' {
                    i += 1;
                }
                (start, i)
            };
            value = decode_entities(&String::from_utf8_lossy(&html[start..end]));
        }
        attrs.push((name, value));
    }
}

/// Decodes the character references an attribute value is likely to hold.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&n| n <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let name = &rest[1..semi];
        let ch = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marked_element() {
        let html = br#"<html><body><h1>Hi</h1><section class="c" id="io360-thread" data-thread="/posts/a&amp;b">loading</section></body></html>"#;
        let m = find(html).unwrap();
        assert_eq!(m.thread.as_deref(), Some("/posts/a&b"));
        assert_eq!(&html[m.insert_at..m.insert_at + 7], b"loading");
    }

    #[test]
    fn single_quotes_unquoted_and_no_thread() {
        let html = b"<div data-x=1 id='io360-thread'>x</div>";
        let m = find(html).unwrap();
        assert_eq!(m.thread, None);
        assert_eq!(&html[m.insert_at..], b"x</div>");
        let m = find("<div id=io360-thread data-thread=/cafe\u{301}>".as_bytes()).unwrap();
        assert_eq!(m.thread.as_deref(), Some("/caf\u{e9}"));
        let m = find(b"<div id=io360-thread data-thread=/t>").unwrap();
        assert_eq!(m.thread.as_deref(), Some("/t"));
    }

    #[test]
    fn ignores_comments_text_and_other_ids() {
        assert!(find(b"<p>see io360-thread docs</p>").is_none());
        assert!(find(b"<!-- <div id=\"io360-thread\"> -->").is_none());
        assert!(find(b"<div id=\"io360-thread-x\"></div>").is_none());
        let html = b"<!-- io360-thread --><p>io360-thread</p><div id=\"io360-thread\" data-thread=\"t\"></div>";
        assert_eq!(find(html).unwrap().thread.as_deref(), Some("t"));
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities("a&#47;b&#x2F;c&lt;&bogus;"),
            "a/b/c<&bogus;"
        );
    }
}
