//! The deployment bundle: rules lint and unit tests with promtool, the Prometheus and
//! Alertmanager examples, Kubernetes manifests that reference each other consistently, the
//! PrometheusRule carrying exactly the shipped rules, the dashboard, the unit and image files.

use cdb_task_exporter::config::Config;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use crate::common::repo_file as read;

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tool(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is installed by scripts/install-test-tools: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}:\n{text}");
    text
}

#[test]
fn rules_lint_clean_and_unit_tests_pass() {
    let dir = root().join("deploy/prometheus");
    let text = tool(
        "promtool",
        &["check", "rules", "rules/cdb-task-exporter.rules.yml"],
        &dir,
    );
    assert!(text.contains("SUCCESS: 37 rules found"), "{text}");
    let text = tool(
        "promtool",
        &["test", "rules", "tests/cdb-task-exporter.test.yml"],
        &dir,
    );
    assert!(text.contains("SUCCESS"), "{text}");
    tool("promtool", &["check", "config", "prometheus.yml"], &dir);
    tool(
        "amtool",
        &["check-config", "../alertmanager/alertmanager.yml"],
        &dir,
    );
}

fn alerts(rules: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            if let Some(a) = r["alert"].as_str() {
                out.push((a.to_string(), r.clone()));
            }
        }
    }
    out
}

/// The anchors GitHub gives the headings of a Markdown file.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_is_well_formed_and_unit_tested_firing_and_not() {
    let rules = yaml("deploy/prometheus/rules/cdb-task-exporter.rules.yml");
    let tests = yaml("deploy/prometheus/tests/cdb-task-exporter.test.yml");
    let runbook = anchors(&read("docs/runbook.md"));
    let all = alerts(&rules);
    assert_eq!(all.len(), 11);
    for (name, rule) in &all {
        assert!(name.starts_with("CdbTask"), "{name}");
        // Severity is static, except CdbTaskFailed's, which comes from the policy table.
        if name != "CdbTaskFailed" {
            let sev = rule["labels"]["severity"].as_str().unwrap();
            assert!(["critical", "warning"].contains(&sev), "{name}: {sev}");
        }
        assert!(rule["annotations"]["summary"].is_string(), "{name}");
        assert!(rule["annotations"]["description"].is_string(), "{name}");
        // The runbook link names an existing section of docs/runbook.md.
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let (doc, anchor) = url.split_once('#').unwrap();
        assert!(doc.ends_with("/docs/runbook.md"), "{url}");
        assert_eq!(anchor, name.to_lowercase(), "{url}");
        assert!(
            runbook.iter().any(|a| a == anchor),
            "{url}: no such section"
        );
        let cases: Vec<&Value> = tests["tests"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
            .filter(|c| c["alertname"].as_str() == Some(name))
            .collect();
        let firing = cases
            .iter()
            .any(|c| !c["exp_alerts"].as_sequence().unwrap().is_empty());
        let silent = cases
            .iter()
            .any(|c| c["exp_alerts"].as_sequence().unwrap().is_empty());
        assert!(
            firing && silent,
            "{name} needs a firing and a not-firing test"
        );
        let checks_annotations = cases
            .iter()
            .flat_map(|c| c["exp_alerts"].as_sequence().unwrap())
            .all(|a| {
                a["exp_annotations"]["summary"].is_string()
                    && a["exp_annotations"]["runbook_url"].is_string()
            });
        assert!(
            checks_annotations,
            "{name}: every expected alert checks its annotations"
        );
    }
}

/// Recording rules are named level:metric:operations, and each is used by an alert or a
/// dashboard panel; the policy tables cover every known task type.
#[test]
fn recording_rules_are_named_used_and_complete() {
    let rules = yaml("deploy/prometheus/rules/cdb-task-exporter.rules.yml");
    let alert_exprs: Vec<String> = alerts(&rules)
        .iter()
        .map(|(_, r)| r["expr"].as_str().unwrap().to_string())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/cdb-task-exporter.json")).unwrap();
    let panel_exprs = crate::common::dashboard_exprs(&dashboard);
    let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let Some(record) = r["record"].as_str() else {
                continue;
            };
            assert_eq!(
                record.split(':').count(),
                3,
                "{record}: level:metric:operations"
            );
            assert!(
                alert_exprs
                    .iter()
                    .chain(&panel_exprs)
                    .any(|e| e.contains(record)),
                "{record} is used by no alert and no panel"
            );
            if let Some(t) = r["labels"]["task_type"].as_str() {
                tables
                    .entry(record.to_string())
                    .or_default()
                    .push(t.to_string());
            }
        }
    }
    assert_eq!(tables.len(), 2, "{tables:?}");
    for (record, types) in tables {
        let mut types = types;
        types.sort();
        let mut known: Vec<String> = cdb_task_exporter::tencent::model::known_task_type_labels()
            .map(str::to_string)
            .collect();
        known.sort();
        assert_eq!(types, known, "{record} has one row per known task type");
    }
}

fn docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

fn one(rel: &str, kind: &str) -> Value {
    let d = docs(rel);
    assert_eq!(d.len(), 1, "{rel}");
    assert_eq!(d[0]["kind"].as_str(), Some(kind), "{rel}");
    d[0].clone()
}

/// What `kubectl kustomize DIR` gives for the features the shipped kustomizations use:
/// `resources` (files and directories), `components` (their resources and JSON 6902 patches),
/// `namespace`, `labels` (metadata only) and `images`.
fn kustomize(rel: &str) -> Vec<Value> {
    kustomize_with(rel, &[])
}

/// [`kustomize`] with these components enabled as well (as uncommenting them would).
fn kustomize_with(rel: &str, extra_components: &[&str]) -> Vec<Value> {
    let k = yaml(&format!("{rel}/kustomization.yaml"));
    let mut out = Vec::new();
    for r in k["resources"].as_sequence().unwrap() {
        let r = format!("{rel}/{}", r.as_str().unwrap());
        if root().join(&r).is_dir() {
            out.extend(kustomize(&r));
        } else {
            out.extend(docs(&r));
        }
    }
    let components = k["components"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap().to_string())
        .chain(
            extra_components
                .iter()
                .map(std::string::ToString::to_string),
        );
    for c in components {
        let dir = format!("{rel}/{c}");
        let comp = yaml(&format!("{dir}/kustomization.yaml"));
        assert_eq!(comp["kind"].as_str(), Some("Component"));
        for r in comp["resources"].as_sequence().into_iter().flatten() {
            out.extend(docs(&format!("{dir}/{}", r.as_str().unwrap())));
        }
        for p in comp["patches"].as_sequence().into_iter().flatten() {
            let ops: Value = serde_yaml_ng::from_str(p["patch"].as_str().unwrap()).unwrap();
            for doc in out.iter_mut().filter(|d| {
                d["kind"] == p["target"]["kind"] && d["metadata"]["name"] == p["target"]["name"]
            }) {
                for op in ops.as_sequence().unwrap() {
                    json_patch(doc, op);
                }
            }
        }
    }
    for doc in &mut out {
        let meta = doc["metadata"].as_mapping_mut().unwrap();
        if let Some(ns) = k["namespace"].as_str() {
            meta.insert("namespace".into(), ns.into());
        }
        for l in k["labels"].as_sequence().into_iter().flatten() {
            assert_eq!(l["includeSelectors"].as_bool(), Some(false));
            let labels = meta
                .entry("labels".into())
                .or_insert_with(|| Value::Mapping(Default::default()));
            for (key, v) in l["pairs"].as_mapping().unwrap() {
                labels
                    .as_mapping_mut()
                    .unwrap()
                    .insert(key.clone(), v.clone());
            }
        }
        for image in k["images"].as_sequence().into_iter().flatten() {
            let containers = doc
                .get_mut("spec")
                .and_then(|s| s.get_mut("template"))
                .and_then(|t| t.get_mut("spec"))
                .and_then(|s| s.get_mut("containers"))
                .and_then(Value::as_sequence_mut);
            for c in containers.into_iter().flatten() {
                if c["image"] == image["name"] {
                    let full = format!(
                        "{}:{}",
                        image["newName"].as_str().unwrap(),
                        image["newTag"].as_str().unwrap()
                    );
                    c["image"] = full.into();
                }
            }
        }
    }
    out
}

/// One JSON 6902 `add` or `remove`; `-` appends to a list.
fn json_patch(doc: &mut Value, op: &Value) {
    let path: Vec<&str> = op["path"].as_str().unwrap()[1..].split('/').collect();
    let (last, parents) = path.split_last().unwrap();
    let mut at = doc;
    for p in parents {
        at = match at {
            Value::Sequence(items) => &mut items[p.parse::<usize>().unwrap()],
            other => other
                .get_mut(*p)
                .unwrap_or_else(|| panic!("no {p} in {op:?}")),
        };
    }
    match (op["op"].as_str().unwrap(), at) {
        ("add", Value::Sequence(items)) if *last == "-" => items.push(op["value"].clone()),
        ("add", Value::Mapping(m)) => {
            m.insert((*last).into(), op["value"].clone());
        }
        ("remove", Value::Mapping(m)) => {
            assert!(m.remove(*last).is_some(), "nothing to remove at {op:?}");
        }
        (other, _) => panic!("unsupported patch {other} at {op:?}"),
    }
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// Both layouts pass `kubernetes-validate --strict` (the Kubernetes schemas), and their
/// ServiceMonitor and PrometheusRule validate against the prometheus-operator CRDs vendored in
/// tests/schemas.
#[test]
fn kubernetes_layouts_validate_against_the_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let layouts: [(&str, &[&str]); 3] = [
        ("deploy/kubernetes", &[]),
        ("deploy/kubernetes", &["components/tke-pod-identity"]),
        ("deploy/kubernetes/sharded", &[]),
    ];
    for (layout, components) in layouts {
        let docs = kustomize_with(layout, components);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"ServiceMonitor") && kinds.contains(&"PrometheusRule"));
        assert!(
            !kinds.contains(&"Secret"),
            "the Secret example is never applied"
        );
        if !components.is_empty() {
            // Pod identity: the four TKE variables from a projected token, no Secret.
            let c = &kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
            let env: Vec<&str> = c["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                env,
                [
                    "TKE_REGION",
                    "TKE_PROVIDER_ID",
                    "TKE_ROLE_ARN",
                    "TKE_WEB_IDENTITY_TOKEN_FILE"
                ]
            );
            assert!(c.get("envFrom").is_none());
            assert!(kinds.contains(&"ServiceAccount"));
        }
        let path = dir.path().join("rendered.yaml");
        let text: Vec<String> = docs
            .iter()
            .map(|d| serde_yaml_ng::to_string(d).unwrap())
            .collect();
        std::fs::write(&path, text.join("---\n")).unwrap();
        let out = tool(
            "kubernetes-validate",
            &["--strict", path.to_str().unwrap()],
            &root(),
        );
        for k in ["configmap", "service", "deployment"] {
            let k = if layout.ends_with("sharded") && k == "deployment" {
                "statefulset"
            } else {
                k
            };
            assert!(
                out.contains(&format!("passed for resource {k}/")),
                "{layout}: {out}"
            );
        }
        let crds = tool(
            "python3",
            &[
                "tests/schemas/validate_crd.py",
                path.to_str().unwrap(),
                "tests/schemas/monitoring.coreos.com_servicemonitors.yaml",
                "tests/schemas/monitoring.coreos.com_prometheusrules.yaml",
            ],
            &root(),
        );
        assert!(
            crds.contains("ServiceMonitor/cdb-task-exporter: valid"),
            "{crds}"
        );
        assert!(
            crds.contains("PrometheusRule/cdb-task-exporter: valid"),
            "{crds}"
        );
    }
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let all = kustomize("deploy/kubernetes");
    let dep = kind(&all, "Deployment").clone();
    let svc = kind(&all, "Service").clone();
    let cm = kind(&all, "ConfigMap").clone();
    let sm = kind(&all, "ServiceMonitor").clone();
    let pr = kind(&all, "PrometheusRule").clone();
    let secret = one("deploy/kubernetes/examples/secret.example.yaml", "Secret");
    for m in [&dep, &svc, &cm, &sm, &pr] {
        assert_eq!(m["metadata"]["namespace"].as_str(), Some("monitoring"));
    }
    // kube-prometheus-stack selects on `release`.
    for m in [&sm, &pr] {
        assert_eq!(
            m["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack")
        );
    }
    let pod_labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&dep["spec"]["selector"]["matchLabels"], pod_labels);
    assert_eq!(&svc["spec"]["selector"], pod_labels);
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(39236));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port["name"]);
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    // Probes that need no password once basic auth is on: the binary's own health check.
    for probe in ["readinessProbe", "livenessProbe"] {
        let command: Vec<&str> = c[probe]["exec"]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(command, ["/usr/local/bin/cdb-task-exporter", "healthcheck"]);
    }
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .ends_with("/cdb-task-exporter:0.1.0"),
        "the image comes from kustomize's images"
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"],
        secret["metadata"]["name"]
    );
    let volumes = dep["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"].is_mapping())
        .unwrap();
    assert_eq!(config_volume["configMap"]["name"], cm["metadata"]["name"]);
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == config_volume["name"])
        .unwrap();
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(
        config_path,
        format!("{}/config.toml", mount["mountPath"].as_str().unwrap())
    );
    // The ConfigMap's config is valid, listens on the container port, and keeps state on the
    // state volume.
    let config = Config::from_toml(cm["data"]["config.toml"].as_str().unwrap()).unwrap();
    assert_eq!(config.server.listen_address.port(), 39236);
    let state = config.poll.state_file.unwrap();
    let state_mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("state"))
        .unwrap();
    assert!(state.starts_with(state_mount["mountPath"].as_str().unwrap()));
    // The ServiceMonitor's job is the Service name, which is the rules' selector.
    assert!(
        read("deploy/prometheus/rules/cdb-task-exporter.rules.yml").contains(&format!(
            "job=\"{}\"",
            svc["metadata"]["name"].as_str().unwrap()
        ))
    );
}

#[test]
fn prometheusrule_carries_exactly_the_shipped_rules() {
    let pr = one(
        "deploy/kubernetes/common/prometheusrule.yaml",
        "PrometheusRule",
    );
    let rules = yaml("deploy/prometheus/rules/cdb-task-exporter.rules.yml");
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "run scripts/gen-mixin"
    );
}

/// The rule file, the PrometheusRule and the dashboard are what the mixin generates: one
/// source of truth (scripts/gen-mixin writes them).
#[test]
fn the_shipped_rules_and_dashboard_are_what_the_mixin_generates() {
    let dir = tempfile::tempdir().unwrap();
    tool(
        "scripts/gen-mixin",
        &[dir.path().to_str().unwrap()],
        &root(),
    );
    for file in [
        "prometheus/rules/cdb-task-exporter.rules.yml",
        "kubernetes/common/prometheusrule.yaml",
        "grafana/cdb-task-exporter.json",
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(file)).unwrap(),
            read(&format!("deploy/{file}")),
            "deploy/{file}: run scripts/gen-mixin"
        );
    }
}

/// The README's example imports the mixin as a vendored library and overrides one threshold:
/// the rules it produces carry the new value, keep every other row, and lint clean.
#[test]
fn the_mixin_imports_and_takes_an_override() {
    let readme = read("README.md");
    let example = readme
        .split("```jsonnet\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a jsonnet example in the README");
    let dir = tempfile::tempdir().unwrap();
    let vendored = dir
        .path()
        .join("vendor/github.com/cdb-task-exporter/cdb-task-exporter/deploy");
    std::fs::create_dir_all(&vendored).unwrap();
    std::os::unix::fs::symlink(root().join("deploy/mixin"), vendored.join("mixin")).unwrap();
    std::fs::write(dir.path().join("mixin.jsonnet"), example).unwrap();
    let json = tool("jsonnet", &["-J", "vendor", "mixin.jsonnet"], dir.path());
    let out: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rules: Vec<&serde_json::Value> = out["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let threshold = |t: &str| {
        rules
            .iter()
            .find(|r| {
                r["record"] == "task_type:cdb_task_running_too_long_threshold_seconds:config"
                    && r["labels"]["task_type"] == t
            })
            .map(|r| r["expr"].as_str().unwrap().to_string())
    };
    assert_eq!(threshold("import_data").as_deref(), Some("vector(86400)"));
    assert_eq!(threshold("reboot").as_deref(), Some("vector(1800)"));
    assert_eq!(rules.len(), 37);
    std::fs::write(
        dir.path().join("rules.yml"),
        serde_yaml_ng::to_string(&out).unwrap(),
    )
    .unwrap();
    let text = tool("promtool", &["check", "rules", "rules.yml"], dir.path());
    assert!(text.contains("SUCCESS: 37 rules found"), "{text}");
}

#[test]
fn dashboard_has_the_variables_and_panels() {
    let d: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/cdb-task-exporter.json")).unwrap();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vars,
        [
            "datasource",
            "job",
            "product",
            "region",
            "instance",
            "task_type",
            "task_page_url"
        ]
    );
    assert_eq!(d["templating"]["list"][0]["query"], "prometheus");
    let exprs: Vec<String> = crate::common::dashboard_exprs(&d);
    for metric in [
        // Every product's task families, through the product selector.
        "tencentcloud_($product)_tasks\"",
        "tencentcloud_($product)_tasks_finished_total",
        "tencentcloud_($product)_task_duration_seconds_bucket",
        "tencentcloud_($product)_task_last_finished_timestamp_seconds",
        "tencentcloud_($product)_task_oldest_unfinished_start_timestamp_seconds",
        "tencentcloud_cynosdb_cluster_info",
        "tencentcloud_postgres_instance_info",
        "tencentcloud_cdb_exporter_last_poll_success",
        "tencentcloud_cdb_exporter_api_requests_total",
        "tencentcloud_cdb_exporter_api_errors_total",
        "api_throttled:ratio_rate5m",
        "tencentcloud_cdb_instance_info",
        "instance_name",
        "tencentcloud_cdb_exporter_poll_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel shows {metric}"
        );
    }
    for p in d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
    {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        // Thresholds on every stat (Grafana's default turns 80 red), organised tables.
        if p["type"] == "stat" {
            let steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .unwrap();
            assert!(steps.len() >= 2, "{title}: thresholds");
            assert!(
                p["fieldConfig"]["defaults"]["unit"].is_string(),
                "{title}: unit"
            );
        }
        if p["type"] == "table" {
            assert_eq!(p["transformations"][0]["id"], "organize", "{title}");
        }
        // $region wherever the series have a region.
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            let regional = !e.contains("build_info")
                && !e.contains("process_")
                && !e.contains("api_request_duration");
            assert!(!regional || e.contains("$region"), "{title}: {e}");
        }
    }
    // A panel links to the exporters' task pages.
    let links = serde_json::to_string(&d).unwrap();
    assert!(links.contains("/tasks?"), "a link to the task page");
    // The failure and duration panels ask for exemplars, and only they.
    let with_exemplars: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["targets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["exemplar"] == true))
        })
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        with_exemplars,
        ["Finished tasks by status", "Task duration (median and p95)"]
    );
    for p in d["panels"].as_array().unwrap() {
        if p["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["exemplar"] == true))
        {
            assert_eq!(
                p["type"], "timeseries",
                "Grafana draws exemplars on time series"
            );
        }
    }
    // The data source's exemplar link opens the job id on the task page the dashboard's
    // variable names.
    let ds = yaml("deploy/grafana/datasource.yml");
    let dest = &ds["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(dest["name"].as_str(), Some("job_id"));
    assert_eq!(
        dest["url"].as_str(),
        Some("${task_page_url}/tasks?job_id=${__value.raw}")
    );
}

/// Two replicas of one shard expose the same task series under two `instance` labels: the
/// dashboard's counts take each series once. promtool evaluates the panels' queries (the
/// variables at "All") over an HA pair's series that both counted one failure and see one
/// unfinished task.
#[test]
fn dashboard_counts_an_ha_pair_once() {
    let d: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/cdb-task-exporter.json")).unwrap();
    let query = |title: &str| {
        let p = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        p["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .replace("($product)", "(cdb|cynosdb|postgres)")
            .replace("=~\"$job\"", "=~\".*\"")
            .replace("=~\"$region\"", "=~\".*\"")
            .replace("=~\"$instance\"", "=~\".*\"")
            .replace("=~\"$task_type\"", "=~\".*\"")
            .replace("$__range", "30m")
            .replace("$__rate_interval", "30m")
    };
    let mut input = Vec::new();
    for replica in ["exp-a:39236", "exp-b:39236"] {
        let labels = format!(
            "job=\"cdb-task-exporter\", instance=\"{replica}\", region=\"ap-guangzhou\", instance_id=\"cdb-aaaa1111\""
        );
        input.push(serde_json::json!({
            "series": format!("tencentcloud_cdb_tasks_finished_total{{{labels}, task_type=\"import_data\", status=\"failed\"}}"),
            "values": "0x9 1x30",
        }));
        input.push(serde_json::json!({
            "series": format!("tencentcloud_cdb_tasks{{{labels}, task_type=\"upgrade_master\", status=\"running\"}}"),
            "values": "1x40",
        }));
    }
    let case = |title: &str| {
        serde_json::json!({
            "expr": query(title),
            "eval_time": "30m",
            "exp_samples": [{"labels": "{}", "value": 1}],
        })
    };
    let tests = serde_yaml_ng::to_string(&serde_json::json!({
        "tests": [{
            "interval": "1m",
            "input_series": input,
            "promql_expr_test": [
                case("Failed tasks in range"),
                case("Unfinished tasks now"),
                case("Upgrades running now"),
            ],
        }],
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ha.test.yml"), tests).unwrap();
    let text = tool("promtool", &["test", "rules", "ha.test.yml"], dir.path());
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn systemd_unit_and_container_file_are_hardened() {
    let unit = read("deploy/systemd/cdb-task-exporter.service");
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |k: &str, v: &str| directives.iter().any(|(dk, dv)| *dk == k && *dv == v);
    assert!(has(
        "ExecStart",
        "/usr/bin/cdb-task-exporter --config /etc/cdb-task-exporter/config.toml"
    ));
    assert!(has("ExecReload", "/bin/kill -HUP $MAINPID"));
    for (k, v) in [
        ("LimitNOFILE", "4096"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert!(has(k, v), "{k}={v}");
    }
    // Credentials from an optional environment file; no LoadCredential, which is fatal when
    // its file is missing (the README shows it as a drop-in).
    assert!(has(
        "EnvironmentFile",
        "-/etc/cdb-task-exporter/credentials.env"
    ));
    assert!(!directives.iter().any(|(k, _)| *k == "LoadCredential"));

    let image = read("deploy/container/Containerfile");
    let froms = image.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "multi-stage");
    assert!(image.contains("--locked"));
    assert!(image.contains("ca-certificates"));
    assert!(
        image
            .lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root"))
    );
    assert!(image.lines().any(|l| l.starts_with("HEALTHCHECK")) && image.contains("healthcheck"));
    assert!(image.contains("ARG BASE=") && image.contains("FROM ${BASE}"));
    assert!(image.contains("EXPOSE 39236"));
}

#[test]
fn sharded_statefulset_matches_its_config() {
    let sts = one("deploy/kubernetes/sharded/statefulset.yaml", "StatefulSet");
    let cm = one("deploy/kubernetes/sharded/configmap.yaml", "ConfigMap");
    let dep = one("deploy/kubernetes/deployment.yaml", "Deployment");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"],
        dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    );
    // The same pod labels as the Deployment: the shipped Service and ServiceMonitor find every
    // shard.
    assert_eq!(
        sts["spec"]["template"]["metadata"]["labels"],
        dep["spec"]["template"]["metadata"]["labels"]
    );
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == cm["metadata"]["name"])
    );
    let text = cm["data"]["config.toml"].as_str().unwrap();
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    assert!(text.contains(&format!("total_shards = {replicas}")));
    assert!(text.contains("shard_from_hostname = true"));
    // The config, checked by the binary as a pod would run it: each pod name gives its shard,
    // and a pod beyond total_shards is refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // The pod's state volume is a directory of this machine here.
    let state_dir = "/var/lib/cdb-task-exporter";
    assert!(text.contains(state_dir));
    let text = text.replace(state_dir, dir.path().to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    let check = |host: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdb-task-exporter"))
            .args(["--config", path.to_str().unwrap(), "--check-config"])
            .env("HOSTNAME", host)
            .env("TENCENTCLOUD_SECRET_ID", "AKIDexample")
            .env("TENCENTCLOUD_SECRET_KEY", "example-key")
            .output()
            .unwrap()
    };
    for shard in 0..replicas {
        let out = check(&format!("cdb-task-exporter-{shard}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!(
                "sharding: shard {shard} of total_shards {replicas}"
            )),
            "{stdout}"
        );
    }
    let out = check(&format!("cdb-task-exporter-{replicas}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sharding.shard_from_hostname"));
}
