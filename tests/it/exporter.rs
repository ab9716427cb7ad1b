//! The exporter as a whole, `run()` against the simulator over loopback, asserting exact metric
//! values from real scrapes (docs/metrics.md and docs/semantics.md).

use crate::common::*;
use TaskStatus::*;
use cdb_task_exporter::clock::Clock;
use cdb_task_exporter::sim::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Fault, Faults, Scenario, Shape, SimInstance, SimTask,
};
use cdb_task_exporter::tencent::apitime::ApiZone;
use cdb_task_exporter::tencent::model::{TaskStatus, task_type_from_code};
use std::collections::BTreeMap;

fn scenario(tasks: Vec<SimTask>) -> Scenario {
    Scenario {
        tasks,
        ..Default::default()
    }
}

#[tokio::test]
async fn documented_example_in_the_integer_shape() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/describe_tasks_doc_example.json"
    ))
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let zone = ApiZone::beijing();
    let items = doc["Response"]["Items"].as_array().unwrap();
    let time = |v: &serde_json::Value| zone.parse(v.as_str().unwrap()).unwrap();
    let latest_end = items.iter().map(|i| time(&i["EndTime"])).max().unwrap();
    // Same tasks, same durations, moved so that the newest ended an hour before the start.
    let tasks = items
        .iter()
        .map(|i| {
            let start = time(&i["StartTime"]);
            let end = time(&i["EndTime"]);
            let instances: Vec<&str> = i["Data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|d| d["InstanceId"].as_str())
                .filter(|s| !s.is_empty())
                .collect();
            SimTask::simple(
                i["JobId"].as_i64().unwrap(),
                task_type_from_code(i["Type"].as_i64().unwrap()),
                &instances,
                start - latest_end - 3600,
                end - start,
                TaskStatus::from_code(i["Status"].as_i64().unwrap()),
            )
        })
        .collect();
    let mut sc = scenario(tasks);
    sc.shape = Shape::Documented;
    // The example spans months; a long lookback keeps them all.
    let pair = Pair::start(sc, "lookback = \"4000h\"", &region("ap-guangzhou", &[])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks("", "import_data", "failed"), 2.0);
    assert_eq!(s.tasks("", "import_data", "succeed"), 1.0);
    assert_eq!(s.tasks("", "modify_param", "succeed"), 1.0);
    assert_eq!(s.tasks("cdb-gt70m8aa", "initial", "succeed"), 1.0);
    assert_eq!(s.tasks("cdb-gt70m8aa", "upgrade_master", "succeed"), 1.0);
    assert_eq!(s.tasks("cdb-atjl8gns", "sql_operation", "failed"), 1.0);
    assert_eq!(s.tasks("cdb-o8cacfkg", "upgrade_master", "succeed"), 1.0);
    assert_eq!(s.tasks("cdb-7262qp3q", "initial", "succeed"), 1.0);
    assert_eq!(s.tasks("cdb-ewgjla5w", "batch_rollback", "succeed"), 1.0);
    assert_eq!(s.sum("tencentcloud_cdb_tasks", &[]), 10.0);
    // All of them ended before the exporter started: baseline, not counted.
    assert_eq!(s.sum("tencentcloud_cdb_tasks_finished_total", &[]), 0.0);
    // Six instances ("" included) x 12 types x 4 terminal statuses, pre-created at 0.
    assert_eq!(
        s.count("tencentcloud_cdb_tasks_finished_total", &[]),
        6 * 48
    );
    // The newest failed import on "" is JobId 15971, which ended 2017-06-27 16:49:44.
    let started = pair.sim.sim.started();
    let lf = s
        .get(
            "tencentcloud_cdb_task_last_finished_timestamp_seconds",
            &[
                ("instance_id", ""),
                ("task_type", "import_data"),
                ("status", "failed"),
            ],
        )
        .unwrap();
    let expected = started + (zone.parse("2017-06-27 16:49:44").unwrap() - latest_end - 3600);
    assert_eq!(lf as i64, expected);
    assert_eq!(
        s.count(
            "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds",
            &[]
        ),
        0
    );
    pair.stop().await;
}

#[tokio::test]
async fn current_shape_every_type_and_status() {
    let types = [
        "rollback",
        "sql_operation",
        "import_data",
        "modify_param",
        "initial",
        "reboot",
        "open_gtid",
        "upgrade_ro",
        "batch_rollback",
        "upgrade_master",
        "drop_tables",
        "switch_dr_to_master",
    ];
    let statuses = [
        Undefined, Initial, Running, Succeed, Failed, Killed, Removed, Paused, Waiting,
    ];
    let mut tasks = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        let st = statuses[i % statuses.len()];
        let mut t = SimTask::simple(100 + i as i64, ty, &[A], -3600 + i as i64 * 60, 30, st);
        if !st.is_terminal() {
            t = t.with_timeline(&[(0, st, Some(40))]);
        }
        tasks.push(t);
    }
    tasks.push(SimTask::simple(
        200,
        "switch_dr_to_master",
        &[A, B],
        -100,
        20,
        Succeed,
    ));
    tasks.push(SimTask::simple(201, "reboot", &[B], -50, 0, Waiting));
    tasks.push(SimTask::simple(202, "Create Backup", &[B], -40, 5, Failed));
    let pair = Pair::start(scenario(tasks), "", &region("ap-guangzhou", &[])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    for (i, ty) in types.iter().enumerate() {
        let st = statuses[i % statuses.len()];
        assert_eq!(s.tasks(A, ty, st.as_str()), 1.0, "{ty} {st:?}");
    }
    // The DR switch on two instances counts under each.
    assert_eq!(s.tasks(A, "switch_dr_to_master", "succeed"), 1.0);
    assert_eq!(s.tasks(B, "switch_dr_to_master", "succeed"), 1.0);
    assert_eq!(s.tasks(B, "reboot", "waiting"), 1.0);
    assert_eq!(s.tasks(B, "create_backup", "failed"), 1.0);
    assert_eq!(s.sum("tencentcloud_cdb_tasks", &[("instance_id", A)]), 13.0);
    // Oldest unfinished per type, absent where nothing is unfinished.
    let oldest = |inst: &str, ty: &str| {
        s.get(
            "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds",
            &[("instance_id", inst), ("task_type", ty)],
        )
    };
    let started = pair.sim.sim.started();
    assert_eq!(oldest(A, "rollback"), Some((started - 3600) as f64)); // undefined: not terminal
    assert_eq!(oldest(B, "reboot"), Some((started - 50) as f64));
    assert_eq!(oldest(A, "reboot"), None); // failed
    pair.stop().await;
}

#[tokio::test]
async fn a_task_older_than_the_lookback_is_counted_when_it_fails() {
    let tasks = vec![
        SimTask::simple(1, "upgrade_master", &[A], -7200, 7220, Failed),
        SimTask::simple(2, "reboot", &[A], -600, 30, Succeed),
    ];
    let pair = Pair::start(
        scenario(tasks),
        "lookback = \"1h\"",
        &region("ap-guangzhou", &[A]),
    )
    .await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "upgrade_master", "running"), 1.0);
    let started = pair.sim.sim.started();
    assert_eq!(
        s.get(
            "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds",
            &[("task_type", "upgrade_master")]
        ),
        Some((started - 7200) as f64)
    );
    assert_eq!(s.finished(A, "upgrade_master", "failed"), Some(0.0));
    let s = pair.advance(30).await;
    assert_eq!(s.finished(A, "upgrade_master", "failed"), Some(1.0));
    assert_eq!(s.tasks(A, "upgrade_master", "running"), 0.0);
    // Ended, and started before the lookback: evicted, the series stays at 0.
    assert_eq!(s.tasks(A, "upgrade_master", "failed"), 0.0);
    assert_eq!(
        s.count(
            "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds",
            &[]
        ),
        0
    );
    assert_eq!(
        s.get(
            "tencentcloud_cdb_task_duration_seconds_count",
            &[("task_type", "upgrade_master"), ("status", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "tencentcloud_cdb_task_duration_seconds_sum",
            &[("task_type", "upgrade_master"), ("status", "failed")]
        ),
        Some(7220.0)
    );
    // And it stays counted once.
    let s = pair.advance(5).await;
    assert_eq!(s.finished(A, "upgrade_master", "failed"), Some(1.0));
    pair.stop().await;
}

#[tokio::test]
async fn transitions_are_counted_once() {
    let three_steps = SimTask::simple(2, "import_data", &[A], -5, 0, Initial).with_timeline(&[
        (0, Initial, Some(0)),
        (20, Running, Some(50)),
        (40, Succeed, Some(100)),
    ]);
    let tasks = vec![
        SimTask::simple(1, "reboot", &[A], -5, 20, Failed),
        three_steps,
    ];
    let pair = Pair::start(scenario(tasks), "", &region("ap-guangzhou", &[])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "reboot", "running"), 1.0);
    assert_eq!(s.tasks(A, "import_data", "initial"), 1.0);
    let s = pair.advance(20).await;
    assert_eq!(s.tasks(A, "reboot", "running"), 0.0);
    assert_eq!(s.tasks(A, "reboot", "failed"), 1.0);
    assert_eq!(s.finished(A, "reboot", "failed"), Some(1.0));
    assert_eq!(s.tasks(A, "import_data", "running"), 1.0);
    assert_eq!(s.tasks(A, "import_data", "initial"), 0.0);
    let s = pair.advance(20).await;
    assert_eq!(s.tasks(A, "import_data", "succeed"), 1.0);
    assert_eq!(s.finished(A, "import_data", "succeed"), Some(1.0));
    assert_eq!(s.finished(A, "reboot", "failed"), Some(1.0));
    let s = pair.advance(600).await;
    assert_eq!(s.finished(A, "import_data", "succeed"), Some(1.0));
    assert_eq!(s.finished(A, "reboot", "failed"), Some(1.0));
    assert_eq!(s.sum("tencentcloud_cdb_tasks_finished_total", &[]), 2.0);
    pair.stop().await;
}

/// Steady-state polls: every request is a first page of a recent-window query with no status
/// filter, and no two share a window start (one request per poll, no retries, no extra pages).
fn assert_one_request_per_poll(requests: &[cdb_task_exporter::sim::RecordedRequest]) {
    assert!(requests.len() >= 2, "{requests:?}");
    let mut begins = std::collections::HashSet::new();
    for r in requests {
        let q = r.request.as_ref().unwrap();
        assert!(q.task_status.is_none() && q.offset == Some(0), "{q:?}");
        assert!(
            begins.insert(q.start_time_begin.clone().unwrap()),
            "two requests in one poll: {q:?}"
        );
    }
}

fn many(n: i64, instances: &[&str]) -> Vec<SimTask> {
    (0..n)
        .map(|i| {
            let inst = instances[i as usize % instances.len()];
            SimTask::simple(
                5000 + i,
                "import_data",
                &[inst],
                -80_000 + i * 300,
                60,
                Succeed,
            )
        })
        .collect()
}

#[tokio::test]
async fn pages_250_tasks_on_one_instance() {
    let pair = Pair::start(scenario(many(250, &[A])), "", &region("ap-guangzhou", &[A])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "import_data", "succeed"), 250.0);
    let requests: Vec<_> = pair.sim.sim.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.request.as_ref().is_some_and(|q| q.limit.unwrap() <= 100))
    );
    assert!(
        requests
            .iter()
            .all(|r| r.request.as_ref().unwrap().instance_id.as_deref() == Some(A))
    );
    pair.stop().await;
}

#[tokio::test]
async fn pages_130_tasks_region_wide_and_then_costs_one_request_a_poll() {
    let pair = Pair::start(
        scenario(many(130, &[A, B, C])),
        "",
        &region("ap-guangzhou", &[]),
    )
    .await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.sum("tencentcloud_cdb_tasks", &[]), 130.0);
    assert_eq!(s.tasks(A, "import_data", "succeed"), 44.0);
    // First poll: 2 pages and 1 query for unfinished tasks older than the window. (A second
    // poll may already have started; it is one of the steady-state requests checked below.)
    let first = pair.sim.sim.requests();
    let shape: Vec<(Option<i64>, bool)> = first[..3]
        .iter()
        .map(|r| {
            let q = r.request.as_ref().unwrap();
            (q.offset, q.task_status.is_some())
        })
        .collect();
    assert_eq!(
        shape,
        [(Some(0), false), (Some(100), false), (Some(0), true)],
        "{first:?}"
    );
    pair.advance(60).await;
    pair.advance(60).await;
    assert_one_request_per_poll(&pair.sim.sim.requests()[3..]);
    pair.stop().await;
}

#[tokio::test]
async fn converges_under_throttling_and_faults() {
    // Fewer than a page, so the malformed item is an extra one and no task is lost to it.
    let tasks = many(90, &[A, B]);
    let faults = Faults {
        seed: 99,
        rate_limit: 0.3,
        internal_error: 0.05,
        schedule: vec![
            (1, Fault::Http502),
            (2, Fault::Malformed),
            (4, Fault::BadItem),
        ],
        ..Default::default()
    };
    let sc = Scenario {
        tasks,
        faults,
        ..Default::default()
    };
    let pair = Pair::start(sc, "", &region("ap-guangzhou", &[])).await;
    let s = pair
        .exporter
        .wait_for(|s| s.sum("tencentcloud_cdb_tasks", &[]) == 90.0)
        .await;
    assert_eq!(s.tasks(A, "import_data", "succeed"), 45.0);
    assert_eq!(s.tasks(B, "import_data", "succeed"), 45.0);
    let err = |code: &str| {
        s.get(
            "tencentcloud_cdb_exporter_api_errors_total",
            &[("code", code)],
        )
        .unwrap_or(0.0)
    };
    assert!(err("RequestLimitExceeded") >= 1.0, "{}", s.text);
    assert_eq!(err("HttpStatus502"), 1.0);
    assert!(
        err("Decode") >= 2.0,
        "a malformed body and a malformed item"
    );
    // Every attempt is counted, retries included.
    let requests = s
        .get(
            "tencentcloud_cdb_exporter_api_requests_total",
            &[("action", "DescribeTasks")],
        )
        .unwrap();
    assert!(requests as usize <= pair.sim.sim.request_count());
    assert!(requests >= 3.0 + err("RequestLimitExceeded"));
    assert_eq!(
        s.get("tencentcloud_cdb_exporter_last_poll_success", &[]),
        Some(1.0)
    );
    pair.stop().await;
}

#[tokio::test]
async fn baseline_and_tasks_seen_first_when_already_finished() {
    let tasks = vec![
        SimTask::simple(1, "reboot", &[A], -600, 30, Failed),
        // Starts and ends between two polls, after the exporter started.
        SimTask::simple(2, "reboot", &[A], 10, 5, Failed),
    ];
    let pair = Pair::start(scenario(tasks), "", &region("ap-guangzhou", &[A])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "reboot", "failed"), 1.0);
    assert_eq!(s.finished(A, "reboot", "failed"), Some(0.0));
    let s = pair.advance(30).await;
    assert_eq!(s.tasks(A, "reboot", "failed"), 2.0);
    assert_eq!(s.finished(A, "reboot", "failed"), Some(1.0));
    pair.stop().await;
}

#[tokio::test]
async fn zero_counters_exist_for_listed_instances_from_the_first_poll() {
    let pair = Pair::start(scenario(vec![]), "", &region("ap-guangzhou", &[A, B])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(
        s.count("tencentcloud_cdb_tasks_finished_total", &[]),
        2 * 12 * 4
    );
    assert_eq!(s.sum("tencentcloud_cdb_tasks_finished_total", &[]), 0.0);
    for status in ["succeed", "failed", "killed", "removed"] {
        assert_eq!(s.finished(B, "switch_dr_to_master", status), Some(0.0));
    }
    pair.stop().await;
}

#[tokio::test]
async fn no_timestamps_no_job_ids_and_help_says_background_poll() {
    let tasks = vec![SimTask::simple(77, "upgrade_master", &[A], -60, 0, Running)];
    let pair = Pair::start(scenario(tasks.clone()), "", &region("ap-guangzhou", &[])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    for line in s.text.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(
            line.split(' ').count(),
            2,
            "sample with a timestamp: {line}"
        );
        assert!(!line.contains("job_id"), "{line}");
        assert!(!line.contains("77\""), "{line}");
    }
    for line in s.text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(line.contains("background poll"), "{line}");
    }
    pair.stop().await;
}

#[tokio::test]
async fn progress_is_opt_in_and_removed_when_the_task_ends() {
    let t = SimTask::simple(78, "upgrade_master", &[A], -60, 0, Running)
        .with_timeline(&[(0, Running, Some(45)), (100, Succeed, None)]);
    let opt_in = "[metrics]\ntask_progress = true";
    let pair = Pair::start(scenario(vec![t]), opt_in, &region("ap-guangzhou", &[])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(
        s.get(
            "tencentcloud_cdb_task_progress_ratio",
            &[("job_id", "78"), ("instance_id", A), ("status", "running")]
        ),
        Some(0.45)
    );
    assert_eq!(s.count("tencentcloud_cdb_tasks", &[("job_id", "78")]), 0);
    let s = pair.advance(60).await;
    assert_eq!(s.count("tencentcloud_cdb_task_progress_ratio", &[]), 0);
    assert_eq!(s.finished(A, "upgrade_master", "succeed"), Some(1.0));
    pair.stop().await;
}

#[tokio::test]
async fn sample_values_survive_a_failing_api() {
    let tasks = vec![SimTask::simple(1, "reboot", &[A], -60, 0, Running)];
    let pair = Pair::start(scenario(tasks), "", &region("ap-guangzhou", &[])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "reboot", "running"), 1.0);
    pair.sim.sim.set_faults(Faults {
        internal_error: 1.0,
        ..Default::default()
    });
    let s = pair
        .exporter
        .wait_for(|s| s.get("tencentcloud_cdb_exporter_last_poll_success", &[]) == Some(0.0))
        .await;
    assert_eq!(
        s.tasks(A, "reboot", "running"),
        1.0,
        "last good values stay"
    );
    let (status, _) = get(&format!("http://{}/healthz", pair.exporter.addr)).await;
    assert_eq!(status, 200);
    pair.sim.sim.set_faults(Faults::default());
    let s = pair
        .exporter
        .wait_for(|s| s.get("tencentcloud_cdb_exporter_last_poll_success", &[]) == Some(1.0))
        .await;
    assert_eq!(s.tasks(A, "reboot", "running"), 1.0);
    pair.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_a_successful_poll() {
    cdb_task_exporter::install_crypto_provider();
    let clock = cdb_task_exporter::clock::SystemClock::shared();
    let sim = cdb_task_exporter::sim::Simulator::new(
        scenario(vec![]),
        "AKIDother000000000000",
        cdb_task_exporter::secret::Secret::new("other"),
        clock.clone(),
    )
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let config = cdb_task_exporter::config::Config::from_toml(&config_text(
        &sim.url(),
        "",
        &region("ap-guangzhou", &[]),
    ))
    .unwrap();
    let exporter = Exporter::start(config, clock).await;
    let s = exporter
        .wait_for(|s| s.get("tencentcloud_cdb_exporter_last_poll_success", &[]) == Some(0.0))
        .await;
    assert_eq!(
        s.get(
            "tencentcloud_cdb_exporter_api_errors_total",
            &[
                ("code", "AuthFailure.SecretIdNotFound"),
                ("action", "DescribeTasks")
            ]
        ),
        Some(
            s.get(
                "tencentcloud_cdb_exporter_api_requests_total",
                &[("action", "DescribeTasks")]
            )
            .unwrap()
        ),
        "auth errors are not retried"
    );
    let base = format!("http://{}", exporter.addr);
    let (status, ready) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    // Every poll failed: the reason is shown, not just "waiting".
    assert!(
        ready.contains("last error AuthFailure.SecretIdNotFound"),
        "{ready}"
    );
    assert!(ready.contains("last success never"), "{ready}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let (status, page) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/metrics\"") && page.contains("ap-guangzhou"));
    assert!(page.contains("AuthFailure.SecretIdNotFound"), "{page}");
    assert_eq!(get(&format!("{base}/nope")).await.0, 404);
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn ready_after_the_first_poll() {
    let pair = Pair::start(scenario(vec![]), "", &region("ap-guangzhou", &[])).await;
    pair.exporter.wait_poll_after(0).await;
    assert_eq!(
        get(&format!("http://{}/readyz", pair.exporter.addr))
            .await
            .0,
        200
    );
    pair.stop().await;
}

#[tokio::test]
async fn restart_with_a_state_file_counts_downtime_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let poll = format!("state_file = \"{}\"", state.display());
    let tasks = vec![
        // Ends during the first run.
        SimTask::simple(1, "reboot", &[A], -30, 40, Succeed),
        // Running at the first stop, ends during the downtime.
        SimTask::simple(2, "upgrade_master", &[A], -30, 200, Failed),
        // Starts and ends during the downtime.
        SimTask::simple(3, "import_data", &[A], 150, 20, Killed),
        // Ended long before: baseline.
        SimTask::simple(4, "rollback", &[A], -3000, 20, Succeed),
    ];
    let (sim, clock) = start_sim(scenario(tasks)).await;
    let text = config_text(&sim.url(), &poll, &region("ap-guangzhou", &[A]));
    let config = cdb_task_exporter::config::Config::from_toml(&text).unwrap();

    let first = Exporter::start(config.clone(), clock.clone()).await;
    first.wait_poll_after(0).await;
    clock.advance(60);
    let s = first
        .wait_poll_after(cdb_task_exporter::clock::Clock::now(clock.as_ref()))
        .await;
    assert_eq!(s.finished(A, "reboot", "succeed"), Some(1.0));
    assert_eq!(s.tasks(A, "upgrade_master", "running"), 1.0);
    first.stop().await;
    assert!(state.exists());

    clock.advance(300); // downtime: task 2 fails, task 3 runs and is killed
    let second = Exporter::start(config.clone(), clock.clone()).await;
    let s = second
        .wait_poll_after(cdb_task_exporter::clock::Clock::now(clock.as_ref()))
        .await;
    assert_eq!(s.finished(A, "upgrade_master", "failed"), Some(1.0));
    assert_eq!(s.finished(A, "import_data", "killed"), Some(1.0));
    assert_eq!(
        s.finished(A, "reboot", "succeed"),
        Some(1.0),
        "counted by the first run: the value is restored, not counted again (docs/semantics.md#counters-survive-restarts)"
    );
    assert_eq!(s.finished(A, "rollback", "succeed"), Some(0.0), "baseline");
    second.stop().await;

    // A third run with nothing new counts nothing: its counters are the second run's.
    let third = Exporter::start(config.clone(), clock.clone()).await;
    let s = third
        .wait_poll_after(cdb_task_exporter::clock::Clock::now(clock.as_ref()))
        .await;
    assert_eq!(s.sum("tencentcloud_cdb_tasks_finished_total", &[]), 3.0);
    assert_eq!(
        s.sum("tencentcloud_cdb_task_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(s.tasks(A, "upgrade_master", "failed"), 1.0);
    third.stop().await;

    // A corrupt state file is moved aside and the exporter starts fresh.
    std::fs::write(&state, b"{ not json").unwrap();
    let fourth = Exporter::start(config, clock.clone()).await;
    let s = fourth
        .wait_poll_after(cdb_task_exporter::clock::Clock::now(clock.as_ref()))
        .await;
    assert_eq!(s.sum("tencentcloud_cdb_tasks_finished_total", &[]), 0.0);
    fourth.stop().await;
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(std::result::Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside);
    sim.stop().await;
}

#[tokio::test]
async fn region_wide_with_listed_instances_filters_locally() {
    let mut tasks = many(60, &[A, B, C]);
    tasks.push(SimTask::simple(9, "reboot", &[], -30, 5, Failed));
    let pair = Pair::start(scenario(tasks), "", &region("ap-guangzhou", &[A, B])).await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "import_data", "succeed"), 20.0);
    assert_eq!(s.tasks(B, "import_data", "succeed"), 20.0);
    assert_eq!(s.tasks(C, "import_data", "succeed"), 0.0);
    assert_eq!(s.count("tencentcloud_cdb_tasks", &[("instance_id", C)]), 0);
    assert_eq!(
        s.count(
            "tencentcloud_cdb_tasks_finished_total",
            &[("instance_id", C)]
        ),
        0
    );
    // Two listed instances and a quiet region: after the first poll, one region-wide request a
    // poll rather than one per instance.
    let before = pair.sim.sim.request_count();
    pair.advance(60).await;
    pair.advance(60).await;
    let later = &pair.sim.sim.requests()[before..];
    assert!(
        later
            .iter()
            .all(|r| r.request.as_ref().unwrap().instance_id.is_none())
    );
    assert_one_request_per_poll(later);
    pair.stop().await;
}

#[tokio::test]
async fn a_reload_that_adds_a_region_keeps_the_other_targets_counters() {
    let tasks = vec![
        SimTask::simple(1, "reboot", &[A], 5, 5, Failed),
        SimTask::simple(2, "reboot", &[B], -60, 5, Succeed).in_region("ap-shanghai"),
    ];
    let (sim, clock) = start_sim(scenario(tasks)).await;
    let one = config_text(&sim.url(), "", &region("ap-guangzhou", &[]));
    let two = format!("{one}{}", region("ap-shanghai", &[]));
    let parse = |t: &str| cdb_task_exporter::config::Config::from_toml(t).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let exporter = Exporter::start_with_reloads(parse(&one), clock.clone(), Some(rx)).await;
    exporter.wait_poll_after(0).await;
    clock.advance(20);
    let now = cdb_task_exporter::clock::Clock::now(clock.as_ref());
    let s = exporter.wait_poll_after(now).await;
    assert_eq!(s.finished(A, "reboot", "failed"), Some(1.0));

    tx.send(cdb_task_exporter::app::Reload::Config(Box::new(parse(
        &two,
    ))))
    .await
    .unwrap();
    let s = exporter
        .wait_for(|s| s.tasks(B, "reboot", "succeed") == 1.0)
        .await;
    // The Guangzhou target did not change: it kept running, and its counter.
    assert_eq!(s.finished(A, "reboot", "failed"), Some(1.0));
    assert_eq!(
        s.count("tencentcloud_cdb_exporter_last_poll_success", &[]),
        2
    );
    exporter.stop().await;
    sim.stop().await;
}

/// A target removed by a reload leaves nothing behind: no series in `/metrics` (task families
/// and self-metrics), no task in `/api/v1/tasks`, no line in `/readyz` or on the landing page,
/// no entry in the next state file.
#[tokio::test]
async fn a_removed_target_leaves_nothing_behind() {
    let tasks = vec![
        SimTask::simple(1, "reboot", &[A], -60, 5, Failed),
        SimTask::simple(2, "import_data", &[B], -60, 5, Failed).in_region("ap-shanghai"),
    ];
    let (sim, clock) = start_sim(Scenario {
        instances: vec![
            SimInstance::new(A, "orders"),
            SimInstance::new(B, "billing"),
        ],
        ..scenario(tasks)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let poll = format!("state_file = \"{}\"", state.display());
    let one = config_text(&sim.url(), &poll, &region("ap-guangzhou", &[]));
    let two = format!("{one}{}", region("ap-shanghai", &[]));
    let parse = |t: &str| cdb_task_exporter::config::Config::from_toml(t).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let exporter = Exporter::start_with_reloads(parse(&two), clock.clone(), Some(rx)).await;
    let s = exporter.wait_targets_polled(2).await;
    assert_eq!(s.tasks(B, "import_data", "failed"), 1.0);
    let base = format!("http://{}", exporter.addr);
    // (The simulator lists both instances in every region: B stays in Guangzhou's zeros.)
    let shanghai = |text: &str| text.contains("ap-shanghai");
    let page = exporter.scrape().await;
    assert!(shanghai(&page), "present before the reload");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        saved.contains("ap-shanghai"),
        "in the state file before the reload"
    );

    tx.send(cdb_task_exporter::app::Reload::Config(Box::new(parse(
        &one,
    ))))
    .await
    .unwrap();
    let s = exporter
        .wait_for(|s| {
            s.count("tencentcloud_cdb_exporter_last_poll_success", &[]) == 1
                && s.tasks(B, "import_data", "failed") == 0.0
        })
        .await;
    // Guangzhou goes on; a poll after the reload writes the state file again.
    clock.advance(1);
    let now = cdb_task_exporter::clock::Clock::now(clock.as_ref());
    exporter.wait_poll_after(now).await;
    assert_eq!(s.tasks(A, "reboot", "failed"), 1.0);
    let page = exporter.scrape().await;
    let left: Vec<&str> = page.lines().filter(|l| shanghai(l)).collect();
    assert!(left.is_empty(), "left in /metrics: {left:?}");
    for path in ["/api/v1/tasks", "/readyz", "/", "/tasks"] {
        let (status, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !shanghai(&body),
            "{path} still shows the removed target: {body}"
        );
    }
    let (_, tasks) = get(&format!("{base}/api/v1/tasks")).await;
    assert!(tasks.contains(A), "the remaining target is served: {tasks}");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        !saved.contains("ap-shanghai"),
        "left in the state file: {saved}"
    );
    assert!(saved.contains("ap-guangzhou"));
    exporter.stop().await;
    sim.stop().await;
}

/// docs/configuration.md#sharding: three shards polling one account export, together, exactly what one unsharded
/// process exports: every task series with an instance in exactly one shard, the same values,
/// and duration histograms that add up.
#[tokio::test]
async fn three_shards_equal_one_unsharded_process() {
    let ids: Vec<String> = (0..30).map(|i| format!("cdb-shard{i:04}")).collect();
    let types = ["import_data", "reboot", "modify_param", "upgrade_master"];
    let mut tasks = Vec::new();
    let mut job = 500_000;
    for (k, id) in ids.iter().enumerate() {
        for (j, ty) in types.iter().enumerate() {
            job += 1;
            let status = [Succeed, Failed, Running, Killed][(k + j) % 4];
            // Baseline tasks, long ago.
            tasks.push(SimTask::simple(
                job,
                ty,
                &[id],
                -5_000 - job % 97,
                60,
                status,
            ));
        }
        // One task per instance that ends while the exporters watch.
        job += 1;
        let outcome = if k % 3 == 0 { Failed } else { Succeed };
        tasks.push(SimTask::simple(
            job,
            types[k % 4],
            &[id],
            -100,
            130,
            outcome,
        ));
    }
    // Tasks naming two instances (likely on two shards), and tasks naming none.
    tasks.push(SimTask::simple(
        900_001,
        "rollback",
        &[&ids[1], &ids[2]],
        -50,
        100,
        Failed,
    ));
    tasks.push(SimTask::simple(
        900_002,
        "rollback",
        &[&ids[3], &ids[4]],
        -400,
        60,
        Succeed,
    ));
    tasks.push(SimTask::simple(
        900_003,
        "drop_tables",
        &[],
        -80,
        110,
        Succeed,
    ));
    tasks.push(SimTask::simple(
        900_004,
        "drop_tables",
        &[],
        -90,
        1,
        Running,
    ));
    let (sim, clock) = start_sim(scenario(tasks)).await;
    let start = |sharding: &str| {
        let text = config_text(&sim.url(), "", &region("ap-guangzhou", &[]));
        let config =
            cdb_task_exporter::config::Config::from_toml(&format!("{sharding}\n{text}")).unwrap();
        Exporter::start(config, clock.clone())
    };
    let whole = start("").await;
    let mut shards = Vec::new();
    for i in 0..3 {
        shards.push(start(&format!("[sharding]\ntotal_shards = 3\nshard = {i}")).await);
    }
    // Everything ends while all four watch; then each shows a poll after that.
    for e in std::iter::once(&whole).chain(&shards) {
        e.wait_poll_after(0).await;
    }
    clock.advance(200);
    let t = clock.now();
    let whole_s = whole.wait_poll_after(t).await;
    let mut shard_s = Vec::new();
    for e in &shards {
        shard_s.push(e.wait_poll_after(t).await);
    }

    let task_series = |s: &Series| -> BTreeMap<(String, Vec<(String, String)>), f64> {
        s.samples
            .iter()
            .filter(|((name, _), _)| name.starts_with("tencentcloud_cdb_task"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let expected = task_series(&whole_s);
    let mut union: BTreeMap<(String, Vec<(String, String)>), f64> = BTreeMap::new();
    for (i, s) in shard_s.iter().enumerate() {
        assert_eq!(
            s.get(
                "tencentcloud_cdb_exporter_shard_info",
                &[("shard", &i.to_string()), ("total_shards", "3")]
            ),
            Some(1.0)
        );
        assert_eq!(
            s.get("tencentcloud_cdb_exporter_total_shards", &[]),
            Some(3.0)
        );
        assert_eq!(
            s.get("tencentcloud_cdb_exporter_shard_ordinal", &[]),
            Some(i as f64)
        );
        for (key, v) in task_series(s) {
            let has_instance = key.1.iter().any(|(l, _)| l == "instance_id");
            match union.get_mut(&key) {
                Some(sum) => {
                    assert!(!has_instance, "series in two shards: {key:?}");
                    *sum += v; // histograms (no instance label) add up
                }
                None => {
                    union.insert(key, v);
                }
            }
        }
    }
    assert_eq!(union, expected);
    // The test means something: every shard has work, and tasks finished during the run.
    for s in &shard_s {
        assert!(s.count("tencentcloud_cdb_tasks", &[]) > 0);
    }
    assert!(whole_s.sum("tencentcloud_cdb_tasks_finished_total", &[]) >= 31.0);
    assert_eq!(
        whole_s.get(
            "tencentcloud_cdb_tasks",
            &[
                ("instance_id", ""),
                ("task_type", "drop_tables"),
                ("status", "running")
            ]
        ),
        Some(1.0)
    );
    whole.stop().await;
    for e in shards {
        e.stop().await;
    }
    sim.stop().await;
}

/// Two accounts polling the same region: their task series share label sets and are merged
/// (counts summed, the oldest unfinished start the minimum); the self-metrics stay per account.
#[tokio::test]
async fn two_accounts_in_one_region_are_merged() {
    let tasks = vec![
        SimTask::simple(1, "reboot", &[A], -600, 60, Succeed),
        SimTask::simple(2, "import_data", &[A], -300, 0, Running),
    ];
    let (sim, clock) = start_sim(scenario(tasks)).await;
    let second = format!(
        "[[accounts]]\nname = \"second\"\nsecret_id = \"{DEFAULT_SECRET_ID}\"\nsecret_key = \"{DEFAULT_SECRET_KEY}\"\nendpoint = \"{}\"\n{}",
        sim.url(),
        region("ap-guangzhou", &[])
    );
    let text = config_text(&sim.url(), "", &region("ap-guangzhou", &[])) + &second;
    let config = cdb_task_exporter::config::Config::from_toml(&text).unwrap();
    let exporter = Exporter::start(config, clock).await;
    let s = exporter.wait_targets_polled(2).await;
    // Each account saw one succeeded reboot and one running import: merged, two of each.
    assert_eq!(
        s.count(
            "tencentcloud_cdb_tasks",
            &[("instance_id", A), ("task_type", "reboot")]
        ),
        1
    );
    assert_eq!(s.tasks(A, "reboot", "succeed"), 2.0);
    assert_eq!(s.tasks(A, "import_data", "running"), 2.0);
    assert_eq!(
        s.count(
            "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds",
            &[("instance_id", A)]
        ),
        1,
        "one merged series"
    );
    for account in ["test", "second"] {
        assert_eq!(
            s.get(
                "tencentcloud_cdb_exporter_last_poll_success",
                &[("account", account)]
            ),
            Some(1.0)
        );
    }
    exporter.stop().await;
    sim.stop().await;
}

/// A small page is rendered at once (it has a `Content-Length`); a large one is streamed in
/// chunks (no length). Both, plain or gzipped, carry the same series.
#[tokio::test]
async fn large_pages_stream_and_small_pages_do_not() {
    use std::io::Read;
    let ids: Vec<String> = (0..250).map(|i| format!("cdb-big{i:05}")).collect();
    let listed: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (sim, clock) = start_sim(scenario(vec![])).await;
    let small = config_text(&sim.url(), "", &region("ap-guangzhou", &listed[..2]));
    let large = config_text(&sim.url(), "", &region("ap-guangzhou", &listed));
    let http = reqwest::Client::new();
    for (config, zeros, streamed) in [(small, 2 * 48, false), (large, 250 * 48, true)] {
        let exporter = Exporter::start(
            cdb_task_exporter::config::Config::from_toml(&config).unwrap(),
            clock.clone(),
        )
        .await;
        exporter.wait_targets_polled(1).await;
        let url = format!("http://{}/metrics", exporter.addr);
        let plain = http.get(&url).send().await.unwrap();
        assert_eq!(plain.content_length().is_none(), streamed, "{zeros} zeros");
        let plain = plain.text().await.unwrap();
        let gzipped = http
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_string(&mut unzipped)
            .unwrap();
        let finished = |page: &str| {
            page.lines()
                .filter(|l| l.starts_with("tencentcloud_cdb_tasks_finished_total{"))
                .count()
        };
        assert_eq!(finished(&plain), zeros);
        assert_eq!(finished(&unzipped), zeros);
        exporter.stop().await;
    }
    sim.stop().await;
}
