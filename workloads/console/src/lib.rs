//! io360's moderation console, served at `/admin`.
//!
//! The console is three static files compiled into the binary (`include_str!`): a page, a
//! style sheet and a script. It holds no secrets and no state on the server: the moderator
//! types the admin token, the script keeps it in `sessionStorage` and calls the admin API under
//! `/api/v1/admin/...` with it, so the console works wherever that API is reachable from the
//! same origin (the frontend forwards it in `io360 up` and on Kubernetes). Nothing here talks
//! to the logger; when the audit trail is down the API says so and the rest keeps working.
//!
//! The public surface is [`router`].

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// What the page may load: only its own files, and only call its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// The console's routes: `/admin` (and `/admin/`), `/admin/console.js`, `/admin/console.css`.
/// Generic over the state so it merges into any tier's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = || async { asset(INDEX, "text/html; charset=utf-8") };
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route(
            "/admin/console.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/admin/console.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_with_a_strict_policy() {
        for (path, ct) in [
            ("/admin", "text/html"),
            ("/admin/", "text/html"),
            ("/admin/console.js", "text/javascript"),
            ("/admin/console.css", "text/css"),
        ] {
            let res = get(path).await;
            assert_eq!(res.status(), 200, "{path}");
            let got = res.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(got.starts_with(ct), "{path}: {got}");
            let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("script-src 'self'"), "{csp}");
        }
        assert_eq!(get("/admin/other").await.status(), 404);
    }

    #[test]
    fn the_page_loads_only_its_own_script_and_no_inline_code() {
        assert!(INDEX.contains(r#"src="/admin/console.js""#));
        assert!(!INDEX.contains("onclick"));
        assert!(!INDEX.contains("<script>"));
    }
}
