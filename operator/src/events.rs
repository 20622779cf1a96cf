//! Kubernetes Events about CommentClusters (`events.k8s.io/v1`).
//!
//! An event that repeats (same cluster, type, reason and note) within [`SERIES_WINDOW`] is
//! counted on the first one as a series instead of being written again, as client-go's
//! recorder does. The note is part of what makes two events the same: "applied 25 objects for
//! generation 3" must not be folded into the series of "... for generation 1" and shown with
//! the first one's text.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// How long an event stays open for repeats to be counted on it.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_secs(6 * 60);

/// The longest note the API server takes, in bytes.
const NOTE_LIMIT: usize = 1024;

/// `text` cut at a character boundary to at most `limit` bytes.
fn clip(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something the operator did as asked.
    Normal,
    /// Something that needs a person's attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    type_: EventType,
    reason: String,
    note: String,
}

struct Written {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Writes Events as one controller instance.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    written: Mutex<HashMap<Key, Written>>,
}

impl Recorder {
    /// A recorder reporting as `controller` (the component) and `instance` (this replica).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Recorder {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `reason` happened to `regarding`, explained by `note`. `action` says in
    /// one machine-readable word what the operator did.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note = clip(note, NOTE_LIMIT);
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            note: note.to_string(),
        };
        // Decided under the lock, written after it: concurrent reconciles never wait on each
        // other's API calls.
        let (name, count) = {
            let mut written = self.written.lock().expect("event memory lock poisoned");
            written.retain(|_, w| w.last + SERIES_WINDOW > now);
            match written.get_mut(&key) {
                Some(w) => {
                    w.count += 1;
                    w.last = now;
                    (w.name.clone(), w.count)
                }
                None => {
                    let name = format!(
                        "{}.{:x}",
                        regarding.name.as_deref().unwrap_or("commentcluster"),
                        now.as_nanosecond()
                    );
                    written.insert(
                        key.clone(),
                        Written {
                            name: name.clone(),
                            count: 1,
                            last: now,
                        },
                    );
                    (name, 1)
                }
            }
        };
        let sent = if count > 1 {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "series": series })),
            )
            .await
            .map(drop)
        } else {
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(namespace),
                    ..ObjectMeta::default()
                },
                event_time: Some(MicroTime(now)),
                type_: Some(type_.as_str().to_string()),
                reason: Some(reason.to_string()),
                action: Some(action.to_string()),
                note: Some(note.to_string()),
                regarding: Some(regarding.clone()),
                reporting_controller: Some(self.controller.clone()),
                reporting_instance: Some(self.instance.clone()),
                ..Event::default()
            };
            api.create(&PostParams::default(), &event).await.map(drop)
        };
        if sent.is_err() {
            // Not written (or the event is gone): the next occurrence starts a new event.
            self.written
                .lock()
                .expect("event memory lock poisoned")
                .remove(&key);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_keeps_short_notes_and_cuts_long_ones_between_characters() {
        assert_eq!(clip("short", 1024), "short");
        assert_eq!(clip("abcdef", 4), "abcd");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(clip("abé", 3), "ab");
    }
}
