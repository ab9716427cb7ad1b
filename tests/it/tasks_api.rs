//! Task details (docs/http.md#task-details), whole program: `/api/v1/tasks` fields, filters, order, limit
//! and 400s; `/tasks` escaping, policy and filters; the landing page's link.

use crate::common::*;
use cdb_task_exporter::sim::{Scenario, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;
use serde_json::Value;

const HOSTILE: &str = "<script>document.title='pwned'</script> disk full & \"quoted\"";

fn scenario() -> Scenario {
    Scenario {
        tasks: vec![
            SimTask::simple(101, "import_data", &[A], -3600, 600, TaskStatus::Failed)
                .with_message(HOSTILE),
            SimTask::simple(102, "modify_param", &[B], -1800, 60, TaskStatus::Succeed),
            SimTask::simple(103, "upgrade_master", &[A], -600, 0, TaskStatus::Running),
            SimTask::simple(104, "rollback", &[C], -300, 120, TaskStatus::Succeed)
                .in_region("ap-shanghai"),
        ],
        ..Scenario::default()
    }
}

struct Api {
    pair: Pair,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        let regions = region("ap-guangzhou", &[]) + &region("ap-shanghai", &[]);
        let pair = Pair::start(scenario(), "", &regions).await;
        pair.exporter.wait_targets_polled(2).await;
        Api {
            pair,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("http://{}{path}", self.pair.exporter.addr);
        self.http.get(url).send().await.unwrap()
    }

    async fn json(&self, query: &str) -> (Vec<i64>, Value) {
        let resp = self.get(&format!("/api/v1/tasks{query}")).await;
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        let ids = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["job_id"].as_i64().unwrap())
            .collect();
        (ids, v)
    }
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[tokio::test]
async fn api_lists_every_field_newest_first() {
    let api = Api::start().await;
    let started = api.pair.sim.sim.started();
    let (ids, v) = api.json("").await;
    assert_eq!(ids, [104, 103, 102, 101]);
    assert_eq!(v["truncated"], false);
    let failed = &v["tasks"][3];
    let expected = serde_json::json!({
        "job_id": 101,
        "async_request_id": SimTask::simple(101, "import_data", &[A], 0, 0, TaskStatus::Failed).async_request_id(),
        "account": "test",
        "region": "ap-guangzhou",
        "product": "cdb",
        "cluster_id": "",
        "instance_ids": [A],
        "instance_names": [""],
        "task_type": "import_data",
        "status": "failed",
        "start_time": rfc3339(started - 3600),
        "end_time": rfc3339(started - 3000),
        "duration_seconds": 600,
        "progress": 0,
        "code": -1,
        "message": HOSTILE,
    });
    assert_eq!(failed, &expected);
    let running = &v["tasks"][1];
    assert_eq!(running["status"], "running");
    assert_eq!(running["task_type"], "upgrade_master");
    assert!(running["end_time"].is_null(), "{running}");
    assert!(running["duration_seconds"].is_null(), "{running}");
    assert_eq!(running["code"], 0);
    assert_eq!(v["tasks"][0]["region"], "ap-shanghai");
    assert_eq!(v["tasks"][0]["progress"], 100);
    api.pair.stop().await;
}

#[tokio::test]
async fn api_filters_and_limits() {
    let api = Api::start().await;
    let started = api.pair.sim.sim.started();
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("?status=failed".into(), vec![101]),
        ("?status=failed&status=running".into(), vec![103, 101]),
        (format!("?instance_id={A}"), vec![103, 101]),
        (
            format!("?instance_id={A}&instance_id={B}"),
            vec![103, 102, 101],
        ),
        (format!("?instance_id={A}&status=succeed"), vec![]),
        ("?task_type=modify_param".into(), vec![102]),
        (
            "?task_type=modify_param&task_type=rollback".into(),
            vec![104, 102],
        ),
        ("?region=ap-shanghai".into(), vec![104]),
        ("?region=ap-guangzhou&status=succeed".into(), vec![102]),
        // Started or ended at or after `since`: 102 ended at -1740, 101 at -3000.
        (format!("?since={}", started - 700), vec![104, 103]),
        (format!("?since={}", started - 1740), vec![104, 103, 102]),
        (
            format!("?since={}", rfc3339(started - 1740).replace('+', "%2B")),
            vec![104, 103, 102],
        ),
        ("?limit=4".into(), vec![104, 103, 102, 101]),
        ("?status=&region=".into(), vec![104, 103, 102, 101]),
    ];
    for (query, want) in cases {
        let (ids, v) = api.json(&query).await;
        assert_eq!(ids, want, "{query}");
        assert_eq!(v["truncated"], false, "{query}");
    }
    let (ids, v) = api.json("?limit=2").await;
    assert_eq!(ids, [104, 103]);
    assert_eq!(v["truncated"], true);
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("status=done", "status"),
        ("since=last%20week", "since"),
        ("task_type=IMPORT", "task_type"),
        ("colour=red", "colour"),
    ] {
        for path in ["/api/v1/tasks", "/tasks"] {
            let resp = api.get(&format!("{path}?{query}")).await;
            assert_eq!(resp.status(), 400, "{path}?{query}");
            let body = resp.text().await.unwrap();
            assert!(body.contains(name), "{path}?{query}: {body}");
        }
    }
    api.pair.stop().await;
}

#[tokio::test]
async fn task_page_escapes_messages_filters_and_is_linked() {
    let api = Api::start().await;
    let resp = api.get("/tasks").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains("<script"),
        "an API string reached the page unescaped"
    );
    assert!(
        html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; disk full &amp; &quot;quoted&quot;"),
        "{html}"
    );
    for id in ["101", "102", "103", "104"] {
        assert!(html.contains(&format!("<tr><td>{id}<br>")), "{id} missing");
    }
    let failed = api.get("/tasks?status=failed").await.text().await.unwrap();
    assert!(failed.contains("<tr><td>101<br>"));
    assert!(!failed.contains("<tr><td>102<br>"));
    assert!(
        failed.contains("<option selected>failed</option>"),
        "the form keeps the filter"
    );
    let landing = api.get("/").await;
    assert_eq!(
        landing.headers()["content-security-policy"]
            .to_str()
            .unwrap(),
        csp,
        "the landing page has the task page's policy"
    );
    assert_eq!(landing.headers()["x-content-type-options"], "nosniff");
    let landing = landing.text().await.unwrap();
    assert!(landing.contains("href=\"/tasks\""), "{landing}");
    assert!(landing.contains("region-wide"), "{landing}");
    api.pair.stop().await;
}
