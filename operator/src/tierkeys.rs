//! The Secret `<cluster>-tier-keys`: the keyring the tiers check each other's credentials
//! against, and one credential per tier, rotated without downtime.
//!
//! A rotation has three steps, each a grace period apart (longer than kubelet takes to
//! update a mounted Secret plus the tiers' reload interval), so no tier ever holds a credential
//! its callee does not yet accept:
//!
//! 1. `KeyAdded`: a new key joins the keyring; credentials still use the old one.
//! 2. `CredentialsSwitched`: credentials use the new key; the old one is still accepted.
//! 3. `Stable`: the old key leaves the keyring.
//!
//! A rotation starts every `spec.tierKeys.rotationDays`, and at once when the annotation
//! [`ROTATE_ANNOTATION`] on the CommentCluster changes. The phase and its times are kept in
//! the Secret's annotations, so a restarted operator carries on where it stopped. The
//! decisions are the pure [`plan`]; [`secret`] builds the object; the reconciler applies it.
//! Nothing here logs or reports key material: Events name key ids only.

use std::collections::BTreeMap;
use std::time::Duration;

use io360_common::auth::{Key, Keyring, TIERS};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Changing this annotation on a CommentCluster (to any new value) starts a rotation.
pub const ROTATE_ANNOTATION: &str = "io360.dev/rotate-tier-keys";

const PHASE: &str = "io360.dev/tier-keys-phase";
const SINCE: &str = "io360.dev/tier-keys-phase-since";
const ROTATED: &str = "io360.dev/tier-keys-rotated";
const SIGNING: &str = "io360.dev/tier-keys-signing";
const TRIGGER: &str = "io360.dev/tier-keys-trigger";

/// The Secret's item holding the keyring.
pub const KEYS_ITEM: &str = "keys";

/// The Secret's item holding `tier`'s credential.
pub fn token_item(tier: &str) -> String {
    format!("{tier}.token")
}

/// The Secret's name for cluster `cc`.
pub fn secret_name(cc: &str) -> String {
    format!("{cc}-tier-keys")
}

/// Where in a rotation the keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One key, used by every credential.
    Stable,
    /// A new key is accepted; credentials still use the old one.
    KeyAdded,
    /// Credentials use the new key; the old one is still accepted.
    CredentialsSwitched,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "Stable",
            Phase::KeyAdded => "KeyAdded",
            Phase::CredentialsSwitched => "CredentialsSwitched",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [Phase::Stable, Phase::KeyAdded, Phase::CredentialsSwitched]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// The keys and where the rotation stands.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// Every key accepted now.
    pub keyring: Keyring,
    /// The id of the key credentials are made with.
    pub signing: String,
    /// The rotation's phase.
    pub phase: Phase,
    /// When the phase began.
    pub since: Timestamp,
    /// When the signing key started signing: the next rotation is due `rotationDays` later.
    pub rotated: Timestamp,
    /// The value of [`ROTATE_ANNOTATION`] last acted on.
    pub trigger: Option<String>,
}

/// A step a pass took, for an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The Secret was made, with its first key.
    Created {
        /// The key's id.
        key: String,
    },
    /// A new key was added to the keyring.
    KeyAdded {
        /// The new key's id.
        key: String,
    },
    /// Credentials now use the new key.
    CredentialsSwitched {
        /// The key now signing.
        key: String,
    },
    /// The old key left the keyring.
    KeyRetired {
        /// The retired key's id.
        key: String,
    },
}

impl Step {
    /// The Event's reason and note.
    pub fn event(&self) -> (&'static str, String) {
        match self {
            Step::Created { key } => (
                "TierKeysCreated",
                format!("created the tiers' keyring and credentials (key {key})"),
            ),
            Step::KeyAdded { key } => (
                "TierKeyAdded",
                format!("rotation: key {key} added; credentials switch to it after a grace period"),
            ),
            Step::CredentialsSwitched { key } => (
                "TierCredentialsSwitched",
                format!(
                    "rotation: credentials now use key {key}; the old key is retired after a grace period"
                ),
            ),
            Step::KeyRetired { key } => (
                "TierKeyRetired",
                format!("rotation done: key {key} removed from the keyring"),
            ),
        }
    }
}

/// What a pass should do with the keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The state the Secret should hold.
    pub state: KeyState,
    /// The step taken, if any.
    pub step: Option<Step>,
    /// When to look again.
    pub recheck: Duration,
}

fn next_kid(keyring: &Keyring) -> String {
    let n = keyring
        .keys()
        .iter()
        .filter_map(|k| k.id().strip_prefix('k')?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("k{}", n + 1)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// The next state of the keys, from the current one (`None`: no Secret yet).
pub fn plan(
    current: Option<KeyState>,
    now: Timestamp,
    rotation: Duration,
    trigger: Option<&str>,
    grace: Duration,
) -> Plan {
    let Some(s) = current else {
        let key = Key::generate("k1").expect("a valid key id");
        let state = KeyState {
            keyring: Keyring::new(vec![key]).expect("one key"),
            signing: "k1".into(),
            phase: Phase::Stable,
            since: now,
            rotated: now,
            // An annotation already set when the cluster is made asks for nothing.
            trigger: trigger.map(str::to_owned),
        };
        return Plan {
            state,
            step: Some(Step::Created { key: "k1".into() }),
            recheck: rotation,
        };
    };
    let grace_over = after(s.since, grace);
    match s.phase {
        Phase::Stable => {
            let due = after(s.rotated, rotation);
            let asked = trigger.is_some() && trigger != s.trigger.as_deref();
            if now < due && !asked {
                return Plan {
                    recheck: until(now, due),
                    state: s,
                    step: None,
                };
            }
            let kid = next_kid(&s.keyring);
            let mut keys = s.keyring.keys().to_vec();
            keys.push(Key::generate(&kid).expect("a valid key id"));
            let state = KeyState {
                keyring: Keyring::new(keys).expect("distinct ids"),
                phase: Phase::KeyAdded,
                since: now,
                trigger: trigger.map(str::to_owned).or(s.trigger),
                ..s
            };
            Plan {
                state,
                step: Some(Step::KeyAdded { key: kid }),
                recheck: grace,
            }
        }
        Phase::KeyAdded if now >= grace_over => {
            let newest = s
                .keyring
                .keys()
                .iter()
                .map(|k| k.id().to_owned())
                .find(|id| *id != s.signing)
                .unwrap_or_else(|| s.signing.clone());
            let state = KeyState {
                signing: newest.clone(),
                phase: Phase::CredentialsSwitched,
                since: now,
                rotated: now,
                ..s
            };
            Plan {
                state,
                step: Some(Step::CredentialsSwitched { key: newest }),
                recheck: grace,
            }
        }
        Phase::CredentialsSwitched if now >= grace_over => {
            let (keep, gone): (Vec<Key>, Vec<Key>) = s
                .keyring
                .keys()
                .iter()
                .cloned()
                .partition(|k| k.id() == s.signing);
            let retired = gone
                .iter()
                .map(|k| k.id().to_owned())
                .collect::<Vec<_>>()
                .join(", ");
            let state = KeyState {
                keyring: Keyring::new(keep).unwrap_or_else(|_| s.keyring.clone()),
                phase: Phase::Stable,
                since: now,
                ..s
            };
            Plan {
                recheck: until(now, after(state.rotated, rotation)),
                state,
                step: Some(Step::KeyRetired { key: retired }),
            }
        }
        Phase::KeyAdded | Phase::CredentialsSwitched => Plan {
            recheck: until(now, grace_over),
            state: s,
            step: None,
        },
    }
}

/// The state a Secret holds; `None` when it holds no usable keyring.
pub fn read(secret: &Secret) -> Option<KeyState> {
    let text = secret.data.as_ref()?.get(KEYS_ITEM)?;
    let keyring = Keyring::parse(std::str::from_utf8(&text.0).ok()?).ok()?;
    let a = secret.metadata.annotations.clone().unwrap_or_default();
    let time = |k: &str| a.get(k).and_then(|v| v.parse::<Timestamp>().ok());
    let signing = a
        .get(SIGNING)
        .filter(|id| keyring.keys().iter().any(|k| k.id() == id.as_str()))
        .cloned()
        .unwrap_or_else(|| keyring.keys()[0].id().to_owned());
    let since = time(SINCE).unwrap_or(Timestamp::UNIX_EPOCH);
    Some(KeyState {
        signing,
        phase: a
            .get(PHASE)
            .and_then(|p| Phase::parse(p))
            .unwrap_or(Phase::Stable),
        since,
        rotated: time(ROTATED).unwrap_or(since),
        trigger: a.get(TRIGGER).cloned(),
        keyring,
    })
}

/// The Secret holding `state`: the keyring and every tier's credential.
pub fn secret(
    name: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    owner: Vec<OwnerReference>,
    state: &KeyState,
) -> Secret {
    let signer = state
        .keyring
        .keys()
        .iter()
        .find(|k| k.id() == state.signing)
        .unwrap_or(&state.keyring.keys()[0]);
    let mut data = BTreeMap::from([(
        KEYS_ITEM.to_owned(),
        ByteString(state.keyring.to_text().into_bytes()),
    )]);
    for tier in TIERS {
        data.insert(
            token_item(tier),
            ByteString(signer.credential(tier).into_bytes()),
        );
    }
    let mut annotations = BTreeMap::from([
        (PHASE.to_owned(), state.phase.as_str().to_owned()),
        (SINCE.to_owned(), state.since.to_string()),
        (ROTATED.to_owned(), state.rotated.to_string()),
        (SIGNING.to_owned(), state.signing.clone()),
    ]);
    if let Some(t) = &state.trigger {
        annotations.insert(TRIGGER.to_owned(), t.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace,
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(owner),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(300);
    const DAYS30: Duration = Duration::from_secs(30 * 86400);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn accepts(state: &KeyState, credential: &str) -> bool {
        state.keyring.verify(credential).is_ok()
    }

    fn credential(state: &KeyState, tier: &str) -> String {
        let s = secret("c-tier-keys".into(), None, BTreeMap::new(), vec![], state);
        String::from_utf8(s.data.unwrap()[&token_item(tier)].0.clone()).unwrap()
    }

    #[test]
    fn a_rotation_goes_through_its_phases_and_every_credential_stays_accepted() {
        let first = plan(None, at(0), DAYS30, None, GRACE);
        assert_eq!(first.step, Some(Step::Created { key: "k1".into() }));
        let s0 = first.state;
        // Nothing to do before the rotation is due.
        let idle = plan(Some(s0.clone()), at(3600), DAYS30, None, GRACE);
        assert_eq!(idle.step, None);
        assert_eq!(idle.recheck, DAYS30 - Duration::from_secs(3600));
        // Asked for by the annotation.
        let p1 = plan(Some(s0.clone()), at(4000), DAYS30, Some("now"), GRACE);
        assert_eq!(p1.step, Some(Step::KeyAdded { key: "k2".into() }));
        let s1 = p1.state;
        // Credentials made before the step are accepted during and after it.
        let old = credential(&s0, "logic");
        assert_eq!(
            credential(&s1, "logic"),
            old,
            "credentials wait for the grace period"
        );
        assert!(accepts(&s1, &old));
        // Not before the grace period is over.
        let wait = plan(Some(s1.clone()), at(4100), DAYS30, Some("now"), GRACE);
        assert_eq!(wait.step, None);
        assert_eq!(wait.recheck, Duration::from_secs(200));
        let p2 = plan(Some(s1.clone()), at(4300), DAYS30, Some("now"), GRACE);
        assert_eq!(
            p2.step,
            Some(Step::CredentialsSwitched { key: "k2".into() })
        );
        let s2 = p2.state;
        let new = credential(&s2, "logic");
        assert_ne!(new, old);
        // Both are accepted while tiers pick up the new one; the keyring a tier still holds
        // from before (s1) accepts the new credential too.
        assert!(accepts(&s2, &old) && accepts(&s2, &new) && accepts(&s1, &new));
        let p3 = plan(Some(s2.clone()), at(4600), DAYS30, Some("now"), GRACE);
        assert_eq!(p3.step, Some(Step::KeyRetired { key: "k1".into() }));
        let s3 = p3.state;
        assert!(!accepts(&s3, &old) && accepts(&s3, &new));
        assert_eq!(s3.phase, Phase::Stable);
        // The same annotation value asks for nothing more.
        assert_eq!(
            plan(Some(s3.clone()), at(5000), DAYS30, Some("now"), GRACE).step,
            None
        );
        // The period counts from the switch.
        let due_at = at(4300).checked_add(DAYS30).unwrap();
        let due = plan(Some(s3), due_at, DAYS30, Some("now"), GRACE);
        assert_eq!(due.step, Some(Step::KeyAdded { key: "k3".into() }));
    }

    #[test]
    fn the_secret_reads_back_as_the_state_it_holds() {
        let s = plan(None, at(0), DAYS30, Some("x"), GRACE).state;
        let s = plan(Some(s), at(10), DAYS30, Some("y"), GRACE).state;
        let obj = secret("c-tier-keys".into(), None, BTreeMap::new(), vec![], &s);
        assert_eq!(read(&obj).as_ref(), Some(&s));
        let text = serde_json::to_string(&obj.metadata).unwrap();
        for k in s.keyring.keys() {
            let secret = k.to_line();
            let secret = secret.split(' ').nth(1).unwrap();
            assert!(!text.contains(secret), "metadata holds a key: {text}");
        }
        assert!(!text.contains(&credential(&s, "logic")), "{text}");
    }

    #[test]
    fn each_tier_credential_names_its_tier() {
        let s = plan(None, at(0), DAYS30, None, GRACE).state;
        for tier in TIERS {
            assert_eq!(s.keyring.verify(&credential(&s, tier)), Ok(tier));
        }
    }
}
