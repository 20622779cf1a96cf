//! RFC 9457 problem bodies: the one shape every io360 error takes on the wire.
//!
//! A problem has a stable `type` (a URI whose last segment is a short slug clients may match
//! on), a human `title`, the HTTP `status`, an optional `detail`, and, when one field of the
//! request is at fault, that field's name in `field`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "https://io360.dev/problems/";

/// An error answer as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable identifier of the kind of problem (`https://io360.dev/problems/<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// One human sentence that says what was wrong.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// More detail, when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field at fault (a JSON path, a query parameter or a header name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds after which a retry may succeed (also sent as `Retry-After`).
    #[serde(
        default,
        rename = "retryAfter",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with the given status, slug and title.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Problem {
            kind: format!("{TYPE_PREFIX}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            field: None,
            retry_after: None,
        }
    }

    /// 400: a field breaks a rule. The title names the field and the rule.
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("`{field}` {rule}"),
        )
        .with_field(field)
    }

    /// 404 for something that does not exist.
    pub fn not_found(slug: &str, title: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, slug, title)
    }

    /// 503 with a `Retry-After`.
    pub fn unavailable(slug: &str, title: impl Into<String>, retry_after: Duration) -> Self {
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, title);
        p.retry_after = Some(retry_after.as_secs().max(1));
        p
    }

    /// 500 for a fault of ours. The detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "io360 failed to handle this request; it has been logged",
        )
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The slug: the last segment of `type`.
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix(TYPE_PREFIX).unwrap_or(&self.kind)
    }

    /// The status as a `StatusCode`.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.slug(), self.title)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_field_and_rule() {
        let p = Problem::invalid("text", "must be at most 10 bytes");
        assert_eq!(p.status, 400);
        assert_eq!(p.field.as_deref(), Some("text"));
        assert_eq!(p.slug(), "invalid-field");
        assert!(p.title.contains("`text`"));
    }

    #[test]
    fn unavailable_sets_retry_after_header() {
        let res =
            Problem::unavailable("suspended", "paused", Duration::from_secs(30)).into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "30");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
