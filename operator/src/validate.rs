//! Checks a CommentCluster before anything is built from it. The CRD schema and its CEL rules
//! catch most mistakes at `kubectl apply`; this catches the rest (and the same ones again, for
//! API servers that skip CEL), each error naming the field at fault and what is allowed.

use std::fmt;

use kube::ResourceExt;

use crate::crd::{
    AutoscalingSpec, CommentCluster, NotificationsSpec, ScalingMetric, SmtpSpec, StoreEngine,
    StoreSpec, TierSpec,
};
use crate::desired::{self, Tier};

/// One problem with a spec: the field at fault and what is allowed there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.frontend.autoscaling.minReplicas`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CommentCluster: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidSpec(pub Vec<FieldError>);

/// The longest child suffix, `-logger-data`; names built from the cluster's name must stay valid
/// DNS labels (63 characters).
const LONGEST_SUFFIX: usize = "-logger-data".len();

/// Validates `cc`, returning every problem at once.
pub fn validate(cc: &CommentCluster) -> Result<(), InvalidSpec> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push(FieldError { field, message });
    let spec = &cc.spec;

    let name = cc.name_any();
    if name.len() + LONGEST_SUFFIX > 63 {
        err(
            "metadata.name".into(),
            format!(
                "must be at most {} characters, so that `<name>-logger-data` is a valid name (got {})",
                63 - LONGEST_SUFFIX,
                name.len()
            ),
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        err(
            "metadata.name".into(),
            "must start with a lowercase letter: Service names are derived from it".into(),
        );
    }

    for (tier, t) in Tier::scalable(cc) {
        tier_errors(tier, &format!("spec.{}", tier.as_str()), t, &mut err);
    }
    store_errors(&spec.store, &mut err);
    if let Some(n) = &spec.notifications {
        notifications_errors(n, &mut err);
    }

    let ad = &spec.auto_degrade;
    if ad.enabled
        && let Some(metric) = spec.frontend.autoscaling.as_ref().and_then(|a| a.metric)
        && metric != ScalingMetric::Cpu
    {
        err(
            "spec.frontend.autoscaling.metric".into(),
            format!(
                "must be CPU while autoDegrade is enabled: automatic degrade reads the frontend's CPU utilization, got {}",
                metric.as_str()
            ),
        );
    }
    if ad.enabled && spec.frontend.autoscaling.is_none() {
        err(
            "spec.autoDegrade.enabled".into(),
            "automatic degrade reads the frontend autoscaler: set spec.frontend.autoscaling".into(),
        );
    }
    if ad.recovery_threshold >= ad.utilization_threshold {
        err(
            "spec.autoDegrade.recoveryThreshold".into(),
            format!(
                "must be below utilizationThreshold ({}), got {}",
                ad.utilization_threshold, ad.recovery_threshold
            ),
        );
    }
    if !(1..=1000).contains(&ad.utilization_threshold) {
        err(
            "spec.autoDegrade.utilizationThreshold".into(),
            format!(
                "must be 1 to 1000 percent, got {}",
                ad.utilization_threshold
            ),
        );
    }
    for (field, v) in [
        ("holdSeconds", ad.hold_seconds),
        ("cooldownSeconds", ad.cooldown_seconds),
    ] {
        if !(0..=86400).contains(&v) {
            err(
                format!("spec.autoDegrade.{field}"),
                format!("must be 0 to 86400 seconds, got {v}"),
            );
        }
    }

    for (field, cidrs) in [
        ("trustedProxies", &spec.network.trusted_proxies),
        ("apiServerCidrs", &spec.network.api_server_cidrs),
    ] {
        for (i, cidr) in cidrs.iter().enumerate() {
            if let Err(why) = check_cidr(cidr) {
                err(format!("spec.network.{field}[{i}]"), why);
            }
        }
    }

    if let Some(digest) = &spec.image.digest
        && !digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    {
        err(
            "spec.image.digest".into(),
            format!("must be sha256: and 64 lowercase hex digits, got {digest:?}"),
        );
    }

    if spec.shutdown.drain_seconds >= spec.shutdown.termination_grace_period_seconds {
        err(
            "spec.shutdown.drainSeconds".into(),
            format!(
                "must be below terminationGracePeriodSeconds ({}), which includes it, got {}",
                spec.shutdown.termination_grace_period_seconds, spec.shutdown.drain_seconds
            ),
        );
    }

    if let Some(site) = &spec.site
        && site.config_map.is_some() == site.persistent_volume_claim.is_some()
    {
        err(
            "spec.site".into(),
            "set exactly one of configMap and persistentVolumeClaim".into(),
        );
    }

    for (i, origin) in spec.allowed_origins.iter().enumerate() {
        if let Err(why) = check_origin(origin) {
            err(format!("spec.allowedOrigins[{i}]"), why);
        }
    }

    if let Some(ing) = &spec.ingress
        && (ing.host.is_empty() || ing.host.contains('/') || ing.host.contains(':'))
    {
        err(
            "spec.ingress.host".into(),
            format!(
                "must be a bare host name like blog.example.com, got {:?}",
                ing.host
            ),
        );
    }

    if spec.admin_token_secret.name.is_empty() {
        err(
            "spec.adminTokenSecret.name".into(),
            "must name a Secret holding the admin token".into(),
        );
    }

    for (tier, storage) in [
        ("store", &spec.store.tier.storage),
        ("logger", &spec.logger.storage),
    ] {
        if !is_quantity(&storage.size) {
            err(
                format!("spec.{tier}.storage.size"),
                format!("must be a quantity like 10Gi, got {:?}", storage.size),
            );
        }
    }

    if errs.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec(errs))
    }
}

/// The store's engine and what goes with it (the CRD's rules, checked again for an API server
/// that did not run them).
/// What goes into a mail header or an SMTP command must not break out of it.
fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// An address as notify sends to it: `local@domain`, no spaces, commas or line breaks.
fn is_address(s: &str) -> bool {
    s.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !s.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control())
    })
}

fn notifications_errors(n: &NotificationsSpec, err: &mut impl FnMut(String, String)) {
    if n.smtp.is_none() && n.webhooks.is_none() {
        err(
            "spec.notifications".into(),
            "set smtp (email), webhooks, or both".into(),
        );
    }
    if let Some(smtp) = &n.smtp {
        smtp_errors(smtp, err);
        if n.from.is_none() {
            err(
                "spec.notifications.from".into(),
                "email needs the sender, e.g. `Comments <comments@example.org>`".into(),
            );
        }
        if n.public_url.is_none() {
            err(
                "spec.notifications.publicUrl".into(),
                "email needs the site's public URL, where the links in messages point".into(),
            );
        }
    }
    if let Some(from) = &n.from
        && (has_line_break(from) || !from.contains('@'))
    {
        err(
            "spec.notifications.from".into(),
            format!(
                "must be one address, e.g. `Comments <comments@example.org>`, on one line, got {from:?}"
            ),
        );
    }
    if let Some(url) = &n.public_url
        && (!(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#'))
    {
        err(
            "spec.notifications.publicUrl".into(),
            format!(
                "must be the site's http(s):// base URL without query or fragment, got {url:?}"
            ),
        );
    }
    for (i, m) in n.moderators.iter().enumerate() {
        if !is_address(m) {
            err(
                format!("spec.notifications.moderators[{i}]"),
                format!("must be one email address (local@domain), got {m:?}"),
            );
        }
    }
    if !(0..=86_400).contains(&n.digest_seconds) {
        err(
            "spec.notifications.digestSeconds".into(),
            format!("must be 0 to 86400, got {}", n.digest_seconds),
        );
    }
    if n.daily_summary && (n.moderators.is_empty() || n.smtp.is_none()) {
        err(
            "spec.notifications.dailySummary".into(),
            "is emailed to moderators: set smtp and moderators".into(),
        );
    }
    if let Some(hooks) = &n.webhooks {
        for (i, p) in hooks.ports.iter().enumerate() {
            if !(1..=65535).contains(p) {
                err(
                    format!("spec.notifications.webhooks.ports[{i}]"),
                    format!("must be 1 to 65535, got {p}"),
                );
            }
        }
        if hooks.ports.is_empty() {
            err(
                "spec.notifications.webhooks.ports".into(),
                "needs at least one port receivers listen on".into(),
            );
        }
    }
}

fn smtp_errors(smtp: &SmtpSpec, err: &mut impl FnMut(String, String)) {
    if smtp.host.is_empty()
        || smtp
            .host
            .contains(|c: char| !(c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
    {
        err(
            "spec.notifications.smtp.host".into(),
            format!(
                "must be a host name or address (letters, digits, `.`, `-`, `:`, `[]`), got {:?}",
                smtp.host
            ),
        );
    }
    if !(1..=65535).contains(&smtp.port) {
        err(
            "spec.notifications.smtp.port".into(),
            format!("must be 1 to 65535, got {}", smtp.port),
        );
    }
    if smtp
        .credentials_secret
        .as_ref()
        .is_some_and(|c| c.name.is_empty())
    {
        err(
            "spec.notifications.smtp.credentialsSecret.name".into(),
            "must name the Secret with the keys username and password".into(),
        );
    }
}

fn store_errors(store: &StoreSpec, err: &mut impl FnMut(String, String)) {
    match (store.engine, &store.postgres) {
        (StoreEngine::Postgres, None) => err(
            "spec.store.postgres".into(),
            "engine Postgres needs the database: set postgres.urlSecret".into(),
        ),
        (StoreEngine::Fjall, Some(_)) => err(
            "spec.store.engine".into(),
            "must be Postgres when store.postgres is set".into(),
        ),
        (StoreEngine::Postgres, Some(pg)) if pg.url_secret.name.is_empty() => err(
            "spec.store.postgres.urlSecret.name".into(),
            "must name the Secret holding the database URL".into(),
        ),
        _ => {}
    }
    if store.engine == StoreEngine::Fjall {
        for (field, set) in [
            ("replicas", store.replicas.is_some()),
            ("autoscaling", store.autoscaling.is_some()),
            ("podDisruptionBudget", store.pod_disruption_budget.is_some()),
        ] {
            if set {
                err(
                    format!("spec.store.{field}"),
                    "applies to engine Postgres only: the Fjall store is always one replica".into(),
                );
            }
        }
    } else {
        if store.replicas.is_some() && store.autoscaling.is_some() {
            err(
                "spec.store".into(),
                "set either replicas or autoscaling, not both".into(),
            );
        }
        if let Some(auto) = &store.autoscaling {
            metric_errors(Tier::Store, "spec.store.autoscaling", auto, err);
        }
    }
}

fn tier_errors(tier: Tier, path: &str, t: &TierSpec, err: &mut impl FnMut(String, String)) {
    if t.replicas.is_some() && t.autoscaling.is_some() {
        err(
            path.to_string(),
            "set either replicas or autoscaling, not both".into(),
        );
    }
    if let Some(r) = t.replicas
        && !(0..=1000).contains(&r)
    {
        err(
            format!("{path}.replicas"),
            format!("must be 0 to 1000, got {r}"),
        );
    }
    if let Some(auto) = &t.autoscaling {
        metric_errors(tier, &format!("{path}.autoscaling"), auto, err);
    }
    if let Some(AutoscalingSpec {
        min_replicas,
        max_replicas,
        target_cpu_utilization,
        ..
    }) = &t.autoscaling
    {
        if *min_replicas < 1 {
            err(
                format!("{path}.autoscaling.minReplicas"),
                format!("must be at least 1, got {min_replicas}"),
            );
        }
        if min_replicas > max_replicas {
            err(
                format!("{path}.autoscaling.minReplicas"),
                format!("must be at most maxReplicas ({max_replicas}), got {min_replicas}"),
            );
        }
        if !(1..=100).contains(target_cpu_utilization) {
            err(
                format!("{path}.autoscaling.targetCpuUtilization"),
                format!("must be 1 to 100 percent, got {target_cpu_utilization}"),
            );
        }
    }
    if let Some(p) = &t.pod_disruption_budget
        && p.min_available.is_some()
        && p.max_unavailable.is_some()
    {
        err(
            format!("{path}.podDisruptionBudget"),
            "set at most one of minAvailable and maxUnavailable".into(),
        );
    }
}

/// A tier's choice of metric against its targets: a target for a metric the tier does not
/// scale on would be silently ignored, and only longpoll pods report held connections.
fn metric_errors(
    tier: Tier,
    path: &str,
    auto: &AutoscalingSpec,
    err: &mut impl FnMut(String, String),
) {
    let metric = desired::scaling_metric(tier, auto);
    if tier != Tier::Longpoll
        && (metric == ScalingMetric::HeldConnections || auto.target_held_connections.is_some())
    {
        let field = if auto.target_held_connections.is_some() {
            "targetHeldConnections"
        } else {
            "metric"
        };
        err(
            format!("{path}.{field}"),
            "HeldConnections and targetHeldConnections are longpoll's alone: only longpoll pods report io360_longpoll_held_connections".into(),
        );
    } else if auto.target_held_connections.is_some() && metric != ScalingMetric::HeldConnections {
        err(
            format!("{path}.targetHeldConnections"),
            format!(
                "applies only when metric is HeldConnections, got metric {}",
                metric.as_str()
            ),
        );
    }
    if auto.target_requests_in_flight.is_some() && metric != ScalingMetric::RequestsInFlight {
        err(
            format!("{path}.targetRequestsInFlight"),
            format!(
                "applies only when metric is RequestsInFlight, got metric {}",
                metric.as_str()
            ),
        );
    }
    for (field, value) in [
        ("targetHeldConnections", auto.target_held_connections),
        ("targetRequestsInFlight", auto.target_requests_in_flight),
    ] {
        if let Some(v) = value
            && v < 1
        {
            err(
                format!("{path}.{field}"),
                format!("must be at least 1, got {v}"),
            );
        }
    }
}

fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("must start with http:// or https://, got {origin:?}"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(format!(
            "must be scheme://host[:port] with no path, got {origin:?}"
        ));
    }
    Ok(())
}

/// An address block as `address/prefix`, e.g. `10.0.0.0/8` or `fd00::/8`.
fn check_cidr(cidr: &str) -> Result<(), String> {
    let bad = || format!("must be an address block such as 10.0.0.0/8 or fd00::/8, got {cidr:?}");
    let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let most = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > most {
        return Err(format!(
            "the prefix of {cidr:?} must be at most {most} for that address"
        ));
    }
    Ok(())
}

fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    !num.is_empty()
        && num.parse::<f64>().is_ok()
        && matches!(
            unit,
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
        )
}

#[cfg(test)]
mod tests {
    use super::check_cidr;

    #[test]
    fn address_blocks_need_an_address_and_a_prefix_that_fits_it() {
        for good in ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "::/0"] {
            assert_eq!(check_cidr(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "ingress/8",
            "10.0.0.0/x",
            "",
        ] {
            assert!(check_cidr(bad).is_err(), "{bad} was taken");
        }
    }
}
