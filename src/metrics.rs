//! Every metric of contract §4: names, HELP, labels, series lifetime, behind verb methods.
//! Nothing here knows about JSON or the API; the poller calls the verbs, the server renders.
//!
//! Task gauges are set from per-target aggregates computed after each poll, so a scrape only
//! encodes the series that exist: its cost is proportional to the number of series, never to the
//! number of tasks. Between polls nothing but the process metrics changes, so the encoded text
//! of everything else is cached and re-encoded only after a change (every verb bumps a
//! generation counter). Several targets may share a label set (two accounts polling one region
//! region-wide both have `instance_id=""`), so gauges are merged across targets: counts are
//! summed, the oldest start is the minimum, the last end the maximum.

use crate::tasks::{Finished, Summary};
use crate::tencent::model::{TaskStatus, known_task_type_labels};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Appended to every HELP line.
const FROM_POLL: &str =
    "Values come from a background poll of the CDB DescribeTasks API, not from the scrape.";

/// Appended to the HELP of the process metrics, which, unlike the rest, are read at scrape time.
const PROCESS_NOTE: &str = "Read from the operating system at scrape time; the CDB task values come from a background poll.";

/// Buckets of task durations: seconds to a day.
pub const TASK_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 43200.0, 86400.0,
];

/// Buckets of API request durations.
pub const API_DURATION_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Identity of a target: an account and one of its regions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId {
    /// Account name.
    pub account: String,
    /// Region.
    pub region: String,
}

impl std::fmt::Display for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

type Key4 = [String; 4];
type Key3 = [String; 3];
type Key5 = [String; 5];

/// What one target contributes to the task gauges.
#[derive(Debug, Default)]
struct Contribution {
    /// `tasks` series (zeros included, once seen) and their values.
    tasks: BTreeMap<Key4, u64>,
    oldest: BTreeMap<Key3, i64>,
    last_finished: BTreeMap<Key4, i64>,
    progress: BTreeMap<Key5, f64>,
    /// Instances whose finished counters were created.
    instances: BTreeSet<String>,
    /// Finished counter series created for this target.
    finished: BTreeSet<Key4>,
}

/// The exporter's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tasks: GaugeVec,
    finished: IntCounterVec,
    duration: HistogramVec,
    last_finished: GaugeVec,
    oldest_unfinished: GaugeVec,
    progress: Option<GaugeVec>,
    api_requests: IntCounterVec,
    api_errors: IntCounterVec,
    api_duration: HistogramVec,
    last_poll_success: IntGaugeVec,
    last_success_ts: GaugeVec,
    poll_duration: GaugeVec,
    tasks_tracked: IntGaugeVec,
    book: Mutex<BTreeMap<TargetId, Contribution>>,
    process: Registry,
    generation: AtomicU64,
    cache: Mutex<(u64, Vec<u8>)>,
}

/// Sets a series to `value`, or removes it when there is none.
fn set_or_remove(gauge: &GaugeVec, key: &[String], value: Option<f64>) {
    match value {
        Some(v) => gauge.with_label_values(&refs(key)).set(v),
        None => {
            let _ = gauge.remove_label_values(&refs(key));
        }
    }
}

fn refs(key: &[String]) -> Vec<&str> {
    key.iter().map(String::as_str).collect()
}

fn help(text: &str) -> String {
    format!("{text} {FROM_POLL}")
}

fn gauge(r: &Registry, name: &str, text: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help(text)), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn int_gauge(r: &Registry, name: &str, text: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help(text)), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, text: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help(text)), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    text: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help(text)).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

const TASK_LABELS: &[&str] = &["region", "instance_id", "task_type", "status"];
const TARGET_LABELS: &[&str] = &["account", "region"];
const EX: &str = "tencentcloud_cdb_exporter_";

impl Metrics {
    /// Creates and registers every metric; `task_progress` enables the opt-in progress gauge.
    pub fn new(task_progress: bool, version: &str, revision: &str) -> Metrics {
        let r = Registry::new();
        let progress = task_progress.then(|| {
            gauge(
                &r,
                "tencentcloud_cdb_task_progress_ratio",
                "Progress (0-1) of each unfinished task, by job id.",
                &["region", "instance_id", "task_type", "status", "job_id"],
            )
        });
        let build_info = int_gauge(
            &r,
            &format!("{EX}build_info"),
            "Always 1; labels carry the exporter's version and git revision.",
            &["version", "revision"],
        );
        build_info.with_label_values(&[version, revision]).set(1);
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector");
        Metrics {
            tasks: gauge(
                &r,
                "tencentcloud_cdb_tasks",
                "Tasks that started inside the lookback window or are still unfinished, by their latest known status.",
                TASK_LABELS,
            ),
            finished: counter(
                &r,
                "tencentcloud_cdb_tasks_finished_total",
                "Tasks that reached a terminal status, each job counted once when the exporter first saw it terminal.",
                TASK_LABELS,
            ),
            duration: histogram(
                &r,
                "tencentcloud_cdb_task_duration_seconds",
                "EndTime - StartTime of each task counted in tencentcloud_cdb_tasks_finished_total.",
                &["region", "task_type", "status"],
                TASK_DURATION_BUCKETS,
            ),
            last_finished: gauge(
                &r,
                "tencentcloud_cdb_task_last_finished_timestamp_seconds",
                "EndTime (unix seconds) of the newest finished task seen.",
                TASK_LABELS,
            ),
            oldest_unfinished: gauge(
                &r,
                "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds",
                "StartTime (unix seconds) of the oldest unfinished task; absent when there is none.",
                &["region", "instance_id", "task_type"],
            ),
            progress,
            api_requests: counter(
                &r,
                &format!("{EX}api_requests_total"),
                "HTTP requests sent to the cloud API, retries included.",
                &["account", "region", "action"],
            ),
            api_errors: counter(
                &r,
                &format!("{EX}api_errors_total"),
                "Failed cloud API requests and skipped malformed items, by error code.",
                &["account", "region", "action", "code"],
            ),
            api_duration: histogram(
                &r,
                &format!("{EX}api_request_duration_seconds"),
                "Duration of cloud API requests.",
                &["action"],
                API_DURATION_BUCKETS,
            ),
            last_poll_success: int_gauge(
                &r,
                &format!("{EX}last_poll_success"),
                "1 if the last poll of the target succeeded, else 0.",
                TARGET_LABELS,
            ),
            last_success_ts: gauge(
                &r,
                &format!("{EX}last_successful_poll_timestamp_seconds"),
                "Unix time of the last successful poll of the target.",
                TARGET_LABELS,
            ),
            poll_duration: gauge(
                &r,
                &format!("{EX}poll_duration_seconds"),
                "Duration of the last poll of the target.",
                TARGET_LABELS,
            ),
            tasks_tracked: int_gauge(
                &r,
                &format!("{EX}tasks_tracked"),
                "Tasks held in memory for the target.",
                TARGET_LABELS,
            ),
            registry: r,
            book: Mutex::new(BTreeMap::new()),
            process,
            generation: AtomicU64::new(1),
            cache: Mutex::new((0, Vec::new())),
        }
    }

    /// Marks the exposition as changed.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut cache = self.cache.lock().expect("lock");
        if cache.0 != generation {
            let mut buf = Vec::with_capacity(cache.1.len().max(64 * 1024));
            TextEncoder::new()
                .encode(&self.registry.gather(), &mut buf)
                .expect("text encoding cannot fail");
            *cache = (generation, buf);
        }
        let mut out = Vec::with_capacity(cache.1.len() + 2048);
        out.extend_from_slice(&cache.1);
        drop(cache);
        let mut process = self.process.gather();
        for family in &mut process {
            let help = format!("{} {PROCESS_NOTE}", family.help());
            family.set_help(help);
        }
        TextEncoder::new()
            .encode(&process, &mut out)
            .expect("text encoding cannot fail");
        out
    }

    /// One HTTP attempt to the API and how long it took.
    pub fn api_request(&self, t: &TargetId, action: &str, seconds: f64) {
        self.changed();
        self.api_requests
            .with_label_values(&[&t.account, &t.region, action])
            .inc();
        self.api_duration
            .with_label_values(&[action])
            .observe(seconds);
    }

    /// `n` API errors with this code (a failed attempt, or malformed items with `Decode`).
    pub fn api_errors(&self, t: &TargetId, action: &str, code: &str, n: u64) {
        self.changed();
        self.api_errors
            .with_label_values(&[&t.account, &t.region, action, code])
            .inc_by(n);
    }

    /// The end of a poll of a target.
    pub fn poll_done(&self, t: &TargetId, ok: bool, now: i64, seconds: f64, tracked: usize) {
        self.changed();
        let labels = [t.account.as_str(), t.region.as_str()];
        self.last_poll_success
            .with_label_values(&labels)
            .set(i64::from(ok));
        if ok {
            self.last_success_ts
                .with_label_values(&labels)
                .set(now as f64);
        }
        self.poll_duration.with_label_values(&labels).set(seconds);
        self.tasks_tracked
            .with_label_values(&labels)
            .set(tracked as i64);
    }

    /// A task finished: count it once under each of its instances, observe its duration once.
    pub fn task_finished(&self, t: &TargetId, f: &Finished) {
        self.changed();
        let region = t.region.as_str();
        let mut book = self.book.lock().expect("lock");
        let c = book.entry(t.clone()).or_default();
        for i in &f.instances {
            self.finished
                .with_label_values(&[region, i, &f.task_type, f.status.as_str()])
                .inc();
            c.finished.insert([
                region.to_string(),
                i.clone(),
                f.task_type.clone(),
                f.status.as_str().to_string(),
            ]);
        }
        if let Some(d) = f.duration {
            self.duration
                .with_label_values(&[region, &f.task_type, f.status.as_str()])
                .observe(d as f64);
        }
    }

    /// Creates the finished counters at 0 for an instance: 12 known types x 4 terminal statuses,
    /// so `increase()` sees its first failure.
    pub fn monitor_instance(&self, t: &TargetId, instance: &str) {
        self.changed();
        let mut book = self.book.lock().expect("lock");
        let c = book.entry(t.clone()).or_default();
        if c.instances.insert(instance.to_string()) {
            for ty in known_task_type_labels() {
                for st in TaskStatus::TERMINAL {
                    let key = [
                        t.region.clone(),
                        instance.to_string(),
                        ty.to_string(),
                        st.as_str().to_string(),
                    ];
                    self.finished.with_label_values(&refs(&key));
                    c.finished.insert(key);
                }
            }
        }
    }

    /// Sets the task gauges from a target's aggregates after a poll.
    pub fn set_tasks<'a>(
        &self,
        t: &TargetId,
        summary: &Summary,
        last_finished: impl Iterator<Item = ((&'a str, &'a str, TaskStatus), i64)>,
    ) {
        self.changed();
        let region = &t.region;
        let mut book = self.book.lock().expect("lock");
        let c = book.entry(t.clone()).or_default();
        let mut touched_tasks: BTreeSet<Key4> = c.tasks.keys().cloned().collect();
        for v in c.tasks.values_mut() {
            *v = 0; // series once seen stay, at 0
        }
        for ((i, ty, st), n) in &summary.tasks {
            let key = [
                region.clone(),
                i.clone(),
                ty.clone(),
                st.as_str().to_string(),
            ];
            c.tasks.insert(key.clone(), *n);
            touched_tasks.insert(key);
        }
        let mut touched_oldest: BTreeSet<Key3> =
            std::mem::take(&mut c.oldest).into_keys().collect();
        for ((i, ty), start) in &summary.oldest_unfinished {
            let key = [region.clone(), i.clone(), ty.clone()];
            c.oldest.insert(key.clone(), *start);
            touched_oldest.insert(key);
        }
        let mut touched_lf = BTreeSet::new();
        for ((i, ty, st), end) in last_finished {
            let key = [
                region.clone(),
                i.to_string(),
                ty.to_string(),
                st.as_str().to_string(),
            ];
            c.last_finished.insert(key.clone(), end);
            touched_lf.insert(key);
        }
        let mut touched_progress: BTreeSet<Key5> =
            std::mem::take(&mut c.progress).into_keys().collect();
        if self.progress.is_some() {
            for ((i, ty, st), job, p) in &summary.progress {
                let key = [
                    region.clone(),
                    i.clone(),
                    ty.clone(),
                    st.as_str().to_string(),
                    job.to_string(),
                ];
                c.progress.insert(key.clone(), *p as f64 / 100.0);
                touched_progress.insert(key);
            }
        }
        self.refresh(
            &book,
            &touched_tasks,
            &touched_oldest,
            &touched_lf,
            &touched_progress,
        );
    }

    /// Removes every series a target contributed (its instances left the config).
    pub fn remove_target(&self, t: &TargetId) {
        self.changed();
        let mut book = self.book.lock().expect("lock");
        let Some(c) = book.remove(t) else { return };
        let tasks: BTreeSet<Key4> = c.tasks.into_keys().collect();
        let oldest: BTreeSet<Key3> = c.oldest.into_keys().collect();
        let lf: BTreeSet<Key4> = c.last_finished.into_keys().collect();
        let progress: BTreeSet<Key5> = c.progress.into_keys().collect();
        self.refresh(&book, &tasks, &oldest, &lf, &progress);
        let still_counted: BTreeSet<&Key4> =
            book.values().flat_map(|c| c.finished.iter()).collect();
        for key in &c.finished {
            if !still_counted.contains(key) {
                let _ = self.finished.remove_label_values(&refs(key));
            }
        }
        let labels = [t.account.as_str(), t.region.as_str()];
        let _ = self.last_poll_success.remove_label_values(&labels);
        let _ = self.last_success_ts.remove_label_values(&labels);
        let _ = self.poll_duration.remove_label_values(&labels);
        let _ = self.tasks_tracked.remove_label_values(&labels);
    }

    /// Re-derives the given series from every target's contribution.
    fn refresh(
        &self,
        book: &BTreeMap<TargetId, Contribution>,
        tasks: &BTreeSet<Key4>,
        oldest: &BTreeSet<Key3>,
        last_finished: &BTreeSet<Key4>,
        progress: &BTreeSet<Key5>,
    ) {
        let targets = || book.values();
        for key in tasks {
            let present: Vec<u64> = targets()
                .filter_map(|c| c.tasks.get(key).copied())
                .collect();
            let sum = (!present.is_empty()).then(|| present.iter().sum::<u64>() as f64);
            set_or_remove(&self.tasks, key, sum);
        }
        for key in oldest {
            let min = targets().filter_map(|c| c.oldest.get(key)).min();
            set_or_remove(&self.oldest_unfinished, key, min.map(|v| *v as f64));
        }
        for key in last_finished {
            let max = targets().filter_map(|c| c.last_finished.get(key)).max();
            set_or_remove(&self.last_finished, key, max.map(|v| *v as f64));
        }
        if let Some(p) = &self.progress {
            for key in progress {
                set_or_remove(p, key, targets().find_map(|c| c.progress.get(key)).copied());
            }
        }
    }
}
