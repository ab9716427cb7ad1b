//! Measures the figures the README reports: API requests per steady-state poll cycle, `/metrics`
//! render time and size at 1,000 instances, and resident memory after ingesting 100k tasks.
//!
//! Run: `cargo run --release --example measure`

// A benchmark times itself in real time; clippy.toml's ban on reading the system time is
// for the crate's code.
#![allow(clippy::disallowed_methods)]

use cdb_task_exporter::call::RateLimiter;
use cdb_task_exporter::clock::{Clock, SystemClock};
use cdb_task_exporter::metrics::text::Format;
use cdb_task_exporter::metrics::{Metrics, TargetId, TargetSeries};
use cdb_task_exporter::poller::{PollSettings, Target, TargetParts};
use cdb_task_exporter::secret::Secret;
use cdb_task_exporter::shard::Shard;
use cdb_task_exporter::sim::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, SimTask, Simulator};
use cdb_task_exporter::state::SavedTarget;
use cdb_task_exporter::target::TargetHandle;
use cdb_task_exporter::tasks::{Aggregates, Observation, Scope, TaskStore, add_up_by_key};
use cdb_task_exporter::tencent::Client;
use cdb_task_exporter::tencent::apitime::ApiZone;
use cdb_task_exporter::tencent::client::{ClientOptions, Endpoint};
use cdb_task_exporter::tencent::credentials::{Credential, Provider};
use cdb_task_exporter::tencent::model::{TASK_TYPES, Task, TaskQuery, TaskStatus};
use cdb_task_exporter::tencent::paging::Pager;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn instances(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cdb-inst{i:04}")).collect()
}

/// 2,000 tasks over the last 24 h on 50 instances; 2% still running (long upgrades).
fn fleet_scenario(ids: &[String]) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(42);
    let tasks = (0..2_000)
        .map(|i| {
            let inst = ids[rng.usize(..ids.len())].as_str();
            let (_, _, ty) = TASK_TYPES[rng.usize(..TASK_TYPES.len())];
            let start = -86_000 + i * 43;
            let status = if rng.f64() < 0.02 {
                TaskStatus::Running
            } else {
                TaskStatus::Succeed
            };
            SimTask::simple(100_000 + i, ty, &[inst], start, rng.i64(10..600), status)
        })
        .collect();
    Scenario {
        tasks,
        ..Default::default()
    }
}

fn client(url: &str) -> Client {
    let options = ClientOptions {
        endpoint: Endpoint::parse(url).unwrap(),
        region: "ap-guangzhou".into(),
        zone: ApiZone::beijing(),
        timeout: Duration::from_secs(10),
    };
    let provider = Provider::Static(Credential {
        secret_id: DEFAULT_SECRET_ID.into(),
        secret_key: Secret::new(DEFAULT_SECRET_KEY),
        token: None,
    });
    Client::new(options, Arc::new(provider)).unwrap()
}

async fn requests_per_cycle(listed: Vec<String>, label: &str) {
    let clock = SystemClock::shared();
    let ids = instances(50);
    let sim = Simulator::with_default_keys(fleet_scenario(&ids), clock.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new(false, "measure", "measure"));
    let settings = PollSettings::new(
        Duration::from_secs(60),
        Duration::from_secs(86_400),
        Shard::ALL,
    );
    let state = SavedTarget::new(None, TaskStore::new(Scope::Region, 86_400, clock.now()));
    let handle = TargetHandle::new(
        TargetId {
            account: "m".into(),
            region: "ap-guangzhou".into(),
            product: "cdb",
        },
        Shard::ALL,
        Arc::new(Mutex::new(state)),
        TargetSeries::default(),
    );
    let mut target = Target::new(TargetParts {
        handle: Arc::new(handle),
        instances: listed,
        client: client(&sim.url()),
        limiter: Arc::new(RateLimiter::new(1_000.0)),
        metrics,
        clock: clock.clone(),
        settings,
        persister: None,
    });
    let cancel = CancellationToken::new();
    let first = target.poll(&cancel).await;
    let cycles = 30;
    let mut total = 0;
    for _ in 0..cycles {
        clock.advance(60);
        let r = target.poll(&cancel).await;
        assert!(r.failure.is_none());
        total += r.requests;
    }
    // A full re-list of the lookback, for comparison: every page of a 24 h query.
    let c = client(&sim.url());
    let mut pager = Pager::new(100);
    let mut relist = 0;
    let now = clock.now();
    while let Some(offset) = pager.next_offset() {
        let q = TaskQuery {
            start_time_begin: Some(now - 86_400),
            offset,
            limit: pager.limit(),
            ..Default::default()
        };
        let page = c.describe_tasks(&q).await.unwrap();
        pager.record(page.item_count, page.total_count);
        relist += 1;
    }
    println!(
        "| {label} | {} | {:.2} | {relist} (region-wide), 50 (one per instance) |",
        first.requests,
        total as f64 / f64::from(cycles)
    );
    sim.stop().await;
}

/// Four finished tasks and one running task on each instance, of types in turn.
fn aggregates_of(ids: &[String]) -> Aggregates<'_> {
    let mut aggregates = Aggregates::default();
    for (k, id) in ids.iter().enumerate() {
        for j in 0..4 {
            let (_, _, ty) = TASK_TYPES[(k + j) % TASK_TYPES.len()];
            aggregates
                .tasks
                .push(((id.as_str(), ty, TaskStatus::Succeed), 3));
        }
        let (_, _, ty) = TASK_TYPES[k % TASK_TYPES.len()];
        aggregates
            .tasks
            .push(((id.as_str(), ty, TaskStatus::Running), 1));
        aggregates
            .oldest_unfinished
            .insert((id.as_str(), ty), 1_700_000_000);
    }
    add_up_by_key(&mut aggregates.tasks);
    aggregates
}

fn render_at(n_instances: usize) {
    let metrics = Metrics::new(false, "measure", "measure");
    let ids = instances(n_instances);
    let t = TargetId {
        account: "m".into(),
        region: "ap-guangzhou".into(),
        product: "cdb",
    };
    let aggregates = aggregates_of(&ids);
    let lf: Vec<_> = ids
        .iter()
        .map(|id| ((id.as_str(), "reboot", TaskStatus::Succeed), 1_700_000_000))
        .collect();
    let series = TargetSeries::default();
    let publish = || {
        metrics.publish(
            &t,
            &series,
            ids.iter().map(String::as_str),
            &aggregates,
            lf.clone(),
        );
    };
    publish();
    let body = metrics.render([&series]);
    let rounds = 20;
    let t0 = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(metrics.render([&series]));
    }
    let per = t0.elapsed() / rounds;
    // After a poll changed something, the first scrape encodes everything again.
    let t0 = Instant::now();
    for i in 0..rounds {
        metrics.poll_done(&t, true, i64::from(i), 0.1, 1);
        publish();
        std::hint::black_box(metrics.render([&series]));
    }
    let cold = t0.elapsed() / rounds;
    // The same page in OpenMetrics (what Prometheus asks for): the text page's fastest render
    // beside OpenMetrics', each the minimum of its rounds, taken in turns.
    let (mut text, mut open) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        for (format, best) in [(Format::Text, &mut text), (Format::OpenMetrics, &mut open)] {
            let mut out = Vec::with_capacity(body.len() + body.len() / 8);
            let t0 = Instant::now();
            metrics
                .render_format_to(&mut out, [&series], format)
                .expect("writing to memory");
            *best = (*best).min(t0.elapsed());
            std::hint::black_box(out);
        }
    }
    let series = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    println!(
        "| /metrics at {n_instances} instances | {series} series, {:.1} MiB | {:.1} ms per scrape between polls, {:.1} ms for the first scrape after a poll |",
        body.len() as f64 / 1_048_576.0,
        per.as_secs_f64() * 1000.0,
        cold.as_secs_f64() * 1000.0
    );
    println!(
        "| /metrics at {n_instances} instances, text and OpenMetrics | fastest render | {:.1} ms text, {:.1} ms OpenMetrics ({:+.0}%) |",
        text.as_secs_f64() * 1000.0,
        open.as_secs_f64() * 1000.0,
        (open.as_secs_f64() / text.as_secs_f64() - 1.0) * 100.0
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn memory_100k() -> String {
    let before = rss_kib();
    let ids = instances(200);
    let mut store = TaskStore::new(Scope::Region, 86_400, 0);
    for i in 0..100_000i64 {
        let (_, _, ty) = TASK_TYPES[(i % 12) as usize];
        store.observe(Observation {
            task: Task {
                job_id: i,
                task_type: ty.to_string(),
                status: if i % 50 == 0 {
                    TaskStatus::Running
                } else {
                    TaskStatus::Succeed
                },
                start_time: 1_000_000 + i,
                end_time: (i % 50 != 0).then_some(1_000_100 + i),
                progress: 100,
                instance_ids: vec![ids[(i % 200) as usize].clone()],
                async_request_id: format!("5e4d0000-0000-4000-8000-{i:012x}"),
                code: Some(0),
                message: String::new(),
            },
            via_instance: None,
        });
    }
    let summary = store.summary();
    let after = rss_kib();
    format!(
        "| store with 100k tasks | {} tasks tracked, {} gauge keys | {:.1} MiB RSS growth ({:.1} MiB total) |",
        store.len(),
        summary.tasks.len(),
        (after - before) as f64 / 1024.0,
        after as f64 / 1024.0
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    cdb_task_exporter::install_crypto_provider();
    // Memory first, while the heap is fresh, so that freed memory of the other runs is not reused.
    let memory = memory_100k();
    println!(
        "| measurement | first poll (requests) | steady state (requests per cycle) | full re-list per cycle |"
    );
    println!("|---|---|---|---|");
    requests_per_cycle(vec![], "50 instances, 2,000 tasks/24 h, region-wide").await;
    requests_per_cycle(instances(50), "same, 50 instances listed").await;
    requests_per_cycle(instances(50)[..1].to_vec(), "same, 1 instance listed").await;
    println!();
    println!("| measurement | size | figure |");
    println!("|---|---|---|");
    render_at(1_000);
    println!("{memory}");
}
