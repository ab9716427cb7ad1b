//! Instance metadata (contract §7.3), whole program: `tencentcloud_cdb_instance_info` with tag
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
