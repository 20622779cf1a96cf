//! Rules for request heads that io360 parses by hand (the frontend's fast path, longpoll), so
//! both refuse the same things the same way.

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_TARGET: usize = 8 * 1024;

/// Whether a request head has a line feed without its carriage return. RFC 9112 lets a server
/// accept a bare LF as a line end, but two parsers that disagree about where a header ends
/// are how requests get smuggled past a proxy, so io360 refuses such a head.
pub fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_feeds() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(has_bare_lf(b"\n"));
    }
}
