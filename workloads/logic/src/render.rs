//! Markdown to safe HTML, once, at write time.
//!
//! pulldown-cmark renders; ammonia keeps only harmless tags and attributes, allows only safe
//! URL schemes and marks every link `rel="nofollow ugc noopener"`. Raw HTML in the source is
//! rendered as text by the sanitizer's rules, never executed.

use pulldown_cmark::{Event, Options, Parser, Tag};

/// Renders Markdown to sanitized HTML.
pub fn render(text: &str) -> String {
    let parser = Parser::new_ext(text, Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES);
    let mut html = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    io360_common::sanitize::sanitize(&html)
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

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Markdown and HTML pieces an attacker would combine, in any order.
        fn hostile() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("<script>alert(1)</script>".to_owned()),
                Just("<img src=x onerror=alert(1)>".to_owned()),
                Just("[x](javascript:alert(1))".to_owned()),
                Just("[x](JaVaScRiPt:alert(1))".to_owned()),
                Just("[x](&#106;avascript:alert(1))".to_owned()),
                Just("<a href=\"javascript:alert(1)\">x</a>".to_owned()),
                Just("<svg onload=alert(1)>".to_owned()),
                Just("<iframe src=x>".to_owned()),
                Just("<style>*{}</style>".to_owned()),
                Just("<div style=\"x\" onclick=\"y\">".to_owned()),
                Just("![i](https://x.example/i.png)".to_owned()),
                Just("<!-- c -->".to_owned()),
                Just("`code`".to_owned()),
                Just("**".to_owned()),
                Just("\n\n".to_owned()),
                Just("> ".to_owned()),
                Just("| a | b |\n|---|---|\n".to_owned()),
                "[a-z<>\"'=/ ]{0,12}",
                any::<String>(),
            ];
            proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
        }

        /// Start tags of the rendered HTML, lowercased: `<name attrs...>`.
        fn tags(html: &str) -> Vec<String> {
            html.split('<')
                .skip(1)
                .filter_map(|t| t.split_once('>').map(|(tag, _)| tag.to_lowercase()))
                .filter(|t| !t.starts_with('/'))
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn rendered_html_runs_nothing(text in hostile()) {
                let html = render(&text);
                for tag in tags(&html) {
                    let name = tag.split_whitespace().next().unwrap_or_default().to_owned();
                    prop_assert!(
                        !["script", "iframe", "style", "img", "svg", "object", "embed", "form"]
                            .contains(&name.as_str()),
                        "tag <{tag}> in {html}"
                    );
                    for attr in tag.split_whitespace().skip(1) {
                        prop_assert!(!attr.starts_with("on"), "handler {attr} in {html}");
                        prop_assert!(!attr.starts_with("style"), "style {attr} in {html}");
                    }
                    prop_assert!(!tag.contains("javascript:"), "javascript: in <{tag}>");
                }
            }

            #[test]
            fn links_are_web_or_mail_and_marked(text in hostile()) {
                let html = render(&text);
                for tag in tags(&html).into_iter().filter(|t| t.starts_with("a ")) {
                    if let Some((_, rest)) = tag.split_once("href=\"") {
                        let href = rest.split('"').next().unwrap_or_default();
                        prop_assert!(
                            href.starts_with("http://")
                                || href.starts_with("https://")
                                || href.starts_with("mailto:")
                                || !href.contains(':'),
                            "href {href} in {html}"
                        );
                    }
                    prop_assert!(tag.contains("rel=\"nofollow ugc noopener\""), "<{tag}>");
                }
            }

            #[test]
            fn sanitized_output_is_a_fixed_point(text in hostile()) {
                // What was kept is exactly what the sanitizer keeps: cleaning again changes
                // nothing, so no second pass could reveal something the first let through.
                let html = render(&text);
                prop_assert_eq!(io360_common::sanitize::sanitize(&html), html);
            }
        }
    }
}
