//! Answering a request for a prepared resource: content negotiation, conditional requests
//! (`If-None-Match`, `If-Modified-Since` → 304) and `HEAD`.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::site::{Accept, Encoded, Meta};

static VARY: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// Answers with the representation of `encoded` that suits `req`.
pub(crate) fn representation(
    req: &HeaderMap,
    head: bool,
    status: StatusCode,
    meta: &Meta,
    encoded: &Encoded,
) -> Response {
    let accept = Accept::parse(req.get(header::ACCEPT_ENCODING));
    let (variant, coding) = encoded.pick(accept);
    let negotiated = encoded.gzip.is_some() || encoded.br.is_some();
    if status == StatusCode::OK && not_modified(req, &variant.etag, meta) {
        let mut res = Response::new(Body::empty());
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
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(variant.body.clone()))
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
