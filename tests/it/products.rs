//! TDSQL-C and PostgreSQL, whole program (docs/products.md, docs/metrics.md#products): the
//! exporter against the simulator answering each product with its own field names; counting,
//! labels, zeros at first sight, open statuses, the task pages, restarts with a state file, the
//! config keys of each product, and payload secrets that never leave the API's answer.

use crate::common::*;
use cdb_task_exporter::config::Config;
use cdb_task_exporter::sim::{PAYLOAD_SECRET, Scenario, SimInstance, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cdb-task-exporter");
const CLUSTER: &str = "cynosdbmysql-prod0001";
const CLUSTER_INSTANCE: &str = "cynosdbmysql-ins-prod01";
const PG: &str = "postgres-prod0001";

/// One region of each product.
fn three_products() -> String {
    format!(
        "{}[[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"cynosdb\"\n\
         [[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"postgres\"\n",
        region("ap-guangzhou", &[])
    )
}

fn scenario() -> Scenario {
    let unit = format!("{CLUSTER}/{CLUSTER_INSTANCE}");
    let cluster = format!("{CLUSTER}/");
    let cynos = |t: SimTask| t.of_product("cynosdb");
    let pg = |t: SimTask| t.of_product("postgres");
    Scenario {
        tasks: vec![
            // TDSQL-C: a backup of the cluster that succeeds while the exporter watches.
            cynos(SimTask::simple(
                11,
                "task_auto_backup",
                &[&cluster],
                -30,
                40,
                TaskStatus::Succeed,
            )),
            // A parameter change on an instance of it that fails.
            cynos(
                SimTask::simple(
                    12,
                    "task_modify_instance_param",
                    &[&unit],
                    -20,
                    45,
                    TaskStatus::Failed,
                )
                .with_message("param check failed"),
            ),
            // A status the mapping does not know: its slug, never terminal.
            cynos(SimTask::simple(
                13,
                "task_isolate_cluster",
                &[&cluster],
                -10,
                0,
                TaskStatus::open("rollingback"),
            )),
            // History from before the exporter started: baseline, not counted.
            cynos(SimTask::simple(
                14,
                "task_create_cluster",
                &[&cluster],
                -7200,
                600,
                TaskStatus::Succeed,
            )),
            // PostgreSQL: a restore that fails; a restart that succeeds; a baseline task.
            pg(SimTask::simple(
                21,
                "restore_database",
                &[PG],
                -20,
                45,
                TaskStatus::Failed,
            )),
            pg(SimTask::simple(
                22,
                "restart_instance",
                &[PG],
                -5,
                30,
                TaskStatus::Succeed,
            )),
            pg(SimTask::simple(
                23,
                "destroy_instance",
                &[PG],
                -9000,
                60,
                TaskStatus::Succeed,
            )),
            // A CDB task beside them, to show the products apart.
            SimTask::simple(31, "reboot", &[A], -10, 20, TaskStatus::Succeed),
        ],
        instances: vec![
            SimInstance {
                product: "cynosdb".into(),
                engine_version: "8.0".into(),
                ..SimInstance::new(CLUSTER, "catalog").tag("team", "shop")
            },
            SimInstance {
                product: "postgres".into(),
                engine_version: "15.4".into(),
                ..SimInstance::new(PG, "ledger")
            },
        ],
        ..Scenario::default()
    }
}

#[tokio::test]
async fn tdsql_c_and_postgres_tasks_are_counted_once_under_their_own_families() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let extra = format!("state_file = \"{}\"", state.display());
    let pair = Pair::start(scenario(), &extra, &three_products()).await;
    pair.exporter.wait_targets_polled(3).await;
    let s = pair.advance(60).await;

    let cynos = "tencentcloud_cynosdb_tasks_finished_total";
    let at = |cluster: &str, instance: &str, ty: &str, st: &str| {
        s.get(
            cynos,
            &[
                ("cluster_id", cluster),
                ("instance_id", instance),
                ("task_type", ty),
                ("status", st),
            ],
        )
    };
    // The backup counts under its cluster with instance_id="", the failure under both ids;
    // the other terminal statuses of each pair exist at 0.
    assert_eq!(
        at(CLUSTER, "", "task_auto_backup", "succeed"),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(at(CLUSTER, "", "task_auto_backup", "failed"), Some(0.0));
    assert_eq!(at(CLUSTER, "", "task_auto_backup", "killed"), Some(0.0));
    assert_eq!(at(CLUSTER, "", "task_auto_backup", "removed"), Some(0.0));
    assert_eq!(
        at(
            CLUSTER,
            CLUSTER_INSTANCE,
            "task_modify_instance_param",
            "failed"
        ),
        Some(1.0)
    );
    // The baseline task is in the gauge, not in the counter.
    assert_eq!(at(CLUSTER, "", "task_create_cluster", "succeed"), Some(0.0));
    let gauge = |ty: &str, st: &str| {
        s.sum(
            "tencentcloud_cynosdb_tasks",
            &[("task_type", ty), ("status", st)],
        )
    };
    assert_eq!(gauge("task_create_cluster", "succeed"), 1.0);
    // The unknown status is its own value, unfinished: in the gauge and the oldest age.
    assert_eq!(gauge("task_isolate_cluster", "rollingback"), 1.0);
    assert_eq!(
        at(CLUSTER, "", "task_isolate_cluster", "succeed"),
        Some(0.0)
    );
    assert!(
        s.get(
            "tencentcloud_cynosdb_task_oldest_unfinished_start_timestamp_seconds",
            &[
                ("cluster_id", CLUSTER),
                ("task_type", "task_isolate_cluster")
            ]
        )
        .is_some()
    );
    // No zero series of CDB's twelve types under the other products.
    assert_eq!(s.count(cynos, &[("task_type", "import_data")]), 0);
    assert_eq!(
        s.count(
            "tencentcloud_postgres_tasks_finished_total",
            &[("task_type", "reboot")]
        ),
        0
    );

    let pg = |ty: &str, st: &str| {
        s.get(
            "tencentcloud_postgres_tasks_finished_total",
            &[("instance_id", PG), ("task_type", ty), ("status", st)],
        )
    };
    assert_eq!(pg("restore_database", "failed"), Some(1.0));
    assert_eq!(pg("restart_instance", "succeed"), Some(1.0));
    assert_eq!(pg("destroy_instance", "succeed"), Some(0.0), "baseline");
    assert_eq!(
        s.count(
            "tencentcloud_postgres_tasks_finished_total",
            &[("cluster_id", CLUSTER)]
        ),
        0,
        "cluster_id is TDSQL-C's alone"
    );
    // Durations by product, without instance labels.
    assert_eq!(
        s.get(
            "tencentcloud_postgres_task_duration_seconds_count",
            &[("task_type", "restore_database"), ("status", "failed")]
        ),
        Some(1.0)
    );
    // CDB is as before.
    assert_eq!(s.finished(A, "reboot", "succeed"), Some(1.0));
    assert_eq!(s.finished(A, "import_data", "failed"), Some(0.0));

    // Listings: the cluster and the instance with their names and versions.
    assert_eq!(
        s.get(
            "tencentcloud_cynosdb_cluster_info",
            &[
                ("cluster_id", CLUSTER),
                ("cluster_name", "catalog"),
                ("db_version", "8.0")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "tencentcloud_postgres_instance_info",
            &[
                ("instance_id", PG),
                ("instance_name", "ledger"),
                ("db_version", "15.4")
            ]
        ),
        Some(1.0)
    );
    // Self-metrics carry the product.
    for product in ["cdb", "cynosdb", "postgres"] {
        let labels = [
            ("account", "test"),
            ("region", "ap-guangzhou"),
            ("product", product),
        ];
        assert_eq!(
            s.get("tencentcloud_cdb_exporter_last_poll_success", &labels),
            Some(1.0),
            "{product}"
        );
        assert!(s.sum("tencentcloud_cdb_exporter_api_requests_total", &labels) > 0.0);
        assert!(
            s.sum(
                "tencentcloud_cdb_exporter_api_request_duration_seconds_count",
                &[("product", product), ("action", "DescribeTasks")]
            ) > 0.0
        );
    }

    // The task API: product and cluster_id on every task, and the new filters.
    let base = format!("http://{}", pair.exporter.addr);
    let (status, body) = get(&format!("{base}/api/v1/tasks?product=cynosdb&job_id=12")).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{v}");
    assert_eq!(tasks[0]["product"], "cynosdb");
    assert_eq!(tasks[0]["cluster_id"], CLUSTER);
    assert_eq!(
        tasks[0]["instance_ids"],
        serde_json::json!([CLUSTER_INSTANCE])
    );
    assert_eq!(tasks[0]["status"], "failed");
    assert_eq!(tasks[0]["message"], "param check failed");
    let (_, body) = get(&format!("{base}/api/v1/tasks?product=postgres&product=cdb")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut products: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["product"].as_str().unwrap())
        .collect();
    products.sort_unstable();
    products.dedup();
    assert_eq!(products, ["cdb", "postgres"]);
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["cluster_id"] == "")
    );
    let (status, body) = get(&format!("{base}/api/v1/tasks?product=oracle")).await;
    assert_eq!(status, 400, "{body}");
    let (status, page) = get(&format!("{base}/tasks?product=cynosdb&job_id=12&job_id=13")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(CLUSTER) && page.contains("rollingback"),
        "{page}"
    );
    assert!(
        !page.contains(">21<br>"),
        "the PostgreSQL task is filtered out"
    );

    // Exactly once: more polls count nothing again; a restart restores the counters.
    let s2 = pair.advance(30).await;
    for (name, labels) in [
        (
            cynos,
            vec![("task_type", "task_auto_backup"), ("status", "succeed")],
        ),
        (
            "tencentcloud_postgres_tasks_finished_total",
            vec![("task_type", "restore_database"), ("status", "failed")],
        ),
    ] {
        assert_eq!(s2.sum(name, &labels), 1.0, "{name} {labels:?}");
    }
    let Pair {
        sim,
        exporter,
        clock,
    } = pair;
    exporter.stop().await;
    let config = Config::from_toml(&config_text(&sim.url(), &extra, &three_products())).unwrap();
    let again = Exporter::start(config, clock.clone()).await;
    let s3 = again.wait_targets_polled(3).await;
    assert_eq!(
        s3.sum(
            cynos,
            &[
                ("task_type", "task_modify_instance_param"),
                ("status", "failed")
            ]
        ),
        1.0,
        "restored, not counted twice"
    );
    assert_eq!(
        s3.sum(
            "tencentcloud_postgres_tasks_finished_total",
            &[("task_type", "restart_instance"), ("status", "succeed")]
        ),
        1.0
    );
    again.stop().await;
    sim.stop().await;
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("\"test/ap-guangzhou\""), "CDB keeps its key");
    assert!(saved.contains("\"test/ap-guangzhou/cynosdb\""));
    assert!(saved.contains("\"test/ap-guangzhou/postgres\""));
}

#[test]
fn each_product_takes_its_own_keys() {
    let err = |regions: &str| {
        Config::from_toml(&config_text("http://127.0.0.1:1", "", regions))
            .expect_err(regions)
            .key
    };
    let entry = |body: &str| format!("[[accounts.regions]]\nregion = \"ap-guangzhou\"\n{body}\n");
    assert_eq!(
        err(&entry("product = \"oracle\"")),
        "accounts[0].regions[0].product"
    );
    assert_eq!(
        err(&entry(
            "product = \"cynosdb\"\ninstances = [\"cdb-c1nl9rpv\"]"
        )),
        "accounts[0].regions[0].instances"
    );
    assert_eq!(
        err(&entry("clusters = [\"cynosdbmysql-abcd1234\"]")),
        "accounts[0].regions[0].clusters"
    );
    assert_eq!(
        err(&entry(
            "product = \"postgres\"\nclusters = [\"cynosdbmysql-abcd1234\"]"
        )),
        "accounts[0].regions[0].clusters"
    );
    assert_eq!(
        err(&entry(
            "product = \"cynosdb\"\nclusters = [\"cdb-c1nl9rpv\"]"
        )),
        "accounts[0].regions[0].clusters[0]"
    );
    assert_eq!(
        err(&entry(
            "product = \"postgres\"\ninstances = [\"cdb-c1nl9rpv\"]"
        )),
        "accounts[0].regions[0].instances[0]"
    );
    // The same region once per product, not twice for one.
    let twice = format!(
        "{}{}",
        entry("product = \"postgres\""),
        entry("product = \"postgres\"")
    );
    assert_eq!(err(&twice), "accounts[0].regions[1].region");
    let mixed = format!(
        "{}{}{}",
        entry(""),
        entry("product = \"cynosdb\"\nclusters = [\"cynosdbmysql-abcd1234\"]"),
        entry("product = \"postgres\"\ninstances = [\"postgres-abcd1234\"]")
    );
    let config = Config::from_toml(&config_text("http://127.0.0.1:1", "", &mixed)).unwrap();
    let products: Vec<&str> = config.accounts[0]
        .regions
        .iter()
        .map(|r| r.product.name())
        .collect();
    assert_eq!(products, ["cdb", "cynosdb", "postgres"]);
}

#[test]
fn check_config_shows_each_target_s_product_and_exits_2_naming_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = |regions: &str| {
        config_text("https://example.invalid", "", regions)
            .replace("endpoint = \"https://example.invalid\"\n", "")
    };
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        text(&format!(
            "[[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"cynosdb\"\nclusters = [\"{CLUSTER}\"]\n\
             [[accounts.regions]]\nregion = \"ap-shanghai-fsi\"\nproduct = \"postgres\"\n"
        )),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", good.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "region ap-guangzhou product cynosdb via https://cynosdb.tencentcloudapi.com/: {CLUSTER}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "region ap-shanghai-fsi product postgres via https://postgres.ap-shanghai-fsi.tencentcloudapi.com/: every instance in the region"
        ),
        "{stdout}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text("[[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"mongodb\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("accounts[0].regions[0].product"),
        "{stderr}"
    );
}

/// The binary with task events, a state file and progress on, against the simulator whose
/// TDSQL-C `Input` and PostgreSQL `TaskDetail` carry a password: the password is found in no
/// log line, no page and not in the state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_secrets_are_never_stored_logged_served_or_persisted() {
    let (sim, clock) = start_sim(scenario()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let config = dir.path().join("config.toml");
    let text = config_text(
        &sim.url(),
        &format!("state_file = \"{}\"", state.display()),
        &three_products(),
    )
    .replace(
        "[[accounts]]",
        "[log]\ntask_events = true\n[metrics]\ntask_progress = true\n[[accounts]]",
    )
    .replace(
        "listen_address = \"127.0.0.1:0\"",
        &format!("listen_address = \"127.0.0.1:{}\"", free_port()),
    );
    std::fs::write(&config, &text).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env_remove("CDB_TASK_EXPORTER_CONFIG")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut child);
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("listen_address = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    // Until every product's failure is on the page (the tasks were read, events logged).
    let deadline = Instant::now() + PATIENCE;
    let mut pages = Vec::new();
    loop {
        clock.advance(5);
        let metrics = reqwest::get(format!("http://{addr}/metrics")).await;
        if let Ok(r) = metrics {
            let m = r.text().await.unwrap_or_default();
            let failed = |f: &str| {
                m.lines().any(|l| {
                    l.starts_with(f) && l.contains("status=\"failed\"") && l.ends_with(" 1")
                })
            };
            if failed("tencentcloud_cynosdb_tasks_finished_total")
                && failed("tencentcloud_postgres_tasks_finished_total")
            {
                pages.push(m);
                break;
            }
        }
        assert!(Instant::now() < deadline, "the failures never showed");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    for path in ["/api/v1/tasks?limit=1000", "/tasks?limit=1000", "/"] {
        pages.push(
            reqwest::get(format!("http://{addr}{path}"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    sim.stop().await;
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("task_events") && l.contains("cynosdb")),
        "task events of TDSQL-C were logged: {logs:?}"
    );
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        saved.contains("task_modify_instance_param"),
        "the state holds the tasks"
    );
    for (what, text) in pages
        .iter()
        .map(|p| ("a page", p.as_str()))
        .chain(logs.iter().map(|l| ("the log", l.as_str())))
        .chain([("the state file", saved.as_str())])
    {
        assert!(
            !text.contains(PAYLOAD_SECRET),
            "{what} holds the payload's password"
        );
        assert!(!text.contains("adminPassword"), "{what} holds a payload");
    }
}
