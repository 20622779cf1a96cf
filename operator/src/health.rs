//! Why a tier is not ready, read from its pods, so a CommentCluster whose image cannot be
//! pulled or whose tier keeps crashing says so in its status instead of "waiting".
//!
//! A Deployment's status only counts ready replicas; the reason lives on the pods: a container
//! waiting in `ImagePullBackOff` or `CrashLoopBackOff`, a last run that ended `OOMKilled`, a pod
//! the scheduler cannot place. [`tier_problem`] picks the one a person should read first.

use k8s_openapi::api::core::v1::Pod;

/// What keeps a tier's pods from being ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierProblem {
    /// A short CamelCase reason, as Kubernetes names it (`ImagePullBackOff`, `CrashLoopBackOff`,
    /// `Unschedulable`, ...).
    pub reason: String,
    /// What Kubernetes said about it, for people.
    pub message: String,
}

/// Waiting reasons that will not clear by waiting: someone has to change something.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "StartError",
];

/// The problem of the first pod of a tier that has one worth reporting, or `None` while its
/// pods are merely starting.
pub fn tier_problem(pods: &[Pod]) -> Option<TierProblem> {
    pods.iter().find_map(pod_problem)
}

fn pod_problem(pod: &Pod) -> Option<TierProblem> {
    let status = pod.status.as_ref()?;
    for container in status.container_statuses.iter().flatten() {
        let waiting = container.state.as_ref().and_then(|s| s.waiting.as_ref());
        let Some(waiting) = waiting else { continue };
        let reason = waiting.reason.clone().unwrap_or_default();
        if !STUCK.contains(&reason.as_str()) {
            continue;
        }
        let mut message = waiting.message.clone().unwrap_or_default();
        // A crash loop's own message only says how long the back-off is; how the last run
        // ended says why.
        if let Some(last) = container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
        {
            let ended = last.reason.clone().unwrap_or_else(|| "Error".into());
            let code = last.exit_code;
            let said = last.message.clone().unwrap_or_default();
            message = format!(
                "last run ended {ended} (exit code {code}){}{said}; restarted {} times",
                if said.is_empty() { "" } else { ": " },
                container.restart_count
            );
        }
        return Some(TierProblem {
            reason,
            message: one_line(&message),
        });
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(TierProblem {
        reason: "Unschedulable".into(),
        message: one_line(unschedulable.message.as_deref().unwrap_or_default()),
    })
}

/// Kubernetes messages can run to several lines and kilobytes; a condition message is read
/// on one line. A long one keeps its start and its end, where a runtime error names the cause
/// (`exec: "io360": executable file not found`).
fn one_line(text: &str) -> String {
    const MAX: usize = 200;
    const HEAD: usize = 60;
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.len() <= MAX {
        return joined;
    }
    let mut head = HEAD;
    while !joined.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = joined.len() - (MAX - HEAD);
    while !joined.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} … {}", &joined[..head], &joined[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status}))
            .expect("a valid pod")
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let pods = [
            pod(json!({"containerStatuses": [{
                "name": "io360", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }]})),
            pod(json!({"containerStatuses": [{
                "name": "io360", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {
                    "reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"reg/io360:nope\"\n: not found",
                }},
            }]})),
        ];
        let problem = tier_problem(&pods).expect("a problem");
        assert_eq!(problem.reason, "ImagePullBackOff");
        assert_eq!(
            problem.message,
            "Back-off pulling image \"reg/io360:nope\" : not found"
        );
    }

    #[test]
    fn a_crash_loop_says_how_the_last_run_ended() {
        let pods = [pod(json!({"containerStatuses": [{
            "name": "io360", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        }]}))];
        let problem = tier_problem(&pods).expect("a problem");
        assert_eq!(problem.reason, "CrashLoopBackOff");
        assert_eq!(
            problem.message,
            "last run ended OOMKilled (exit code 137); restarted 4 times"
        );
    }

    #[test]
    fn starting_pods_are_not_a_problem_but_unschedulable_ones_are() {
        let starting = [pod(json!({"containerStatuses": [{
            "name": "io360", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }]}))];
        assert_eq!(tier_problem(&starting), None);
        let pending = [pod(json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/4 nodes are available: 1 Insufficient cpu.",
        }]}))];
        assert_eq!(
            tier_problem(&pending),
            Some(TierProblem {
                reason: "Unschedulable".into(),
                message: "0/4 nodes are available: 1 Insufficient cpu.".into(),
            })
        );
    }

    #[test]
    fn long_messages_keep_their_start_and_end_on_character_boundaries() {
        let long = format!(
            "{} exec: \"io360\": executable file not found",
            "é".repeat(400)
        );
        let cut = one_line(&long);
        assert!(cut.starts_with("éé"));
        assert!(cut.ends_with("exec: \"io360\": executable file not found"));
        assert!(cut.contains(" … "));
        assert!(cut.len() <= 200 + " … ".len());
    }
}
