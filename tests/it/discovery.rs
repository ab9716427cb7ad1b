//! Instance metadata (docs/metrics.md#instance-metadata), whole program: `tencentcloud_cdb_instance_info` with tag
//! labels, zeros for discovered instances, names on the task API, paging, a disappearing
//! instance, and a forbidden `DescribeDBInstances` that leaves task polling alone.

use crate::common::*;
use cdb_task_exporter::config::Config;
use cdb_task_exporter::sim::{Scenario, SimInstance, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;

const INFO: &str = "tencentcloud_cdb_instance_info";

fn instances() -> Vec<SimInstance> {
    vec![
        SimInstance::new(A, "orders")
            .tag("team", "shop")
            .tag("cost-center", "cc-42"),
        SimInstance {
            instance_type: 3,
            engine_version: "5.7".into(),
            zone: "ap-guangzhou-4".into(),
            ..SimInstance::new(B, "orders-ro").tag("team", "shop")
        },
        SimInstance {
            instance_type: 2,
            ..SimInstance::new(C, "billing-dr")
        },
    ]
}

async fn start(scenario: Scenario, discovery: &str, regions: &str) -> Pair {
    let (sim, clock) = start_sim(scenario).await;
    let text = config_text(&sim.url(), "", regions)
        .replace("[[accounts]]", &format!("{discovery}\n[[accounts]]"));
    let config = Config::from_toml(&text).unwrap();
    let exporter = Exporter::start(config, clock.clone()).await;
    Pair {
        sim,
        exporter,
        clock,
    }
}

#[tokio::test]
async fn instances_are_exported_with_tags_and_monitored_from_discovery_on() {
    let scenario = Scenario {
        tasks: vec![SimTask::simple(
            1,
            "import_data",
            &[A],
            -600,
            60,
            TaskStatus::Failed,
        )],
        instances: instances(),
        ..Scenario::default()
    };
    let discovery = "[discovery]\ninterval = \"1s\"\ntags = [\"team\", \"cost-center\"]";
    let pair = start(scenario, discovery, &region("ap-guangzhou", &[])).await;
    let s = pair
        .exporter
        .wait_for(|s| s.count(INFO, &[]) == 3 && s.finished(C, "rollback", "failed").is_some())
        .await;
    let a = [
        ("instance_id", A),
        ("instance_name", "orders"),
        ("instance_type", "master"),
        ("engine_version", "8.0"),
        ("zone", "ap-guangzhou-3"),
        ("region", "ap-guangzhou"),
        ("tag_team", "shop"),
        ("tag_cost_center", "cc-42"),
    ];
    assert_eq!(s.get(INFO, &a), Some(1.0), "{}", s.text);
    let b = [
        ("instance_id", B),
        ("instance_name", "orders-ro"),
        ("instance_type", "ro"),
        ("engine_version", "5.7"),
        ("zone", "ap-guangzhou-4"),
        ("tag_team", "shop"),
        ("tag_cost_center", ""),
    ];
    assert_eq!(s.get(INFO, &b), Some(1.0), "{}", s.text);
    assert_eq!(
        s.get(
            INFO,
            &[
                ("instance_id", C),
                ("instance_type", "dr"),
                ("tag_team", "")
            ]
        ),
        Some(1.0)
    );
    // C has no task, yet its counters exist with zeros, as for an instance with tasks.
    assert_eq!(s.finished(C, "rollback", "failed"), Some(0.0));
    assert_eq!(
        s.finished(A, "import_data", "failed"),
        Some(0.0),
        "baseline"
    );
    // Names reach the task API.
    let url = format!("http://{}/api/v1/tasks", pair.exporter.addr);
    let v: serde_json::Value = serde_json::from_str(&get(&url).await.1).unwrap();
    assert_eq!(
        v["tasks"][0]["instance_names"],
        serde_json::json!(["orders"])
    );

    // C leaves the list: having no task in the window, it loses its series.
    pair.sim.sim.set_instances(instances()[..2].to_vec());
    let s = pair
        .exporter
        .wait_for(|s| s.count(INFO, &[]) == 2 && s.finished(C, "rollback", "failed").is_none())
        .await;
    assert_eq!(s.count(INFO, &[("instance_id", C)]), 0);
    assert_eq!(s.finished(A, "import_data", "failed"), Some(0.0));
    assert!(pair.sim.sim.instance_requests() >= 2);
    pair.stop().await;
}

#[tokio::test]
async fn a_forbidden_listing_is_counted_and_task_polling_goes_on() {
    let scenario = Scenario {
        tasks: vec![reboot_on_a()],
        instances: instances(),
        instances_error: Some("UnauthorizedOperation".into()),
        ..Scenario::default()
    };
    let pair = start(
        scenario,
        "[discovery]\ninterval = \"1s\"",
        &region("ap-guangzhou", &[]),
    )
    .await;
    let errors = [
        ("action", "DescribeDBInstances"),
        ("code", "UnauthorizedOperation"),
    ];
    let s = pair
        .exporter
        .wait_for(|s| {
            s.get("tencentcloud_cdb_exporter_api_errors_total", &errors)
                .is_some_and(|n| n >= 2.0)
        })
        .await;
    assert_eq!(s.count(INFO, &[]), 0);
    assert_eq!(s.tasks(A, "reboot", "succeed"), 1.0);
    assert_eq!(
        s.get("tencentcloud_cdb_exporter_last_poll_success", &[]),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "tencentcloud_cdb_exporter_api_errors_total",
            &[("action", "DescribeTasks")]
        ),
        None,
        "task polling saw no error"
    );
    // Granted later: the next listing works.
    pair.sim.sim.set_instances_error(None);
    pair.exporter.wait_for(|s| s.count(INFO, &[]) == 3).await;
    pair.stop().await;
}

#[tokio::test]
async fn listed_instances_are_found_across_pages() {
    // 2,100 instances: two pages of at most 2,000. The listed one sorts last.
    let mut all: Vec<SimInstance> = (0..2100)
        .map(|i| SimInstance::new(&format!("cdb-a{i:07}"), &format!("db-{i}")))
        .collect();
    all.push(SimInstance::new("cdb-zzzz9999", "the-listed-one"));
    let scenario = Scenario {
        instances: all,
        ..Scenario::default()
    };
    let pair = start(
        scenario,
        "[discovery]\ninterval = \"1h\"",
        &region("ap-guangzhou", &["cdb-zzzz9999"]),
    )
    .await;
    let s = pair.exporter.wait_for(|s| s.count(INFO, &[]) == 1).await;
    assert_eq!(
        s.get(INFO, &[("instance_id", "cdb-zzzz9999")]),
        Some(1.0),
        "only the listed instance is exported"
    );
    assert_eq!(
        s.get(INFO, &[("instance_name", "the-listed-one")]),
        Some(1.0)
    );
    assert_eq!(pair.sim.sim.instance_requests(), 2);
    pair.stop().await;
}

#[tokio::test]
async fn discovery_can_be_switched_off() {
    let scenario = Scenario {
        tasks: vec![reboot_on_a()],
        instances: instances(),
        ..Scenario::default()
    };
    let pair = start(
        scenario,
        "[discovery]\ninstance_info = false",
        &region("ap-guangzhou", &[]),
    )
    .await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.count(INFO, &[]), 0);
    assert_eq!(pair.sim.sim.instance_requests(), 0);
    assert_eq!(s.finished(C, "reboot", "failed"), None);
    pair.stop().await;
}

/// A listing that keeps failing the same way is logged once, not at every interval; its
/// recovery is logged once too. (The binary, for its log.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_listing_is_logged_once_per_change() {
    let scenario = Scenario {
        tasks: vec![reboot_on_a()],
        instances: instances(),
        instances_error: Some("UnauthorizedOperation".into()),
        ..Scenario::default()
    };
    let (sim, _clock) = start_sim(scenario).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = config_text(&sim.url(), "", &region("ap-guangzhou", &[])).replace(
        "[[accounts]]",
        "[discovery]\ninterval = \"1s\"\n[[accounts]]",
    );
    std::fs::write(&config, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cdb-task-exporter"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env_remove("CDB_TASK_EXPORTER_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    let count = |needle: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let wait = |what: &str| {
        assert!(std::time::Instant::now() < deadline, "{what}");
    };
    let address = loop {
        let found = lines.lock().unwrap().iter().find_map(|v| {
            (v["fields"]["message"] == "serving metrics")
                .then(|| v["fields"]["address"].as_str().map(str::to_string))
                .flatten()
        });
        if let Some(a) = found {
            break a;
        }
        wait("no 'serving metrics' line");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let errors = [
        ("action", "DescribeDBInstances"),
        ("code", "UnauthorizedOperation"),
    ];
    loop {
        let page = get(&format!("http://{address}/metrics")).await.1;
        let n = Series::parse(&page)
            .get("tencentcloud_cdb_exporter_api_errors_total", &errors)
            .unwrap_or(0.0);
        if n >= 3.0 {
            break;
        }
        wait("the listing never failed three times");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        count("cannot list instances"),
        1,
        "logged once, not per attempt"
    );
    sim.sim.set_instances_error(None);
    while count("DescribeDBInstances works again") == 0 {
        wait("the recovery was never logged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(count("cannot list instances"), 1);
    assert_eq!(count("DescribeDBInstances works again"), 1);
    sim.stop().await;
}

/// Only the configured tag keys are kept from a listing, and only this target's instances:
/// a listing carrying thousands of tags costs no memory past the page that brought them.
#[tokio::test]
async fn a_listing_keeps_only_the_configured_tags() {
    use cdb_task_exporter::call::RateLimiter;
    use cdb_task_exporter::discovery::Discovery;
    use cdb_task_exporter::metrics::TargetSeries;
    use cdb_task_exporter::metrics::{Metrics, TargetId};
    use cdb_task_exporter::shard::Shard;
    use cdb_task_exporter::target::TargetHandle;
    use std::sync::Arc;
    let tagged = (0..200).fold(SimInstance::new(A, "orders"), |i, n| {
        i.tag(&format!("k{n}"), &"v".repeat(100))
    });
    let tagged = tagged.tag("team", "shop");
    let (sim, _clock) = start_sim(Scenario {
        instances: vec![tagged, SimInstance::new(B, "other")],
        ..Scenario::default()
    })
    .await;
    let options = cdb_task_exporter::tencent::ClientOptions {
        endpoint: cdb_task_exporter::tencent::client::Endpoint::parse(&sim.url()).unwrap(),
        region: "ap-guangzhou".into(),
        zone: cdb_task_exporter::tencent::apitime::ApiZone::beijing(),
        timeout: std::time::Duration::from_secs(5),
    };
    let provider = cdb_task_exporter::tencent::credentials::Provider::Static(
        cdb_task_exporter::tencent::credentials::Credential {
            secret_id: cdb_task_exporter::sim::DEFAULT_SECRET_ID.into(),
            secret_key: cdb_task_exporter::secret::Secret::new(
                cdb_task_exporter::sim::DEFAULT_SECRET_KEY,
            ),
            token: None,
        },
    );
    let state = cdb_task_exporter::state::SavedTarget::new(
        None,
        cdb_task_exporter::tasks::TaskStore::new(cdb_task_exporter::tasks::Scope::Region, 1, 1),
    );
    let handle = Arc::new(TargetHandle::new(
        TargetId {
            account: "t".into(),
            region: "ap-guangzhou".into(),
            product: "cdb",
        },
        Shard::ALL,
        Arc::new(std::sync::Mutex::new(state)),
        TargetSeries::default(),
    ));
    let discovery = Discovery {
        handle: handle.clone(),
        client: cdb_task_exporter::tencent::Client::new(options, Arc::new(provider)).unwrap(),
        limiter: Arc::new(RateLimiter::new(100.0)),
        metrics: Arc::new(Metrics::new(false, "t", "t")),
        interval: std::time::Duration::from_secs(600),
        tags: vec!["team".into()],
        listed: vec![A.into()],
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(discovery.run(cancel.clone()));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while handle.instances().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no listing");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cancel.cancel();
    run.await.unwrap();
    let listed = handle.instances();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        [A],
        "only the listed instance"
    );
    assert_eq!(listed[A].tags, [("team".to_string(), "shop".to_string())]);
    sim.stop().await;
}
