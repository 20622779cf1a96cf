//! Markdown to safe HTML, once, at write time.
//!
//! pulldown-cmark renders; ammonia keeps only harmless tags and attributes, allows only safe
//! URL schemes and marks every link `rel="nofollow ugc noopener"`. Raw HTML in the source is
//! rendered as text by the sanitizer's rules, never executed.

use std::sync::LazyLock;

use pulldown_cmark::{Event, Options, Parser, Tag};

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut b = ammonia::Builder::default();
    b.link_rel(Some("nofollow ugc noopener"))
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .rm_tags(["img"]);
    b
});

/// Renders Markdown to sanitized HTML.
pub fn render(text: &str) -> String {
    let parser = Parser::new_ext(text, Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES);
    let mut html = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    SANITIZER.clean(&html).to_string()
}

/// Counts the links in Markdown source: explicit links, autolinks and bare URLs.
pub fn count_links(text: &str) -> usize {
    let parsed = Parser::new(text)
        .filter(|e| matches!(e, Event::Start(Tag::Link { .. })))
        .count();
    let bare = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == '<')
        .filter(|w| w.starts_with("http://") || w.starts_with("https://") || w.starts_with("www."))
        .count();
    parsed.max(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown_and_marks_links() {
        let html = render("**hi** [x](https://example.org)");
        assert!(html.contains("<strong>hi</strong>"));
        assert!(html.contains(r#"rel="nofollow ugc noopener""#));
    }

    #[test]
    fn strips_scripts_handlers_and_javascript_urls() {
        for payload in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[x](javascript:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<svg onload=alert(1)>",
            "<iframe src=\"data:text/html,<script>alert(1)</script>\">",
        ] {
            let html = render(payload).to_lowercase();
            assert!(!html.contains("<script"), "{payload} -> {html}");
            assert!(!html.contains("onerror"), "{payload} -> {html}");
            assert!(!html.contains("onload"), "{payload} -> {html}");
            assert!(!html.contains("javascript:"), "{payload} -> {html}");
            assert!(!html.contains("<iframe"), "{payload} -> {html}");
        }
    }

    #[test]
    fn counts_links() {
        assert_eq!(count_links("no links here"), 0);
        assert_eq!(
            count_links("see https://a.example and [b](https://b.example)"),
            2
        );
    }
}
