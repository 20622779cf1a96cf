//! The admin API's webhooks, under `/api/v1/admin/webhooks`: register, list and remove the
//! URLs the site's events are POSTed to, and read each one's delivery log. The endpoints,
//! their queues and logs live in the notify tier; these routes check the admin token and
//! pass the request on, so a problem notify raises (a private address, an unknown event
//! kind, too many endpoints) reaches the caller as notify wrote it.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use http::StatusCode;
use io360_common::Problem;
use io360_common::extract::Json;
use io360_notify::api::{Deleted, DeliveryLog, Webhook, WebhookRequest, Webhooks};

use crate::admin::Admin;
use crate::state::AppState;

/// The routes; every one answers 404 when the site has no notify tier.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/webhooks", get(list).post(create))
        .route("/api/v1/admin/webhooks/{id}", axum::routing::delete(remove))
        .route("/api/v1/admin/webhooks/{id}/deliveries", get(deliveries))
}

fn notify(s: &AppState) -> Result<&io360_notify::NotifyClient, Problem> {
    s.notify.as_ref().ok_or_else(|| {
        Problem::not_found(
            "notifications-off",
            "this site has no notify tier: set IO360_WEBHOOKS (or IO360_SMTP_URL) to run it",
        )
    })
}

/// An id as the path carries it: checked here too, so nothing odd is put into notify's path.
fn check_id(id: &str) -> Result<(), Problem> {
    if id.len() != 19 || !id.starts_with("wh_") || !id[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::invalid(
            "id",
            "must be a webhook id like wh_0123456789abcdef",
        ));
    }
    Ok(())
}

async fn list(_: Admin, State(s): State<AppState>) -> Result<axum::Json<Webhooks>, Problem> {
    Ok(axum::Json(notify(&s)?.webhooks().await?))
}

async fn create(
    _: Admin,
    State(s): State<AppState>,
    Json(r): Json<WebhookRequest>,
) -> Result<(StatusCode, axum::Json<Webhook>), Problem> {
    let made = notify(&s)?.register_webhook(&r).await?;
    Ok((StatusCode::CREATED, axum::Json(made)))
}

async fn remove(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Deleted>, Problem> {
    check_id(&id)?;
    Ok(axum::Json(notify(&s)?.delete_webhook(&id).await?))
}

async fn deliveries(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryLog>, Problem> {
    check_id(&id)?;
    Ok(axum::Json(notify(&s)?.webhook_deliveries(&id).await?))
}
