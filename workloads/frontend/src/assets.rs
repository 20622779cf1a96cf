//! What the frontend carries inside the binary: the embed widget, the demo site and a plain
//! 404 page for sites that have none.

use std::time::SystemTime;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

use crate::respond;
use crate::site::{Asset, Encoded, Level, Meta, RawFile};

include!(concat!(env!("OUT_DIR"), "/demo_files.rs"));

const EMBED_JS: &str = include_str!("../widget/embed.js");
const EMBED_CSS: &str = include_str!("../widget/embed.css");

fn embedded(body: &'static str, content_type: &'static str, cache: &'static str) -> Asset {
    Asset {
        meta: Meta::with(
            HeaderValue::from_static(content_type),
            HeaderValue::from_static(cache),
            SystemTime::now(),
        ),
        encoded: Encoded::new(
            Bytes::from_static(body.as_bytes()),
            true,
            Level::Load,
            None,
            None,
        ),
    }
}

/// The widget's script and stylesheet, compressed once at start.
pub(crate) struct Widget {
    script: Asset,
    style: Asset,
}

impl Widget {
    pub fn new() -> Widget {
        Widget {
            script: embedded(
                EMBED_JS,
                "text/javascript; charset=utf-8",
                "public, max-age=300",
            ),
            style: embedded(EMBED_CSS, "text/css; charset=utf-8", "public, max-age=300"),
        }
    }

    pub fn script(&self, req: &Request) -> Response {
        serve_embeddable(req, &self.script)
    }

    pub fn style(&self, req: &Request) -> Response {
        serve_embeddable(req, &self.style)
    }
}

/// Sites on other origins embed these files, also from pages that isolate themselves.
fn serve_embeddable(req: &Request, asset: &Asset) -> Response {
    let mut res = respond::representation(
        req.headers(),
        req.method() == Method::HEAD,
        StatusCode::OK,
        &asset.meta,
        &asset.encoded,
    );
    let h = res.headers_mut();
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    respond::into_response(res)
}

/// The demo site's files.
pub(crate) fn demo_files() -> Vec<RawFile> {
    let now = SystemTime::now();
    DEMO_FILES
        .iter()
        .map(|(rel, body)| RawFile {
            rel: (*rel).to_owned(),
            body: body.to_vec(),
            modified: now,
        })
        .collect()
}

/// The 404 page for a site without its own `404.html`.
pub(crate) fn not_found_page() -> Asset {
    embedded(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found</title></head><body><h1>Not found</h1><p>There is no page at this address.</p><p><a href=\"/\">Home</a></p></body></html>\n",
        "text/html; charset=utf-8",
        "no-cache",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widget_stays_under_20_kb_gzipped() {
        let w = Widget::new();
        let size = |a: &Asset| {
            a.encoded
                .gzip
                .as_ref()
                .map(|v| v.body.len())
                .unwrap_or(usize::MAX)
        };
        let total = size(&w.script) + size(&w.style);
        assert!(total < 20 * 1024, "widget is {total} bytes gzipped");
    }

    #[test]
    fn demo_site_has_a_page_with_a_thread() {
        let files = demo_files();
        let post = files
            .iter()
            .find(|f| f.rel == "posts/hello/index.html")
            .expect("the demo's first post");
        assert!(crate::marker::find(&post.body).is_some());
    }
}
