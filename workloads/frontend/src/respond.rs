//! Answering a request for a prepared resource: content negotiation, conditional requests
//! (`If-None-Match`, `If-Modified-Since` → 304) and `HEAD`.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::site::{Accept, Encoded, Meta};

static VARY: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// The request headers [`representation`] reads; nothing else of a request changes its answer
/// (besides `HEAD`), which is what lets the frontend's own HTTP loop pass on only these.
pub(crate) const READS: [header::HeaderName; 3] = [
    header::ACCEPT_ENCODING,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// A prepared answer: its body is already in memory (empty for `HEAD` and 304).
pub(crate) type Prepared = http::Response<Bytes>;

/// A prepared answer as the router's response.
pub(crate) fn into_response(res: Prepared) -> Response {
    res.map(|b| {
        if b.is_empty() {
            Body::empty()
        } else {
            Body::from(b)
        }
    })
}

/// Answers with the representation of `encoded` that suits `req`.
pub(crate) fn representation(
    req: &HeaderMap,
    head: bool,
    status: StatusCode,
    meta: &Meta,
    encoded: &Encoded,
) -> Prepared {
    let accept = Accept::parse(req.get(header::ACCEPT_ENCODING));
    let (variant, coding) = encoded.pick(accept);
    let negotiated = encoded.gzip.is_some() || encoded.br.is_some();
    if status == StatusCode::OK && not_modified(req, &variant.etag, meta) {
        let mut res = Prepared::new(Bytes::new());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        let h = res.headers_mut();
        h.insert(header::ETAG, variant.etag.clone());
        h.insert(header::LAST_MODIFIED, meta.last_modified.clone());
        h.insert(header::CACHE_CONTROL, meta.cache_control.clone());
        if negotiated {
            h.insert(header::VARY, VARY.clone());
        }
        return res;
    }
    let len = variant.body.len();
    let mut res = if head {
        Prepared::new(Bytes::new())
    } else {
        Prepared::new(variant.body.clone())
    };
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.reserve(8);
    h.insert(header::CONTENT_TYPE, meta.content_type.clone());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, meta.cache_control.clone());
    if status == StatusCode::OK {
        h.insert(header::ETAG, variant.etag.clone());
        h.insert(header::LAST_MODIFIED, meta.last_modified.clone());
    }
    if negotiated {
        h.insert(header::VARY, VARY.clone());
    }
    if let Some(ce) = coding.header() {
        h.insert(header::CONTENT_ENCODING, ce);
    }
    res
}

/// Whether the client's copy is current. `If-None-Match` wins over `If-Modified-Since`
/// (RFC 9110, 13.2.2); entity tags compare weakly.
fn not_modified(req: &HeaderMap, etag: &HeaderValue, meta: &Meta) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        let ours = etag.as_bytes();
        return inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == ours
        });
    }
    if let Some(ims) = req.get(header::IF_MODIFIED_SINCE)
        && let Ok(s) = ims.to_str()
        && let Ok(since) = httpdate::parse_http_date(s)
    {
        return meta.modified <= since;
    }
    false
}
