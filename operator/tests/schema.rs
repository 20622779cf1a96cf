//! The checked-in CRD on a real API server, installed from its YAML the way kubectl and helm
//! install it: every documented value of every enum field, written the way a user writes it
//! (unquoted, in YAML, through kubectl), is taken; every invalid fixture is refused by the API
//! server itself (schema and CEL rules), not only later by the operator. And the chart's
//! example admin token, made at install, survives `helm upgrade`.
//!
//! kubectl and helm read YAML 1.1, where unquoted `on`, `off`, `yes`, `no` (and more) are
//! booleans: an enum value spelled like one installs as a boolean in the CRD and cannot be
//! written unquoted in a CommentCluster. This test applies each value and reads it back.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use io360_cluster_tests::{Cluster, run};
use serde_json::Value;

/// An enum field of the CommentCluster schema: its path under the root and its values.
struct EnumField {
    path: Vec<String>,
    description: String,
    values: Vec<Value>,
}

/// Every enum field reachable through objects (not lists or maps) from `schema`.
fn enum_fields(schema: &Value, path: &mut Vec<String>, out: &mut Vec<EnumField>) {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        out.push(EnumField {
            path: path.clone(),
            description: schema["description"].as_str().unwrap_or("").to_string(),
            values: values.clone(),
        });
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            path.push(name.clone());
            enum_fields(sub, path, out);
            path.pop();
        }
    }
}

/// `value` nested under `path` as block YAML, the value written bare.
fn nested_yaml(path: &[String], value: &str, indent: usize) -> String {
    let mut out = String::new();
    for (depth, key) in path.iter().enumerate() {
        out.push_str(&" ".repeat(indent + 2 * depth));
        out.push_str(key);
        out.push(':');
        if depth + 1 == path.len() {
            out.push(' ');
            out.push_str(value);
        }
        out.push('\n');
    }
    out
}

fn at<'a>(v: &'a Value, path: &[String]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[k.as_str()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_and_chart_on_a_real_api_server() -> Result<()> {
    let cluster = Cluster::start()
        .await
        .context("starting the test cluster")?;
    let crd_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/commentclusters.io360.dev.yaml");
    run(cluster
        .kubectl()
        .args(["apply", "--server-side", "-f"])
        .arg(&crd_file))
    .await
    .context("kubectl must install the checked-in CRD")?;
    let mut tries = 0;
    loop {
        let crd: Value = serde_json::from_str(
            &run(cluster
                .kubectl()
                .args(["get", "crd", "commentclusters.io360.dev", "-o", "json"]))
            .await?,
        )?;
        let conditions = crd["status"]["conditions"].as_array().cloned();
        if conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
        {
            break;
        }
        tries += 1;
        ensure!(tries < 300, "the CRD was not established in 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The schema as the API server stored it, after kubectl read the YAML.
    let crd: Value = serde_json::from_str(
        &run(cluster
            .kubectl()
            .args(["get", "crd", "commentclusters.io360.dev", "-o", "json"]))
        .await?,
    )?;
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut fields = Vec::new();
    enum_fields(
        &root["properties"]["spec"],
        &mut vec!["spec".into()],
        &mut fields,
    );
    let names: Vec<String> = fields.iter().map(|f| f.path.join(".")).collect();
    ensure!(
        names.contains(&"spec.moderation".to_string())
            && names.contains(&"spec.image.pullPolicy".to_string()),
        "enum fields went missing from the schema: {names:?}"
    );

    let ns = "enums";
    run(cluster.kubectl().args(["create", "namespace", ns])).await?;
    let mut applied = 0;
    for field in &fields {
        let name = field.path.join(".");
        // The autoscaling schema is one type shared by the scalable tiers; its values are
        // written on longpoll's, the one tier where every metric is allowed.
        let autoscaling = field.path.iter().any(|p| p == "autoscaling");
        if autoscaling && field.path[1] != "longpoll" {
            continue;
        }
        for value in &field.values {
            let text = value.as_str().with_context(|| {
                format!(
                    "{name}: enum value {value} installed as a non-string (YAML 1.1 read it so)"
                )
            })?;
            ensure!(
                field.description.contains(&format!("`{text}`")),
                "{name}: value `{text}` is not in the field's documentation: {:?}",
                field.description
            );
            applied += 1;
            let cc = format!("v{applied}");
            // An autoscaler needs its maximum.
            let mut nested = nested_yaml(&field.path[1..], text, 2)
                .replace("autoscaling:\n", "autoscaling:\n      maxReplicas: 4\n");
            // A store on PostgreSQL needs its database.
            if name == "spec.store.engine" && text == "Postgres" {
                nested.push_str("    postgres:\n      urlSecret:\n        name: db\n");
            }
            // Email needs its mail server's host, its sender and the site's URL.
            if name == "spec.notifications.smtp.tls" {
                nested = nested.replace("smtp:\n", "smtp:\n      host: smtp.example.org\n");
                nested.push_str(
                    "    from: comments@example.org\n    publicUrl: https://example.org\n",
                );
            }
            let yaml = format!(
                "apiVersion: io360.dev/v1alpha1\nkind: CommentCluster\nmetadata:\n  name: {cc}\n  namespace: {ns}\nspec:\n  adminTokenSecret:\n    name: admin\n{nested}",
            );
            let file = cluster.scratch().join(format!("{cc}.yaml"));
            std::fs::write(&file, &yaml)?;
            run(cluster.kubectl().args(["apply", "-f"]).arg(&file))
                .await
                .with_context(|| format!("{name}: {text} written unquoted was refused:\n{yaml}"))?;
            let stored: Value = serde_json::from_str(
                &run(cluster.kubectl().args([
                    "get",
                    "commentcluster",
                    &cc,
                    "-n",
                    ns,
                    "-o",
                    "json",
                ]))
                .await?,
            )?;
            ensure!(
                at(&stored, &field.path) == &Value::String(text.to_string()),
                "{name}: applied {text}, stored {}",
                at(&stored, &field.path)
            );
        }
    }
    ensure!(applied >= 6, "only {applied} enum values applied");

    // Every rule of the operator's validation is also in the CRD: a bad spec is refused at
    // `kubectl apply`, with the message the fixture expects the operator to give.
    let invalid = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut refused = 0;
    for entry in std::fs::read_dir(&invalid)? {
        let path = entry?.path();
        let out = cluster
            .kubectl()
            .args(["apply", "--dry-run=server", "-f"])
            .arg(&path)
            .output()
            .await?;
        ensure!(
            !out.status.success(),
            "the API server accepted {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.contains("is invalid") || err.contains("Invalid value"),
            "{}: refused for another reason: {err}",
            path.display()
        );
        refused += 1;
    }
    ensure!(refused >= 10, "invalid fixtures went missing");

    // The store's engine is chosen once: a Fjall store cannot be switched to PostgreSQL.
    let engine = |engine: &str| {
        let database = if engine == "Postgres" {
            "    postgres:\n      urlSecret:\n        name: db\n"
        } else {
            ""
        };
        format!(
            "apiVersion: io360.dev/v1alpha1\nkind: CommentCluster\nmetadata:\n  name: engine\n  namespace: {ns}\nspec:\n  adminTokenSecret:\n    name: admin\n  store:\n    engine: {engine}\n{database}"
        )
    };
    let file = cluster.scratch().join("engine.yaml");
    std::fs::write(&file, engine("Fjall"))?;
    run(cluster.kubectl().args(["apply", "-f"]).arg(&file)).await?;
    std::fs::write(&file, engine("Postgres"))?;
    let out = cluster
        .kubectl()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("engine cannot change"),
        "switching the store's engine was not refused as such: {err}"
    );

    // The example's token is made once and kept: an upgrade must not hand logic replicas a
    // new one (the CommentCluster's revision, in the pods' config hash, stays too).
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/io360-operator");
    let install = |verb: &'static str| {
        let mut cmd = cluster.helm();
        cmd.args([
            verb,
            "io360",
            "--namespace",
            "io360-system",
            "--create-namespace",
        ])
        .arg(&chart)
        .args([
            "--set",
            "example.enabled=true",
            "--set",
            "watchNamespace=sites",
        ]);
        cmd
    };
    run(cluster.kubectl().args(["create", "namespace", "sites"])).await?;
    run(&mut install("install")).await.context("helm install")?;
    let token = || async {
        let secret: Value = serde_json::from_str(
            &run(cluster.kubectl().args([
                "get",
                "secret",
                "example-admin-token",
                "-n",
                "sites",
                "-o",
                "json",
            ]))
            .await?,
        )?;
        let cc: Value = serde_json::from_str(
            &run(cluster.kubectl().args([
                "get",
                "commentcluster",
                "example",
                "-n",
                "sites",
                "-o",
                "json",
            ]))
            .await?,
        )?;
        anyhow::Ok((
            secret["data"]["token"].clone(),
            cc["spec"]["adminTokenSecret"]["revision"].clone(),
        ))
    };
    let before = token()
        .await
        .context("the example lands in the watched namespace")?;
    ensure!(before.0.is_string() && before.1.is_string(), "{before:?}");
    run(&mut install("upgrade")).await.context("helm upgrade")?;
    let after = token().await?;
    ensure!(
        before == after,
        "helm upgrade changed the example token: {before:?} -> {after:?}"
    );
    Ok(())
}
