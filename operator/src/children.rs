//! The operator's cached view of every child it manages, and the fingerprints that let a
//! reconcile pass skip an apply that would change nothing.
//!
//! Every owned kind is watched anyway (a change of a child triggers its CommentCluster's
//! reconcile); the watches also fill one reflector store per kind, read here. A pass applies
//! a child only when the desired object differs from the one it last applied, or when the
//! cached child differs from what that apply left in a field the operator sets (a hand edit)
//! or is gone or replaced (deleted by hand). Status updates by other controllers touch no
//! field the operator sets, so they cost a cache read instead of a request.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Resource;
use kube::ResourceExt;
use kube::core::ApiResource;
use kube::runtime::reflector::Store;
use serde::Serialize;
use serde_json::Value;

/// A kind of child the operator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    /// The control ConfigMap.
    ConfigMap,
    /// The tiers' identity.
    ServiceAccount,
    /// What the tiers may read.
    Role,
    /// Binds the Role to the ServiceAccount.
    RoleBinding,
    /// logger's data.
    PersistentVolumeClaim,
    /// A tier's Service.
    Service,
    /// store.
    StatefulSet,
    /// The stateless tiers and logger.
    Deployment,
    /// A tier's autoscaler.
    HorizontalPodAutoscaler,
    /// A tier's disruption budget.
    PodDisruptionBudget,
    /// Who may reach a tier.
    NetworkPolicy,
    /// The optional public entry.
    Ingress,
}

impl ChildKind {
    /// Every kind, in apply order: what pods need (config, identity) first.
    pub const ALL: [ChildKind; 12] = [
        ChildKind::ConfigMap,
        ChildKind::ServiceAccount,
        ChildKind::Role,
        ChildKind::RoleBinding,
        ChildKind::PersistentVolumeClaim,
        ChildKind::Service,
        ChildKind::StatefulSet,
        ChildKind::Deployment,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::PodDisruptionBudget,
        ChildKind::NetworkPolicy,
        ChildKind::Ingress,
    ];

    /// The kind's API resource (group, version, kind, plural).
    pub fn resource(self) -> ApiResource {
        match self {
            ChildKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            ChildKind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            ChildKind::Role => ApiResource::erase::<Role>(&()),
            ChildKind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            ChildKind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            ChildKind::Service => ApiResource::erase::<Service>(&()),
            ChildKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            ChildKind::Deployment => ApiResource::erase::<Deployment>(&()),
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<HorizontalPodAutoscaler>(&())
            }
            ChildKind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            ChildKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            ChildKind::Ingress => ApiResource::erase::<Ingress>(&()),
        }
    }

    /// The kind named `kind` (`Deployment`, ...), when it is one of the operator's.
    pub fn of(kind: &str) -> Option<ChildKind> {
        Self::ALL.into_iter().find(|k| k.resource().kind == kind)
    }

    /// Kinds that come and go with the spec (autoscalers, disruption budgets, the Ingress):
    /// a child of these kinds that the spec no longer wants is deleted.
    pub fn pruned(self) -> bool {
        matches!(
            self,
            ChildKind::HorizontalPodAutoscaler
                | ChildKind::PodDisruptionBudget
                | ChildKind::Ingress
        )
    }

    /// Kinds applied before the rest: what pods read at start (the control ConfigMap, their
    /// identity), and a Role before its RoleBinding, which the API server checks against it.
    pub fn applied_first(self) -> bool {
        matches!(
            self,
            ChildKind::ConfigMap | ChildKind::ServiceAccount | ChildKind::Role
        )
    }

    /// Kinds that run a tier's pods.
    pub fn workload(self) -> bool {
        matches!(self, ChildKind::Deployment | ChildKind::StatefulSet)
    }
}

/// One child of a CommentCluster: its kind and name (the namespace is the cluster's).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildRef {
    /// What kind of object.
    pub kind: ChildKind,
    /// Its name.
    pub name: String,
}

impl ChildRef {
    /// `kind` `name`.
    pub fn new(kind: ChildKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

/// `Kind/name`, as logs and events show a child.
impl fmt::Display for ChildRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.resource().kind, self.name)
    }
}

/// One kind's store, read without knowing the type.
trait KindStore: Send + Sync {
    /// The cached object `ns/name` as JSON.
    fn get(&self, ns: &str, name: &str) -> Option<Value>;
    /// Names of the cached objects in `ns` whose owner references name `owner_uid`.
    fn owned_by(&self, ns: &str, owner_uid: &str) -> Vec<String>;
}

impl<K> KindStore for Store<K>
where
    K: Resource<DynamicType = ()> + Serialize + Clone + Send + Sync + 'static,
{
    fn get(&self, ns: &str, name: &str) -> Option<Value> {
        let obj = Store::get(
            self,
            &kube::runtime::reflector::ObjectRef::new(name).within(ns),
        )?;
        serde_json::to_value(&*obj).ok()
    }

    fn owned_by(&self, ns: &str, owner_uid: &str) -> Vec<String> {
        self.state_filter(|o| {
            o.namespace().as_deref() == Some(ns)
                && o.owner_references().iter().any(|r| r.uid == owner_uid)
        })
        .iter()
        .map(|o| o.name_any())
        .collect()
    }
}

/// The stores of every owned kind, by kind name (`Deployment`, `ConfigMap`, ...).
#[derive(Default)]
pub struct Children {
    stores: HashMap<String, Box<dyn KindStore>>,
}

impl Children {
    /// Adds the store of kind `K`.
    pub fn insert<K>(&mut self, store: Store<K>)
    where
        K: Resource<DynamicType = ()> + Serialize + Clone + Send + Sync + 'static,
    {
        self.stores
            .insert(K::kind(&()).into_owned(), Box::new(store));
    }

    /// The cached child `kind` `ns/name` as JSON; `None` when it is not cached (not created
    /// yet, deleted, or the kind is not watched).
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.stores.get(kind)?.get(ns, name)
    }

    /// Every cached child in `ns` owned by the object with `owner_uid`, as JSON.
    pub fn all_owned_by(&self, ns: &str, owner_uid: &str) -> HashMap<ChildRef, Value> {
        let mut out = HashMap::new();
        for kind in ChildKind::ALL {
            let resource = kind.resource();
            for name in self.owned_by(&resource.kind, ns, owner_uid) {
                if let Some(object) = self.get(&resource.kind, ns, &name) {
                    out.insert(ChildRef::new(kind, name), object);
                }
            }
        }
        out
    }

    /// Names of the cached children of `kind` in `ns` owned by the object with `owner_uid`.
    pub fn owned_by(&self, kind: &str, ns: &str, owner_uid: &str) -> Vec<String> {
        self.stores
            .get(kind)
            .map(|s| s.owned_by(ns, owner_uid))
            .unwrap_or_default()
    }
}

/// A hash of a JSON value (object keys are ordered, so equal values hash alike).
pub fn hash_json(value: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(value)
        .expect("a JSON value serializes")
        .hash(&mut h);
    h.finish()
}

/// A hash of what `observed` holds in the fields `desired` sets, and of its uid. Two versions
/// of a child hash alike unless a field the operator applies was changed or the object was
/// replaced; fields others own (status, a controller's annotation, defaults) do not count.
pub fn fingerprint(observed: &Value, desired: &Value) -> u64 {
    let uid = &observed["metadata"]["uid"];
    hash_json(&Value::Array(vec![uid.clone(), project(observed, desired)]))
}

/// `observed` restricted to the shape of `desired`: the keys of every object in `desired`,
/// the elements of every list (with the observed length, so an added or removed element
/// counts), and observed values at the leaves.
fn project(observed: &Value, desired: &Value) -> Value {
    match (observed, desired) {
        (Value::Object(o), Value::Object(d)) => Value::Object(
            d.iter()
                .map(|(k, dv)| (k.clone(), project(o.get(k).unwrap_or(&Value::Null), dv)))
                .collect(),
        ),
        (Value::Array(o), Value::Array(d)) => {
            let mut out: Vec<Value> = o.iter().zip(d).map(|(ov, dv)| project(ov, dv)).collect();
            out.push(o.len().into());
            Value::Array(out)
        }
        // A leaf, or a value of another shape than wanted: the observed value as it is.
        (o, _) => o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired() -> Value {
        json!({
            "metadata": {"name": "a", "labels": {"app": "x"}},
            "spec": {"replicas": 2, "containers": [{"name": "c", "image": "i:1"}]},
        })
    }

    fn observed() -> Value {
        json!({
            "metadata": {"name": "a", "uid": "u1", "resourceVersion": "5",
                         "labels": {"app": "x"}, "annotations": {"revision": "1"}},
            "spec": {"replicas": 2, "containers": [
                {"name": "c", "image": "i:1", "imagePullPolicy": "IfNotPresent"}
            ]},
            "status": {"readyReplicas": 0},
        })
    }

    #[test]
    fn status_defaults_and_foreign_fields_do_not_count() {
        let mut later = observed();
        later["metadata"]["resourceVersion"] = "9".into();
        later["metadata"]["annotations"]["revision"] = "2".into();
        later["status"]["readyReplicas"] = 2.into();
        later["spec"]["containers"][0]["terminationMessagePath"] = "/dev/x".into();
        assert_eq!(
            fingerprint(&observed(), &desired()),
            fingerprint(&later, &desired())
        );
    }

    #[test]
    fn an_edited_or_removed_field_counts() {
        let mut edited = observed();
        edited["spec"]["containers"][0]["image"] = "other:2".into();
        assert_ne!(
            fingerprint(&observed(), &desired()),
            fingerprint(&edited, &desired())
        );
        let mut unlabelled = observed();
        unlabelled["metadata"]["labels"] = json!({});
        assert_ne!(
            fingerprint(&observed(), &desired()),
            fingerprint(&unlabelled, &desired())
        );
    }

    #[test]
    fn an_added_element_or_a_new_uid_counts() {
        let mut more = observed();
        more["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d", "image": "j:1"}));
        assert_ne!(
            fingerprint(&observed(), &desired()),
            fingerprint(&more, &desired())
        );
        let mut replaced = observed();
        replaced["metadata"]["uid"] = "u2".into();
        assert_ne!(
            fingerprint(&observed(), &desired()),
            fingerprint(&replaced, &desired())
        );
    }
}
