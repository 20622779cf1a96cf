//! The one HTML sanitizer: what logic renders and what the store keeps both pass through it.
//!
//! ammonia keeps only harmless tags and attributes, allows only safe URL schemes and marks
//! every link `rel="nofollow ugc noopener"`. Logic runs it over the Markdown it renders; the
//! store runs it again over every HTML body it is asked to write, so a write that did not come
//! from logic's renderer (a stolen credential, a bug) still cannot put a script into a page.
//! Sanitizing is idempotent: clean HTML comes out unchanged.

use std::sync::LazyLock;

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut b = ammonia::Builder::default();
    b.link_rel(Some("nofollow ugc noopener"))
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .rm_tags(["img"]);
    b
});

/// `html` with everything unsafe removed.
pub fn sanitize(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn scripts_handlers_and_unsafe_links_are_removed_and_clean_html_is_kept() {
        let out = sanitize(
            r#"<p onclick="x()">hi<script>alert(1)</script><a href="javascript:x">l</a></p>"#,
        );
        assert!(!out.contains("script") && !out.contains("onclick"), "{out}");
        assert!(!out.contains("javascript:"), "{out}");
        let clean = r#"<p>a <a href="https://e.org" rel="nofollow ugc noopener">b</a></p>"#;
        assert_eq!(sanitize(clean), clean);
    }
}
