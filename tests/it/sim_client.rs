//! The client against the simulated API over loopback: signatures, error modes, filters, shapes,
//! paging and faults.

use cdb_task_exporter::clock::SystemClock;
use cdb_task_exporter::secret::Secret;
use cdb_task_exporter::sim::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Fault, Faults, Scenario, Shape, SimServer, SimTask,
    Simulator,
};
use cdb_task_exporter::tencent::apitime::ApiZone;
use cdb_task_exporter::tencent::client::{ClientOptions, Endpoint};
use cdb_task_exporter::tencent::credentials::{Credential, Provider};
use cdb_task_exporter::tencent::model::{TaskQuery, TaskStatus};
use cdb_task_exporter::tencent::paging::Pager;
use cdb_task_exporter::tencent::sign::{SignInput, sign};
use cdb_task_exporter::tencent::{Client, Error};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const A: &str = "cdb-aaaa1111";
const B: &str = "cdb-bbbb2222";

async fn start(scenario: Scenario) -> (SimServer, Arc<SystemClock>) {
    cdb_task_exporter::install_crypto_provider();
    let clock = SystemClock::shared();
    let sim = Simulator::with_default_keys(scenario, clock.clone());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (server, clock)
}

/// A client for `url` in `region`, signing with `id`/`key`.
fn client_at(url: &str, region: &str, id: &str, key: &str, timeout: Duration) -> Client {
    cdb_task_exporter::install_crypto_provider();
    let options = ClientOptions {
        endpoint: Endpoint::parse(url).unwrap(),
        region: region.into(),
        zone: ApiZone::beijing(),
        timeout,
    };
    let provider = Provider::Static(Credential {
        secret_id: id.into(),
        secret_key: Secret::new(key),
        token: None,
    });
    Client::new(options, Arc::new(provider)).unwrap()
}

fn client_with(server: &SimServer, id: &str, key: &str, timeout: Duration) -> Client {
    client_at(&server.url(), "ap-guangzhou", id, key, timeout)
}

fn client(server: &SimServer) -> Client {
    client_with(
        server,
        DEFAULT_SECRET_ID,
        DEFAULT_SECRET_KEY,
        Duration::from_secs(5),
    )
}

fn query() -> TaskQuery {
    TaskQuery {
        limit: 100,
        ..Default::default()
    }
}

fn api_code(e: Error) -> String {
    match e {
        Error::Api { code, .. } => code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn mixed() -> Scenario {
    use TaskStatus::*;
    Scenario {
        tasks: vec![
            SimTask::simple(1, "import_data", &[A], -3600, 20, Failed),
            SimTask::simple(2, "upgrade_master", &[A], -1800, 0, Running),
            SimTask::simple(3, "modify_param", &[B], -600, 0, Waiting),
            SimTask::simple(4, "switch_dr_to_master", &[A, B], -300, 60, Succeed),
            SimTask::simple(5, "reboot", &[B], -60, 10, Killed),
            SimTask::simple(6, "reboot", &[B], 3600, 10, Succeed),
            SimTask::simple(7, "rollback", &[A], -120, 5, Succeed).in_region("ap-shanghai"),
        ],
        ..Default::default()
    }
}

/// Sends a hand-made request, signed with `secret` at `timestamp`, and returns the JSON answer.
async fn raw(server: &SimServer, action: &str, body: &str, secret: &str, timestamp: i64) -> Value {
    raw_tampered(server, action, body, body, secret, timestamp).await
}

/// Like [`raw`], but signs `signed_body` and sends `sent_body`.
async fn raw_tampered(
    server: &SimServer,
    action: &str,
    signed_body: &str,
    sent_body: &str,
    secret: &str,
    timestamp: i64,
) -> Value {
    let host = server.addr.to_string();
    let signed = sign(&SignInput {
        secret_id: DEFAULT_SECRET_ID,
        secret_key: secret,
        token: None,
        host: &host,
        service: "cdb",
        action,
        version: "2017-03-20",
        region: "ap-guangzhou",
        timestamp,
        content_type: "application/json",
        body: signed_body.as_bytes(),
    });
    let mut req = reqwest::Client::new().post(server.url());
    for (k, v) in signed.headers {
        req = req.header(k, v);
    }
    let resp = req.body(sent_body.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn err_code(v: &Value) -> &str {
    v["Response"]["Error"]["Code"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn correctly_signed_request_gets_real_shaped_json() {
    let (server, _) = start(mixed()).await;
    let v = raw(
        &server,
        "DescribeTasks",
        "{\"Limit\": 100}",
        DEFAULT_SECRET_KEY,
        now(),
    )
    .await;
    let r = &v["Response"];
    assert_eq!(r["TotalCount"], 5, "{v}");
    assert!(r["RequestId"].is_string());
    let first = &r["Items"][0];
    // Newest first: the reboot that started a minute ago.
    assert_eq!(first["JobId"], 5);
    assert_eq!(first["TaskType"], "REBOOT");
    assert_eq!(first["TaskStatus"], "KILLED");
    assert_eq!(first["InstanceIds"][0], B);
    let upgrade = r["Items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["JobId"] == 2)
        .unwrap();
    assert_eq!(upgrade["EndTime"], "0000-00-00 00:00:00");
    server.stop().await;
}

#[tokio::test]
async fn signature_errors_are_the_apis() {
    let (server, _) = start(mixed()).await;
    let limit10 = "{\"Limit\": 10}";
    let cases = [
        (
            "DescribeTasks",
            limit10,
            "wrong-key",
            0,
            "AuthFailure.SignatureFailure",
        ),
        (
            "DescribeTasks",
            limit10,
            DEFAULT_SECRET_KEY,
            -600,
            "AuthFailure.SignatureExpire",
        ),
        // Within the 5-minute window.
        ("DescribeTasks", limit10, DEFAULT_SECRET_KEY, -200, "none"),
        (
            "DescribeInstances",
            limit10,
            DEFAULT_SECRET_KEY,
            0,
            "InvalidAction",
        ),
        (
            "DescribeTasks",
            "{\"Limit\": 101}",
            DEFAULT_SECRET_KEY,
            0,
            "InvalidParameter",
        ),
        (
            "DescribeTasks",
            "{\"StartTimeBegin\": \"2024-13-01 00:00:00\"}",
            DEFAULT_SECRET_KEY,
            0,
            "InvalidParameter",
        ),
        (
            "DescribeTasks",
            "{\"Bogus\": 1}",
            DEFAULT_SECRET_KEY,
            0,
            "UnknownParameter",
        ),
    ];
    for (action, body, key, skew, expected) in cases {
        let v = raw(&server, action, body, key, now() + skew).await;
        assert_eq!(err_code(&v), expected, "{action} {body} {skew}: {v}");
    }

    let e = client_with(
        &server,
        "AKIDunknown0000000000",
        "k",
        Duration::from_secs(5),
    )
    .describe_tasks(&query())
    .await
    .unwrap_err();
    assert_eq!(api_code(e.clone()), "AuthFailure.SecretIdNotFound");
    assert!(!e.is_retryable());
    let e = client_with(&server, DEFAULT_SECRET_ID, "wrong", Duration::from_secs(5))
        .describe_tasks(&query())
        .await
        .unwrap_err();
    assert_eq!(api_code(e), "AuthFailure.SignatureFailure");

    // A body changed after signing fails: the signature covers the exact bytes.
    let v = raw_tampered(
        &server,
        "DescribeTasks",
        "{\"Limit\": 10}",
        "{\"Limit\":10}",
        DEFAULT_SECRET_KEY,
        now(),
    )
    .await;
    assert_eq!(err_code(&v), "AuthFailure.SignatureFailure");
    server.stop().await;
}

#[tokio::test]
async fn every_filter_is_applied() {
    let (server, _) = start(mixed()).await;
    let c = client(&server);
    let jobs = |q: TaskQuery| {
        let c = c.clone();
        async move {
            let page = c.describe_tasks(&q).await.unwrap();
            let mut ids: Vec<i64> = page.items.iter().map(|t| t.job_id).collect();
            ids.sort_unstable();
            assert_eq!(page.total_count as usize, ids.len());
            ids
        }
    };
    assert_eq!(jobs(query()).await, [1, 2, 3, 4, 5]);
    let by_instance = TaskQuery {
        instance_id: Some(A.into()),
        ..query()
    };
    assert_eq!(jobs(by_instance).await, [1, 2, 4]);
    let by_type = TaskQuery {
        task_types: vec![7, 3],
        ..query()
    };
    assert_eq!(jobs(by_type).await, [1, 5]);
    // WAITING has no code: a status filter never returns task 3.
    let unfinished = TaskQuery {
        task_status: vec![
            TaskStatus::Undefined,
            TaskStatus::Initial,
            TaskStatus::Running,
            TaskStatus::Paused,
        ],
        ..query()
    };
    assert_eq!(jobs(unfinished).await, [2]);
    let failed = TaskQuery {
        task_status: vec![TaskStatus::Failed],
        ..query()
    };
    assert_eq!(jobs(failed).await, [1]);

    let all = c.describe_tasks(&query()).await.unwrap();
    let t4 = all.items.iter().find(|t| t.job_id == 4).unwrap().clone();
    assert_eq!(t4.instance_ids, [A, B]);
    // Time filters are inclusive at both ends.
    let exact = TaskQuery {
        start_time_begin: Some(t4.start_time),
        start_time_end: Some(t4.start_time),
        ..query()
    };
    assert_eq!(jobs(exact).await, [4]);
    let since = TaskQuery {
        start_time_begin: Some(t4.start_time),
        ..query()
    };
    assert_eq!(jobs(since).await, [4, 5]);
    let until = TaskQuery {
        start_time_end: Some(t4.start_time - 1),
        ..query()
    };
    assert_eq!(jobs(until).await, [1, 2, 3]);

    // AsyncRequestId: ask by the id the simulator reports.
    let raw = raw(
        &server,
        "DescribeTasks",
        "{\"InstanceId\": \"cdb-bbbb2222\"}",
        DEFAULT_SECRET_KEY,
        now(),
    )
    .await;
    let item = raw["Response"]["Items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["JobId"] == 5)
        .unwrap()
        .clone();
    let by_async = TaskQuery {
        async_request_id: Some(item["AsyncRequestId"].as_str().unwrap().into()),
        ..query()
    };
    assert_eq!(jobs(by_async).await, [5]);

    // The request the simulator saw carried the times in the API zone.
    let seen = server.sim.requests();
    let with_times = seen
        .iter()
        .filter_map(|r| r.request.as_ref())
        .find(|r| r.start_time_begin.is_some() && r.start_time_end.is_some())
        .unwrap();
    assert_eq!(
        with_times.start_time_begin.as_deref(),
        Some(ApiZone::beijing().format(t4.start_time).as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn regions_are_separate() {
    let (server, _) = start(mixed()).await;
    let c = client_at(
        &server.url(),
        "ap-shanghai",
        DEFAULT_SECRET_ID,
        DEFAULT_SECRET_KEY,
        Duration::from_secs(5),
    );
    let page = c.describe_tasks(&query()).await.unwrap();
    assert_eq!(page.items.iter().map(|t| t.job_id).collect::<Vec<_>>(), [7]);
    server.stop().await;
}

#[tokio::test]
async fn statuses_change_as_time_passes() {
    let (server, clock) = start(mixed()).await;
    let c = client(&server);
    let status_of = |page: &cdb_task_exporter::tencent::model::TaskPage, id| {
        page.items
            .iter()
            .find(|t| t.job_id == id)
            .map(|t| (t.status, t.end_time.is_some()))
    };
    let page = c.describe_tasks(&query()).await.unwrap();
    assert_eq!(status_of(&page, 6), None, "not started yet");
    clock.advance(3605);
    let page = c.describe_tasks(&query()).await.unwrap();
    assert_eq!(status_of(&page, 6), Some((TaskStatus::Running, false)));
    clock.advance(10);
    let page = c.describe_tasks(&query()).await.unwrap();
    assert_eq!(status_of(&page, 6), Some((TaskStatus::Succeed, true)));
    server.stop().await;
}

#[tokio::test]
async fn documented_shape_decodes_to_the_same_tasks() {
    let mut documented = mixed();
    documented.shape = Shape::Documented;
    let (current_server, _) = start(mixed()).await;
    let (documented_server, _) = start(documented).await;
    let a = client(&current_server)
        .describe_tasks(&query())
        .await
        .unwrap();
    let b = client(&documented_server)
        .describe_tasks(&query())
        .await
        .unwrap();
    let strip = |p: &cdb_task_exporter::tencent::model::TaskPage| {
        p.items
            .iter()
            .map(|t| {
                // The old shape has no WAITING; it reads as INITIAL.
                let status = if t.status == TaskStatus::Waiting {
                    TaskStatus::Initial
                } else {
                    t.status
                };
                (
                    t.job_id,
                    t.task_type.clone(),
                    status,
                    t.instance_ids.clone(),
                    t.end_time.is_some(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(b.items.len(), 5);
    current_server.stop().await;
    documented_server.stop().await;
}

#[tokio::test]
async fn pages_through_250_tasks() {
    let tasks = (0..250)
        .map(|i| {
            SimTask::simple(
                10_000 + i,
                "import_data",
                &[A],
                -86_000 + i * 60,
                30,
                TaskStatus::Succeed,
            )
        })
        .collect();
    let (server, _) = start(Scenario {
        tasks,
        ..Default::default()
    })
    .await;
    let c = client(&server);
    let mut pager = Pager::new(100);
    let mut seen = HashSet::new();
    let mut requests = 0;
    while let Some(offset) = pager.next_offset() {
        let q = TaskQuery {
            instance_id: Some(A.into()),
            offset,
            limit: pager.limit(),
            ..Default::default()
        };
        let page = c.describe_tasks(&q).await.unwrap();
        requests += 1;
        assert_eq!(page.total_count, 250);
        pager.record(page.item_count, page.total_count);
        seen.extend(page.items.iter().map(|t| t.job_id));
    }
    assert_eq!(requests, 3);
    assert_eq!(seen.len(), 250);
    let limits: Vec<_> = server
        .sim
        .requests()
        .iter()
        .filter_map(|r| r.request.as_ref()?.limit)
        .collect();
    assert!(limits.iter().all(|l| *l <= 100), "{limits:?}");
    server.stop().await;
}

#[tokio::test]
async fn each_fault_maps_to_its_error() {
    let schedule = vec![
        (1, Fault::RateLimit),
        (2, Fault::InternalError),
        (3, Fault::Http502),
        (4, Fault::Malformed),
        (5, Fault::BadItem),
        (6, Fault::Slow),
    ];
    let scenario = Scenario {
        faults: Faults {
            schedule,
            slow_delay: Duration::from_secs(3),
            ..Default::default()
        },
        ..mixed()
    };
    let (server, _) = start(scenario).await;
    let c = client_with(
        &server,
        DEFAULT_SECRET_ID,
        DEFAULT_SECRET_KEY,
        Duration::from_millis(800),
    );
    let e = c.describe_tasks(&query()).await.unwrap_err();
    assert!(e.is_throttling() && e.is_retryable());
    assert_eq!(e.as_label(), "RequestLimitExceeded");
    let e = c.describe_tasks(&query()).await.unwrap_err();
    assert_eq!((e.as_label(), e.is_retryable()), ("InternalError", true));
    let e = c.describe_tasks(&query()).await.unwrap_err();
    assert_eq!(e, Error::HttpStatus(502));
    let e = c.describe_tasks(&query()).await.unwrap_err();
    assert_eq!(e.as_label(), "Decode");
    let page = c.describe_tasks(&query()).await.unwrap();
    assert_eq!(
        (page.item_count, page.items.len(), page.malformed.len()),
        (6, 5, 1)
    );
    let e = c.describe_tasks(&query()).await.unwrap_err();
    assert_eq!(e, Error::Timeout);
    let page = c.describe_tasks(&query()).await.unwrap();
    assert_eq!(page.items.len(), 5);
    server.stop().await;
}

#[tokio::test]
async fn oversized_answers_are_rejected() {
    // 60,000 tasks answered 100 at a time stay small; a fake server sends 17 MiB instead.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let _ = s.read(&mut buf).await;
        let body = vec![b' '; 17 * 1024 * 1024];
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n";
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(&body).await;
    });
    let c = client_at(
        &format!("http://{addr}"),
        "ap-guangzhou",
        DEFAULT_SECRET_ID,
        DEFAULT_SECRET_KEY,
        Duration::from_secs(20),
    );
    assert_eq!(
        c.describe_tasks(&query()).await.unwrap_err(),
        Error::TooLarge
    );
}
