//! What a tier's HorizontalPodAutoscaler says about the metric it scales on: whether it can
//! read it, and, for the frontend, the reading automatic degrade decides from.
//!
//! An autoscaler that cannot read its metric (no metrics-server for `cpu`, no custom metrics
//! adapter for an `io360_` series) says so in condition `ScalingActive` = False with a reason
//! such as `FailedGetResourceMetric` or `FailedGetPodsMetric`, and then leaves the tier's
//! replicas as they are. That is a quiet failure worth a line in the CommentCluster's
//! status, and for automatic degrade it is no evidence either way: a frontend autoscaler that
//! cannot read CPU gives no reading, whatever stale numbers its status still holds.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
};

use crate::degrade::HpaReading;

/// Whether an autoscaler reads its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricState {
    /// It reads them.
    Available,
    /// It reports it cannot, and does not scale.
    Unavailable {
        /// The autoscaler's reason (`FailedGetPodsMetric`, ...).
        reason: String,
        /// What it said.
        message: String,
    },
    /// Scaling is disabled because the target is at zero replicas (longpoll while comments
    /// are suspended): there is nothing to read.
    Disabled {
        /// What the autoscaler said.
        message: String,
    },
    /// It has not reported yet.
    Pending,
}

impl MetricState {
    /// The value of `status.tiers.<tier>.autoscaling.metricsAvailable`.
    pub fn as_status(&self) -> &'static str {
        match self {
            Self::Available => "True",
            Self::Unavailable { .. } => "False",
            Self::Disabled { .. } | Self::Pending => "Unknown",
        }
    }

    /// What people read about it, when there is something to say.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Unavailable { reason, message } => Some(format!("{reason}: {message}")),
            Self::Disabled { message } => Some(format!("ScalingDisabled: {message}")),
            Self::Available | Self::Pending => None,
        }
    }
}

fn scaling_active(hpa: &HorizontalPodAutoscaler) -> Option<&HorizontalPodAutoscalerCondition> {
    hpa.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ScalingActive")
}

/// Whether `hpa` reads its metrics, from its `ScalingActive` condition and current metrics.
pub fn metric_state(hpa: &HorizontalPodAutoscaler) -> MetricState {
    let active = scaling_active(hpa);
    if let Some(c) = active.filter(|c| c.status == "False") {
        let reason = c.reason.clone().unwrap_or_default();
        let message = c.message.clone().unwrap_or_default();
        return if reason == "ScalingDisabled" {
            MetricState::Disabled { message }
        } else {
            MetricState::Unavailable { reason, message }
        };
    }
    let has_metrics = hpa
        .status
        .as_ref()
        .and_then(|s| s.current_metrics.as_ref())
        .is_some_and(|m| !m.is_empty());
    match (active, has_metrics) {
        (_, true) => MetricState::Available,
        // Active by its own word, yet no metric reported: it scales on nothing it can read.
        (Some(c), false) if c.status == "True" => MetricState::Unavailable {
            reason: "NoCurrentMetrics".into(),
            message: "the autoscaler reports no current value of any of its metrics".into(),
        },
        _ => MetricState::Pending,
    }
}

/// The degrade machine's view of the frontend autoscaler: replicas against the maximum, and
/// the CPU utilization it reports. `None` when it has not reported or reports that it cannot
/// read its metrics: no evidence either way.
pub fn reading(hpa: &HorizontalPodAutoscaler) -> Option<HpaReading> {
    let spec = hpa.spec.as_ref()?;
    let status = hpa.status.as_ref()?;
    if scaling_active(hpa).is_some_and(|c| c.status == "False") {
        return None;
    }
    let utilization = status.current_metrics.iter().flatten().find_map(|m| {
        m.resource
            .as_ref()
            .filter(|r| r.name == "cpu")
            .and_then(|r| r.current.average_utilization)
    });
    Some(HpaReading {
        current_replicas: status.current_replicas.unwrap_or(0),
        max_replicas: spec.max_replicas,
        utilization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(status: serde_json::Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({
            "metadata": {"name": "blog-frontend"},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "blog-frontend"},
                "maxReplicas": 10,
            },
            "status": status,
        }))
        .unwrap()
    }

    fn cpu(utilization: i32) -> serde_json::Value {
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": utilization, "averageValue": "900m"}}}])
    }

    fn condition(status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!([{"type": "ScalingActive", "status": status, "reason": reason, "message": message}])
    }

    #[test]
    fn a_failed_metric_read_is_unavailable_with_the_autoscalers_words() {
        let h = hpa(json!({
            "currentReplicas": 10, "desiredReplicas": 10,
            "currentMetrics": cpu(95),
            "conditions": condition("False", "FailedGetResourceMetric",
                "the HPA was unable to compute the replica count: failed to get cpu utilization"),
        }));
        let state = metric_state(&h);
        assert_eq!(state.as_status(), "False");
        assert_eq!(
            state.message().unwrap(),
            "FailedGetResourceMetric: the HPA was unable to compute the replica count: failed to get cpu utilization"
        );
        // The stale 95 % left in its status is no reading for automatic degrade.
        assert_eq!(reading(&h), None);
    }

    #[test]
    fn degrade_never_suspends_on_an_autoscaler_that_cannot_read_cpu() {
        use crate::degrade::{DegradeState, Thresholds, step};
        use std::time::Duration;
        // At maxReplicas with 95 % left in its status from before it lost its metrics.
        let h = hpa(json!({
            "currentReplicas": 10, "desiredReplicas": 10,
            "currentMetrics": cpu(95),
            "conditions": condition("False", "FailedGetResourceMetric", "no metrics"),
        }));
        let t = Thresholds {
            overload: 90,
            hold: Duration::from_secs(30),
            recovery: 60,
            cooldown: Duration::from_secs(60),
        };
        let mut state = DegradeState::default();
        for s in 0..120 {
            let now = jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
            state = step(state, now, reading(&h), &t);
        }
        assert_eq!(state, DegradeState::default());
    }

    #[test]
    fn a_pods_metric_the_adapter_does_not_serve_is_unavailable() {
        let h = hpa(json!({
            "currentReplicas": 2, "desiredReplicas": 2,
            "conditions": condition("False", "FailedGetPodsMetric",
                "unable to get metric io360_longpoll_held_connections"),
        }));
        assert!(
            matches!(metric_state(&h), MetricState::Unavailable { reason, .. } if reason == "FailedGetPodsMetric")
        );
    }

    #[test]
    fn a_reading_autoscaler_is_available_and_gives_degrade_its_numbers() {
        let h = hpa(json!({
            "currentReplicas": 10, "desiredReplicas": 10,
            "currentMetrics": cpu(95),
            "conditions": condition("True", "ValidMetricFound", "the HPA was able to compute"),
        }));
        assert_eq!(metric_state(&h), MetricState::Available);
        assert_eq!(
            reading(&h),
            Some(HpaReading {
                current_replicas: 10,
                max_replicas: 10,
                utilization: Some(95)
            })
        );
        // Written by something that plays the HPA controller, without conditions: read as is.
        let bare = hpa(json!({"currentReplicas": 3, "currentMetrics": cpu(40)}));
        assert_eq!(metric_state(&bare), MetricState::Available);
        assert_eq!(reading(&bare).unwrap().utilization, Some(40));
    }

    #[test]
    fn active_with_no_metric_is_unavailable_and_unreported_is_pending() {
        let none = hpa(json!({
            "currentReplicas": 2,
            "conditions": condition("True", "ValidMetricFound", "ok"),
        }));
        assert!(
            matches!(metric_state(&none), MetricState::Unavailable { reason, .. } if reason == "NoCurrentMetrics")
        );
        let fresh = hpa(json!({}));
        assert_eq!(metric_state(&fresh), MetricState::Pending);
        assert_eq!(metric_state(&fresh).as_status(), "Unknown");
    }

    #[test]
    fn a_target_at_zero_disables_scaling_which_is_no_metric_problem() {
        let h = hpa(json!({
            "currentReplicas": 0,
            "conditions": condition("False", "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero"),
        }));
        let state = metric_state(&h);
        assert!(matches!(state, MetricState::Disabled { .. }));
        assert_eq!(state.as_status(), "Unknown");
        assert_eq!(reading(&h), None);
    }
}
