//! The one escaper for text placed in HTML or XML (the comment snapshot in pages, the Atom
//! feed), so both read a quote the same way.

/// Escapes `s` for element content and for attribute values in either kind of quotes. The
/// apostrophe becomes `&#39;`, which HTML 4, HTML 5 and XML all read.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_both_quotes_are_escaped_once() {
        assert_eq!(
            escape(r#"<a href="x" title='O'Brien'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;O&#39;Brien&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain text, é"), "plain text, é");
    }
}
