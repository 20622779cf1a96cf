//! What every io360 tier shares.
//!
//! The comment model that travels between tiers, the `application/problem+json` error body,
//! extractors that turn bad input into such bodies, telemetry (JSON logs, Prometheus metrics,
//! health endpoints), the serving loop with graceful shutdown, and the inter-tier HTTP client.

pub mod auth;
pub mod client;
pub mod extract;
pub mod format;
pub mod head;
pub mod html;
pub mod limits;
pub mod model;
pub mod problem;
pub mod retry;
pub mod rules;
pub mod sanitize;
pub mod serve;
pub mod telemetry;
pub mod writer;

pub use problem::Problem;
