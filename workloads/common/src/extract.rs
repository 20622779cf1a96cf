//! Extractors that turn bad input into problem bodies instead of axum's plain-text rejections.
//!
//! `Json<T>` and `Query<T>` deserialize with `serde_path_to_error`, so the problem names the
//! exact field at fault (`parent`, `threads[3]`), and say which rule it broke.

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use crate::Problem;

/// The largest request body the public API accepts. Logic enforces it, and the frontend, where
/// it forwards `/api`, refuses a larger body itself before any of it is sent on.
pub const MAX_API_BODY: usize = 256 * 1024;

/// A JSON request body. Wrong content type: 415; too large: 413; malformed or wrong types: 400
/// naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    format!("the body must be `application/json`, not `{mime}`"),
                )
                .with_field("Content-Type"));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "the request body is larger than this endpoint accepts",
                )
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    format!("the request body could not be read: {e}"),
                )
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses JSON bytes into `T`, naming the field at fault on failure. Good input is parsed
/// once, plainly; only bad input is parsed again to find the field (tracking the path costs
/// a good part of the parse, and every write between tiers comes through here).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "the request body is empty; a JSON object was expected",
        ));
    }
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let p = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            if path == "." {
                format!("the request body is not valid: {inner}")
            } else {
                format!("`{path}` is not valid: {inner}")
            },
        );
        if path == "." { p } else { p.with_field(path) }
    })
}

/// Query parameters. Missing, unknown or mistyped parameters: 400 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Query)
    }
}

/// Checks that every name and value of a query string decodes to UTF-8: a lossy decoding
/// would turn different bytes into one name (`%FF` and `%FE` both into U+FFFD).
pub fn check_query_utf8(query: &str) -> Result<(), Problem> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let plus = s.replace('+', " ");
            percent_encoding::percent_decode_str(&plus)
                .decode_utf8()
                .map(|d| d.into_owned())
        };
        let Ok(name) = decode(name) else {
            // Named as sent, since it cannot be named as text.
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                format!("the query parameter name `{name}` is not percent-encoded UTF-8"),
            )
            .with_field(name));
        };
        if decode(value).is_err() {
            return Err(Problem::invalid(&name, "must be percent-encoded UTF-8"));
        }
    }
    Ok(())
}

/// Parses a query string into `T`, naming the parameter at fault on failure.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    check_query_utf8(query)?;
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        // serde reports missing parameters at the root; pull the name out of its message.
        let field = if path == "." {
            msg.split('`').nth(1).map(str::to_owned)
        } else {
            Some(path)
        };
        let title = match &field {
            Some(f) => format!("query parameter `{f}` is not valid: {msg}"),
            None => format!("the query string is not valid: {msg}"),
        };
        let p = Problem::new(StatusCode::BAD_REQUEST, "invalid-query", title);
        match field {
            Some(f) => p.with_field(f),
            None => p,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Post {
        text: String,
        parent: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct List {
        thread: String,
        after: Option<u64>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let p = parse_json::<Post>(br#"{"text": "hi", "parent": "x"}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("parent"));
        let p = parse_json::<Post>(br#"{"text": 5}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("text"));
        let p = parse_json::<Post>(b"{\"text\": \"\xff\xfe\"}").unwrap_err();
        assert_eq!(p.status, 400);
        let p = parse_json::<Post>(b"").unwrap_err();
        assert_eq!(p.slug(), "invalid-json");
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let p = parse_query::<List>("after=3").unwrap_err();
        assert_eq!(p.field.as_deref(), Some("thread"));
        let p = parse_query::<List>("thread=a&after=-1").unwrap_err();
        assert_eq!(p.field.as_deref(), Some("after"));
        let ok = parse_query::<List>("thread=%2Fposts%2Fa&after=2").unwrap();
        assert_eq!(ok.thread, "/posts/a");
        let p = parse_query::<List>("thread=%2Fa%FF").unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (400, Some("thread")));
        let ok = parse_query::<List>("thread=%2Fcaf%C3%A9+x").unwrap();
        assert_eq!(ok.thread, "/caf\u{e9} x");
    }
}
