//! Reading CommentClusters as the suites do: untyped JSON, so a suite checks what the API
//! server holds, not what the operator's types make of it.

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// The CommentCluster API of a namespace, untyped.
pub fn api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("io360.dev", "v1alpha1", "CommentCluster");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A CommentCluster as JSON (metadata, spec and status), or an error string for waits.
pub async fn get(client: &kube::Client, ns: &str, name: &str) -> Result<Value, String> {
    let cc = api(client, ns).get(name).await.map_err(|e| e.to_string())?;
    serde_json::to_value(cc).map_err(|e| e.to_string())
}

/// A condition of an object's status as (status, reason, message).
pub fn condition(object: &Value, type_: &str) -> Option<(String, String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// Whether the CommentCluster is Ready for its current generation; otherwise what it shows.
pub fn ready_for_generation(cc: &Value) -> Result<(), String> {
    let generation = cc["metadata"]["generation"].as_i64();
    let observed = cc["status"]["observedGeneration"].as_i64();
    match condition(cc, "Ready") {
        Some((status, _, _)) if status == "True" && observed == generation => Ok(()),
        other => Err(format!(
            "Ready={other:?}, observedGeneration {observed:?} of {generation:?}; status {}",
            cc["status"]
        )),
    }
}
