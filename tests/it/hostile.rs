//! Hostile and broken servers: each test reproduces a way the network could hurt the exporter
//! (endless paging, a poll that never ends, redirects, absurd instance ids, a stop mid-poll) and
//! checks that it is bounded, counted and reported.

use crate::common::*;
use cdb_task_exporter::call::RateLimiter;
use cdb_task_exporter::metrics::{Metrics, TargetId, TargetSeries};
use cdb_task_exporter::poller::{PollSettings, Target, TargetParts};
use cdb_task_exporter::secret::Secret;
use cdb_task_exporter::shard::Shard;
use cdb_task_exporter::sim::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Fault, Faults, Scenario, SimServer, SimTask,
};
use cdb_task_exporter::state::SavedTarget;
use cdb_task_exporter::target::TargetHandle;
use cdb_task_exporter::tasks::{Scope, TaskStore};
use cdb_task_exporter::tencent::apitime::ApiZone;
use cdb_task_exporter::tencent::client::{ClientOptions, Endpoint};
use cdb_task_exporter::tencent::credentials::{Credential, Provider};
use cdb_task_exporter::tencent::model::TaskStatus;
use cdb_task_exporter::tencent::{Client, Error};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn with_faults(tasks: Vec<SimTask>, faults: Faults) -> Scenario {
    Scenario {
        tasks,
        faults,
        ..Default::default()
    }
}

/// A target polling `sim` region-wide with a session token, and the metrics it reports to.
fn target(sim: &SimServer, settings: PollSettings) -> (Target, Probe) {
    let options = ClientOptions {
        endpoint: Endpoint::parse(&sim.url()).unwrap(),
        region: "ap-guangzhou".into(),
        zone: ApiZone::beijing(),
        timeout: Duration::from_secs(5),
    };
    let provider = Provider::Static(Credential {
        secret_id: DEFAULT_SECRET_ID.into(),
        secret_key: Secret::new(DEFAULT_SECRET_KEY),
        token: Some(Secret::new("session-token-for-the-api-only")),
    });
    let metrics = Arc::new(Metrics::new(false, "t", "t"));
    let clock = cdb_task_exporter::clock::SystemClock::shared();
    let state = Arc::new(Mutex::new(SavedTarget::new(
        None,
        TaskStore::new(Scope::Region, 86_400, 0),
    )));
    let handle = Arc::new(TargetHandle::new(
        TargetId {
            account: "hostile".into(),
            region: "ap-guangzhou".into(),
            product: "cdb",
        },
        Shard::ALL,
        state,
        TargetSeries::default(),
    ));
    let t = Target::new(TargetParts {
        handle: handle.clone(),
        instances: vec![],
        client: Client::new(options, Arc::new(provider)).unwrap(),
        limiter: Arc::new(RateLimiter::new(1_000.0)),
        metrics: metrics.clone(),
        clock,
        settings,
        persister: None,
    });
    (t, Probe { metrics, handle })
}

fn settings() -> PollSettings {
    PollSettings::new(
        Duration::from_secs(60),
        Duration::from_secs(86_400),
        Shard::ALL,
    )
}

/// What a test reads back: the metrics, and the target's handle (its store and series).
struct Probe {
    metrics: Arc<Metrics>,
    handle: Arc<TargetHandle>,
}

fn scrape(probe: &Probe) -> Series {
    let page = probe.metrics.render([probe.handle.series()]);
    Series::parse(&String::from_utf8(page).unwrap())
}

#[tokio::test]
async fn endless_paging_stops_at_the_page_ceiling() {
    let faults = Faults {
        always: Some(Fault::EndlessPages),
        ..Default::default()
    };
    let (sim, _) = start_sim(with_faults(vec![], faults)).await;
    let mut s = settings();
    s.max_pages = 5;
    let (mut t, metrics) = target(&sim, s);
    let report = t.poll(&CancellationToken::new()).await;
    assert!(
        matches!(report.failure, Some(Error::PagingLimit(5))),
        "{report:?}"
    );
    assert_eq!(report.requests, 5);
    let m = scrape(&metrics);
    let labels = [("code", "PagingLimit")];
    assert_eq!(
        m.get("tencentcloud_cdb_exporter_api_errors_total", &labels),
        Some(1.0)
    );
    assert_eq!(
        m.get("tencentcloud_cdb_exporter_last_poll_success", &[]),
        Some(0.0)
    );
    // The default ceiling is derived from the lookback: 20,000 pages for 24 h.
    assert_eq!(settings().max_pages, 20_000);
    sim.stop().await;
}

#[tokio::test]
async fn a_poll_that_runs_too_long_fails_at_its_deadline() {
    // 600 tasks = 6 pages, each answered after 200 ms: 1.2 s against a 500 ms deadline.
    let tasks = (0..600)
        .map(|i| {
            SimTask::simple(
                10_000 + i,
                "reboot",
                &[A],
                -3_600 + i,
                10,
                TaskStatus::Succeed,
            )
        })
        .collect();
    let faults = Faults {
        slow: 1.0,
        slow_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let (sim, _) = start_sim(with_faults(tasks, faults)).await;
    let mut s = settings();
    s.deadline = Duration::from_millis(500);
    let (mut t, metrics) = target(&sim, s);
    let report = t.poll(&CancellationToken::new()).await;
    assert!(
        matches!(report.failure, Some(Error::Deadline)),
        "{report:?}"
    );
    assert!(report.requests < 6, "{report:?}");
    let m = scrape(&metrics);
    assert_eq!(
        m.get(
            "tencentcloud_cdb_exporter_api_errors_total",
            &[("code", "PollDeadline")]
        ),
        Some(1.0)
    );
    sim.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed_and_the_token_stays_home() {
    let seen: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (other, stop) = serve_on_loopback(move |req: hyper::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push(req.headers().contains_key("x-tc-token"));
            cdb_task_exporter::http::respond(
                hyper::StatusCode::OK,
                "application/json",
                r#"{"Response":{"TotalCount":0,"Items":[],"RequestId":"elsewhere"}}"#,
            )
        }
    })
    .await;
    let faults = Faults {
        always: Some(Fault::Redirect),
        redirect_to: format!("http://{other}/"),
        ..Default::default()
    };
    let (sim, _) = start_sim(with_faults(vec![], faults)).await;
    let (mut t, metrics) = target(&sim, settings());
    let report = t.poll(&CancellationToken::new()).await;
    assert!(
        matches!(report.failure, Some(Error::HttpStatus(307))),
        "{report:?}"
    );
    // One attempt, counted, and nothing sent to the other server.
    assert_eq!(report.requests, 1);
    assert!(seen.lock().unwrap().is_empty());
    let m = scrape(&metrics);
    assert_eq!(
        m.get("tencentcloud_cdb_exporter_api_requests_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "tencentcloud_cdb_exporter_api_errors_total",
            &[("code", "HttpStatus307")]
        ),
        Some(1.0)
    );
    stop.cancel();
    sim.stop().await;
}

#[tokio::test]
async fn absurd_instance_ids_never_become_labels() {
    let huge = format!("cdb-{}", "x".repeat(100_000));
    let tasks = vec![
        SimTask::simple(1, "reboot", &[&huge], -600, 10, TaskStatus::Succeed),
        SimTask::simple(
            2,
            "reboot",
            &["cdb-UPPER\"quote"],
            -500,
            10,
            TaskStatus::Succeed,
        ),
        SimTask::simple(3, "reboot", &[A], -400, 10, TaskStatus::Succeed),
    ];
    let pair = Pair::start(
        with_faults(tasks, Faults::default()),
        "",
        &region("ap-guangzhou", &[]),
    )
    .await;
    let s = pair.exporter.wait_poll_after(0).await;
    assert_eq!(s.tasks(A, "reboot", "succeed"), 1.0);
    let longest = s
        .samples
        .keys()
        .flat_map(|(_, labels)| labels.iter().map(|(_, v)| v.len()))
        .max()
        .unwrap();
    assert!(longest <= 64, "a label value of {longest} bytes");
    assert!(s.text.len() < 1_000_000);
    assert_eq!(
        s.sum(
            "tencentcloud_cdb_exporter_api_errors_total",
            &[("code", "Decode")]
        ),
        2.0
    );
    pair.stop().await;
}

#[tokio::test]
async fn a_stopped_poll_is_cancelled_not_failed() {
    let faults = Faults {
        slow: 1.0,
        slow_delay: Duration::from_secs(5),
        ..Default::default()
    };
    let (sim, _) = start_sim(with_faults(vec![], faults)).await;
    let (mut t, _) = target(&sim, settings());
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stopper.cancel();
    });
    let report = t.poll(&cancel).await;
    assert!(
        matches!(report.failure, Some(Error::Cancelled)),
        "{report:?}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn an_unreadable_state_file_is_left_alone_and_reported() {
    // A directory where the state file should be: it exists but cannot be read as one (as a
    // file without read permission would be for a non-root user).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep-me"), b"saved baseline").unwrap();
    let tasks = vec![SimTask::simple(
        1,
        "reboot",
        &[A],
        -60,
        10,
        TaskStatus::Succeed,
    )];
    let (sim, clock) = start_sim(with_faults(tasks, Faults::default())).await;
    let text = config_text(
        &sim.url(),
        &format!("state_file = {path:?}"),
        &region("ap-guangzhou", &[]),
    );
    let config = cdb_task_exporter::config::Config::from_toml(&text).unwrap();
    let exporter = Exporter::start(config, clock.clone()).await;
    let s = exporter.wait_poll_after(0).await;
    assert_eq!(
        s.get(
            "tencentcloud_cdb_exporter_state_file_errors_total",
            &[("operation", "read")]
        ),
        Some(1.0)
    );
    // Polling goes on; the file is never written over, not even at shutdown.
    assert_eq!(s.tasks(A, "reboot", "succeed"), 1.0);
    exporter.stop().await;
    assert!(path.is_dir());
    assert_eq!(
        std::fs::read(path.join("keep-me")).unwrap(),
        b"saved baseline"
    );
    sim.stop().await;
}

#[tokio::test]
async fn the_landing_page_shows_a_failure_after_a_success() {
    let pair = Pair::start(
        with_faults(vec![], Faults::default()),
        "",
        &region("ap-guangzhou", &[]),
    )
    .await;
    pair.exporter.wait_poll_after(0).await;
    pair.sim.sim.set_faults(Faults {
        always: Some(Fault::ControlChars),
        ..Default::default()
    });
    pair.exporter
        .wait_for(|s| s.get("tencentcloud_cdb_exporter_last_poll_success", &[]) == Some(0.0))
        .await;
    let base = format!("http://{}", pair.exporter.addr);
    let (_, page) = get(&format!("{base}/")).await;
    // The API's strings are shown escaped: no markup, no raw control characters.
    assert!(page.contains("FailedOperation"), "{page}");
    assert!(
        !page.contains('\u{1b}') && !page.contains("<script"),
        "{page}"
    );
    assert!(
        !page.contains("waiting for a first successful poll"),
        "{page}"
    );
    let (status, ready) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "ready once a poll succeeded");
    // The forged code is no label value: it is folded into Other.
    assert!(ready.contains("last error Other"), "{ready}");
    pair.stop().await;
}

#[tokio::test]
async fn connections_are_capped_and_idle_ones_closed() {
    use cdb_task_exporter::http::{ServeOptions, respond, serve};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = |options: ServeOptions| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let handler = |_req| async { respond(hyper::StatusCode::OK, "text/plain", "ok\n") };
        tokio::spawn(serve(listener, handler, stop.clone(), options));
        (addr, stop)
    };
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    // Two idle connections take both slots: a third client waits until one goes.
    let (addr, stop) = start(ServeOptions {
        max_connections: 2,
        idle_timeout: Duration::from_secs(60),
        ..ServeOptions::new(Duration::from_secs(1))
    })
    .await;
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third.write_all(GET).await.unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop(idle1);
    let n = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    stop.cancel();

    // A kept-alive connection that stays idle is closed by the server.
    let (addr, stop) = start(ServeOptions {
        idle_timeout: Duration::from_millis(300),
        ..ServeOptions::new(Duration::from_secs(1))
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(GET).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    stop.cancel();
}

/// A poll that needs its store while a task query (or the state writer) holds it on a blocking
/// thread does not take the async worker with it: the rest of the runtime (the server) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_poll_waiting_for_its_store_does_not_block_the_runtime() {
    let (sim, _) = start_sim(Scenario::default()).await;
    let (mut t, probe) = target(&sim, settings());
    let state = probe.handle.state().clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // A long scan: holds the store until the runtime proves it is still running.
    let holder = std::thread::spawn(move || {
        let _guard = state.lock().unwrap();
        held_tx.send(()).unwrap();
        release_rx.recv_timeout(PATIENCE).is_ok()
    });
    held_rx.recv().unwrap();
    let poll = tokio::spawn(async move { t.poll(&CancellationToken::new()).await });
    // The only worker must still run other tasks while the poll waits for the lock.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = tokio::spawn(async { 42 }).await.unwrap();
    assert_eq!(other, 42);
    release_tx.send(()).unwrap();
    assert!(
        holder.join().unwrap(),
        "the runtime stalled behind the lock"
    );
    let report = poll.await.unwrap();
    assert!(report.failure.is_none(), "{report:?}");
    sim.stop().await;
}

/// An API inventing a new task type for every task cannot grow the series without bound: the
/// first 32 unknown types are labels of their own, the rest count as `other`, and no task is
/// lost from the counts.
#[tokio::test]
async fn invented_task_types_are_bounded_and_nothing_is_lost() {
    let tasks = (0..100)
        .map(|i| {
            SimTask::simple(
                50_000 + i,
                &format!("invented_{i}"),
                &[A],
                -60,
                300,
                TaskStatus::Running,
            )
        })
        .collect();
    let (sim, _) = start_sim(with_faults(tasks, Faults::default())).await;
    let (mut t, metrics) = target(&sim, settings());
    let report = t.poll(&CancellationToken::new()).await;
    assert!(report.failure.is_none(), "{report:?}");
    let m = scrape(&metrics);
    assert_eq!(
        m.sum("tencentcloud_cdb_tasks", &[]),
        100.0,
        "every task still counted"
    );
    let types: std::collections::BTreeSet<String> = m
        .matching("tencentcloud_cdb_tasks", &[])
        .map(|(labels, _)| {
            labels
                .iter()
                .find(|(k, _)| k == "task_type")
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert_eq!(types.len(), 33, "{types:?}");
    assert_eq!(m.tasks(A, "other", "running"), 68.0);
    assert_eq!(
        m.get("tencentcloud_cdb_exporter_task_types_folded_total", &[]),
        Some(68.0)
    );
    sim.stop().await;
}
