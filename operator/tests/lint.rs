//! The manifests through the linters a platform team runs before it lets an operator into a
//! cluster: kubeconform (strict, against schemas made here, offline, from the Kubernetes API's
//! OpenAPI document and the CommentCluster CRD) and kube-score, over the chart (default and
//! example values), every CommentCluster fixture, and the children the operator builds for
//! each fixture. `helm lint --strict` runs in `tests/chart.rs`.
//!
//! Any finding fails the test unless `tests/lint/exceptions.txt` lists it with the reason; an
//! exception that matches nothing fails it too, so the file stays short and true. The tools
//! come from `tests/lint/install-linters.sh` (and helm from `tests/cluster/install-tools.sh`);
//! a missing tool fails the test, it never skips it.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use io360_operator::crd::CommentCluster;
use io360_operator::desired::{self, Inputs};
use serde_json::{Map, Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("XDG_CACHE_HOME or HOME is set")
        .join("io360")
}

/// The Kubernetes release the cluster tests run, from `tests/cluster/install-tools.sh`.
fn k8s_version() -> String {
    let script = std::fs::read_to_string(repo().join("tests/cluster/install-tools.sh"))
        .expect("tests/cluster/install-tools.sh pins the Kubernetes version");
    script
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("a K8S_VERSION= line")
        .trim()
        .to_string()
}

fn tool(path: PathBuf, how: &str) -> PathBuf {
    assert!(path.is_file(), "{} not found: run `{how}`", path.display());
    path
}

fn lint_bin(name: &str) -> PathBuf {
    tool(
        cache().join("lint/bin").join(name),
        "bash tests/lint/install-linters.sh",
    )
}

// ---- schemas -------------------------------------------------------------------------------

/// Inlines `$ref`s of an OpenAPI v2 definition into a standalone, strict JSON schema: objects
/// with properties take no others, optional values may be null (as Helm renders empty ones),
/// int-or-string takes both. A definition that contains itself (JSONSchemaProps) is left open
/// where it recurs.
fn standalone(schema: &Value, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/definitions/").to_string();
        if stack.contains(&name) {
            return json!({});
        }
        stack.push(name.clone());
        let mut out = standalone(&defs[&name], defs, stack);
        stack.pop();
        if let (Some(d), Some(o)) = (schema.get("description"), out.as_object_mut()) {
            o.insert("description".into(), d.clone());
        }
        return out;
    }
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    if obj.get("format").and_then(Value::as_str) == Some("int-or-string")
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
    {
        return json!({"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]});
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "properties" => {
                let props = v
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, sub)| (name.clone(), standalone(sub, defs, stack)))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), standalone(v, defs, stack));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let all = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| standalone(s, defs, stack))
                    .collect();
                out.insert(k.clone(), Value::Array(all));
            }
            "type" => {
                out.insert(k.clone(), json!([v, "null"]));
            }
            "format" | "x-kubernetes-validations" | "nullable" | "default" => {}
            _ if k.starts_with("x-kubernetes-") => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let open = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if out.contains_key("properties") && !out.contains_key("additionalProperties") && !open {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// kubeconform's file name for a kind: `{kind}-{first label of the group}-{version}.json`.
fn schema_file(group: &str, version: &str, kind: &str) -> String {
    let group = group.split('.').next().unwrap_or("");
    let kind = kind.to_lowercase();
    if group.is_empty() {
        format!("{kind}-{version}.json")
    } else {
        format!("{kind}-{}-{version}.json", group.to_lowercase())
    }
}

/// Writes a schema for every kind of the Kubernetes API and for CommentCluster into `dir`.
fn write_schemas(dir: &Path) -> usize {
    let openapi = tool(
        cache()
            .join("lint/openapi")
            .join(format!("swagger-{}.json", k8s_version())),
        "bash tests/lint/install-linters.sh",
    );
    let swagger: Value = serde_json::from_slice(&std::fs::read(openapi).unwrap()).unwrap();
    let defs = swagger["definitions"].as_object().unwrap();
    let mut n = 0;
    for (name, def) in defs {
        let Some(gvks) = def["x-kubernetes-group-version-kind"].as_array() else {
            continue;
        };
        let schema = standalone(def, defs, &mut vec![name.clone()]);
        for gvk in gvks {
            let file = schema_file(
                gvk["group"].as_str().unwrap(),
                gvk["version"].as_str().unwrap(),
                gvk["kind"].as_str().unwrap(),
            );
            std::fs::write(dir.join(file), schema.to_string()).unwrap();
            n += 1;
        }
    }
    // CommentCluster: the CRD's schema, with the object metadata every kind has.
    let crd = serde_json::to_value(io360_operator::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    schema["properties"]["apiVersion"] = json!({"type": "string"});
    schema["properties"]["kind"] = json!({"type": "string"});
    schema["properties"]["metadata"] =
        json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
    let schema = standalone(&schema, defs, &mut Vec::new());
    std::fs::write(
        dir.join(schema_file(
            "io360.dev",
            version["name"].as_str().unwrap(),
            "CommentCluster",
        )),
        schema.to_string(),
    )
    .unwrap();
    n + 1
}

// ---- inputs --------------------------------------------------------------------------------

fn helm_template(extra: &[&str]) -> String {
    let helm = tool(
        cache().join(format!("k8s/{}/bin/helm", k8s_version())),
        "bash tests/cluster/install-tools.sh",
    );
    let home = std::env::temp_dir().join(format!("io360-lint-helm-{}", std::process::id()));
    let out = Command::new(helm)
        .args([
            "template",
            "io360",
            "--namespace",
            "io360-system",
            "--include-crds",
        ])
        .arg(repo().join("charts/io360-operator"))
        .args(extra)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every input, by name: the chart rendered two ways, each fixture as written, and the
/// children the operator builds for it.
fn inputs() -> Vec<(String, String)> {
    let mut out = vec![
        ("chart".to_string(), helm_template(&[])),
        (
            "chart-example".to_string(),
            helm_template(&["--set", "example.enabled=true"]),
        ),
    ];
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(repo().join("operator/tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 3, "fixtures went missing");
    for path in fixtures {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let cc: CommentCluster = serde_yaml::from_str(&text).unwrap();
        let children = desired::build(&cc, &Inputs::default())
            .iter()
            .map(|d| serde_yaml::to_string(&d.object).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        out.push((format!("fixture/{stem}"), text));
        out.push((format!("children/{stem}"), children));
    }
    out
}

// ---- findings ------------------------------------------------------------------------------

/// One finding: `<tool> <check> <Kind>/<name>`, and what the tool said.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    tool: &'static str,
    check: String,
    object: String,
    input: String,
    detail: String,
}

/// Counts per input, for the record.
#[derive(Default, Debug)]
struct Counts {
    critical: usize,
    warning: usize,
    invalid: usize,
}

fn kubeconform(file: &Path, schemas: &Path, input: &str) -> (Vec<Finding>, usize) {
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        schemas.display()
    );
    let out = Command::new(lint_bin("kubeconform"))
        .args(["-strict", "-summary", "-output", "json"])
        .args(["-schema-location", &location])
        .args(["-kubernetes-version", k8s_version().trim_start_matches('v')])
        .arg(file)
        .output()
        .expect("kubeconform runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kubeconform output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut findings = Vec::new();
    for r in report["resources"].as_array().into_iter().flatten() {
        let status = r["status"].as_str().unwrap_or("");
        if status == "statusValid" {
            continue;
        }
        findings.push(Finding {
            tool: "kubeconform",
            check: status.trim_start_matches("status").to_lowercase(),
            object: format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or("?"),
                r["name"].as_str().unwrap_or("?")
            ),
            input: input.to_string(),
            detail: r["msg"].as_str().unwrap_or("").to_string(),
        });
    }
    let summary = &report["summary"];
    assert_eq!(
        summary["skipped"], 0,
        "{input}: kubeconform skipped a resource"
    );
    assert!(
        summary["valid"].as_u64().unwrap_or(0) > 0,
        "{input}: kubeconform validated nothing: {summary}"
    );
    let invalid = findings.len();
    (findings, invalid)
}

fn kube_score(file: &Path, input: &str, counts: &mut Counts) -> Vec<Finding> {
    let out = Command::new(lint_bin("kube-score"))
        .args(["score", "-o", "json", "--kubernetes-version"])
        .arg(k8s_version().rsplit_once('.').unwrap().0)
        .arg(file)
        .output()
        .expect("kube-score runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kube-score output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut findings = Vec::new();
    for obj in report.as_array().into_iter().flatten() {
        let object = format!(
            "{}/{}",
            obj["type_meta"]["kind"].as_str().unwrap_or("?"),
            obj["object_meta"]["name"].as_str().unwrap_or("?")
        );
        for check in obj["checks"].as_array().into_iter().flatten() {
            if check["skipped"] == true {
                continue;
            }
            let grade = check["grade"].as_i64().unwrap_or(10);
            match grade {
                1 => counts.critical += 1,
                5 => counts.warning += 1,
                _ => continue,
            }
            let detail = check["comments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{} {}",
                        c["path"].as_str().unwrap_or(""),
                        c["summary"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            findings.push(Finding {
                tool: "kube-score",
                check: check["check"]["id"].as_str().unwrap_or("?").to_string(),
                object: object.clone(),
                input: input.to_string(),
                detail,
            });
        }
    }
    findings
}

/// One line of `tests/lint/exceptions.txt`: `<tool> <check> <Kind>/<name>: <reason>`, where
/// the object may hold one `*`.
struct Exception {
    line: usize,
    tool: String,
    check: String,
    object: String,
}

impl Exception {
    fn matches(&self, f: &Finding) -> bool {
        let object = match self.object.split_once('*') {
            Some((prefix, suffix)) => {
                f.object.len() >= prefix.len() + suffix.len()
                    && f.object.starts_with(prefix)
                    && f.object.ends_with(suffix)
            }
            None => f.object == self.object,
        };
        self.tool == f.tool && self.check == f.check && object
    }
}

fn exceptions() -> Vec<Exception> {
    let path = repo().join("tests/lint/exceptions.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (what, reason) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("exceptions.txt:{}: no `: <reason>`", i + 1));
        assert!(
            reason.trim().len() >= 20,
            "exceptions.txt:{}: say why, in a sentence",
            i + 1
        );
        let parts: Vec<&str> = what.split_whitespace().collect();
        assert_eq!(
            parts.len(),
            3,
            "exceptions.txt:{}: `<tool> <check> <Kind>/<name>: <reason>`",
            i + 1
        );
        out.push(Exception {
            line: i + 1,
            tool: parts[0].into(),
            check: parts[1].into(),
            object: parts[2].into(),
        });
    }
    out
}

#[test]
fn manifests_pass_kubeconform_and_kube_score_but_for_the_reviewed_exceptions() {
    let work = std::env::temp_dir().join(format!("io360-lint-{}", std::process::id()));
    let schemas = work.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let n = write_schemas(&schemas);
    assert!(n > 100, "only {n} schemas");

    let mut findings = Vec::new();
    let mut table = BTreeMap::new();
    for (input, text) in inputs() {
        let file = work.join(format!("{}.yaml", input.replace('/', "-")));
        std::fs::write(&file, &text).unwrap();
        let mut counts = Counts::default();
        let (invalid, n) = kubeconform(&file, &schemas, &input);
        counts.invalid = n;
        findings.extend(invalid);
        findings.extend(kube_score(&file, &input, &mut counts));
        table.insert(input, counts);
    }
    if std::env::var_os("IO360_LINT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }

    println!(
        "{:<28} {:>8} {:>8} {:>8}",
        "input", "CRITICAL", "WARNING", "invalid"
    );
    for (input, c) in &table {
        println!(
            "{input:<28} {:>8} {:>8} {:>8}",
            c.critical, c.warning, c.invalid
        );
    }

    let exceptions = exceptions();
    let mut used = BTreeSet::new();
    let mut unexcused = BTreeSet::new();
    for f in &findings {
        match exceptions.iter().find(|e| e.matches(f)) {
            Some(e) => {
                used.insert(e.line);
            }
            None => {
                unexcused.insert(format!(
                    "{} {} {} (in {}): {}",
                    f.tool, f.check, f.object, f.input, f.detail
                ));
            }
        }
    }
    let unused: Vec<usize> = exceptions
        .iter()
        .map(|e| e.line)
        .filter(|l| !used.contains(l))
        .collect();
    assert!(
        unexcused.is_empty(),
        "{} findings are not in tests/lint/exceptions.txt:\n{}",
        unexcused.len(),
        unexcused.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(
        unused.is_empty(),
        "exceptions.txt lines {unused:?} match no finding: remove them"
    );
}
