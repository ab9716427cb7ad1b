//! Every metric of docs/metrics.md: names, HELP, labels, series lifetime, behind verb methods.
//! In three parts: the self-metrics here (a table of definitions), a target's task series in
//! `book` ([`TargetSeries`]), and the text format in [`text`], written by `render`.
//! Nothing here knows about JSON or the API; the poller calls the verbs, the server renders.
//!
//! # Two kinds of metric, two mechanisms
//!
//! The self-metrics (`tencentcloud_cdb_exporter_*`, a few series per target) live in a
//! `prometheus` crate registry, and so does the process collector.
//!
//! The task families can have tens of thousands of series (48 zero-initialised counters per
//! instance alone), so they bypass the general machinery: each target keeps a compact `Book`
//! (instance ids stored once, counters in dense arrays indexed by task type and terminal status),
//! and at the end of each poll publishes an immutable [`Series`] snapshot behind an `Arc`. A
//! scrape takes the current snapshots and writes the text straight from them, so it never sees a
//! poll half-applied (counters and gauges of one poll are published together), never blocks a
//! poll while it writes, and needs no cache of a large page: the text is streamed out in chunks
//! ([`Metrics::render_to`]). A small page (up to [`SMALL_PAGE_SERIES`]) keeps its rendered task
//! families until a snapshot changes, so a scrape between polls costs a copy.
//!
//! Several targets may share a label set (two accounts polling one region region-wide both have
//! `instance_id=""`), so series are merged across the targets of a region when rendered: counts
//! and counters are summed, the oldest start is the minimum, the last end the maximum.

mod book;
mod chunked;
mod gzip;
mod kept;
mod render;
mod series;
pub mod text;

use crate::tasks::{Aggregates, KeyRef};
use book::Inventory;
pub use book::{SavedCounters, SavedDuration, SavedFinished, TargetSeries};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
pub use series::Series;
use std::io::{self, Write};
use std::sync::Arc;
use text::{Exposition, OpenMetrics, Text};
pub use text::{Format, negotiate};

/// Appended to every HELP line.
const FROM_POLL: &str = "Values come from a background poll of the cloud API's task and instance lists, not from the scrape.";

/// Appended to the HELP of the process metrics, which, unlike the rest, are read at scrape time.
const PROCESS_NOTE: &str = "Read from the operating system at scrape time; the CDB task values come from a background poll.";

/// The most instances one target monitors with zero series (48 each): a region of more, or a
/// server naming more, gets no zeros for the rest (counted in `instances_over_limit`).
pub const MAX_MONITORED_INSTANCES: usize = 20_000;

/// Buckets of task durations: seconds to a day.
pub const TASK_DURATION_BUCKETS: [f64; 16] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 43200.0, 86400.0,
];

/// Buckets of API request durations.
pub const API_DURATION_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub use crate::domain::TargetId;

/// The exporter's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    api_requests: IntCounterVec,
    api_errors: IntCounterVec,
    api_duration: HistogramVec,
    last_poll_success: IntGaugeVec,
    last_success_ts: GaugeVec,
    poll_duration: GaugeVec,
    tasks_tracked: IntGaugeVec,
    instances_over_limit: IntGaugeVec,
    task_types_folded: IntCounterVec,
    api_clock_skew: IntGaugeVec,
    shard_info: IntGaugeVec,
    total_shards: prometheus::Gauge,
    shard_ordinal: prometheus::Gauge,
    state_file_errors: IntCounterVec,
    reload_successful: prometheus::Gauge,
    reload_success_ts: prometheus::Gauge,
    process: Registry,
    task_progress: bool,
    /// The task families of a small page as last rendered in each format (text, OpenMetrics),
    /// and the snapshots they came from.
    small_page: std::sync::Mutex<[Option<RenderedTasks>; 2]>,
    /// The task and info families deflated, as last sent in each format (text, OpenMetrics).
    kept_gzip: std::sync::Mutex<[kept::Kept; 2]>,
}

/// Compression level of a gzipped page: the fastest. The exposition format is so repetitive
/// that level 1 already shrinks it about 20 times, and a scrape of 10,000 instances should not
/// spend a core on the last few percent.
pub const GZIP_LEVEL: flate2::Compression = flate2::Compression::fast();

/// A target's snapshot built by [`Metrics::stage`], not shown yet.
#[derive(Debug)]
pub struct Staged(Arc<Series>);

/// Pages of up to this many task samples are small: their task families are kept rendered
/// between polls (at most about 1 MiB), and the server renders them at once instead of
/// streaming. A larger page is never held whole: gzipped, it is sent from the deflated pieces
/// that publications keep (about a twentieth of the text); uncompressed, it is rendered afresh,
/// in chunks, at every scrape.
pub const SMALL_PAGE_SERIES: usize = 8_000;

/// Rendered task families, valid while the targets' snapshots are the same `Arc`s (a snapshot
/// is immutable; a poll or a listing replaces it). It holds them, so that an address is never
/// reused by another snapshot while it is compared.
#[derive(Debug)]
struct RenderedTasks {
    snapshots: Vec<Arc<Series>>,
    inventories: Vec<Arc<Inventory>>,
    text: Arc<[u8]>,
}

impl RenderedTasks {
    fn of(&self, snapshots: &[Arc<Series>], inventories: &[Arc<Inventory>]) -> bool {
        fn same<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
        }
        same(&self.snapshots, snapshots) && same(&self.inventories, inventories)
    }
}

/// One self-metric as it is registered: name (after `tencentcloud_cdb_exporter_`), HELP and
/// label names. The table below lists them all.
#[derive(Debug, Clone, Copy)]
struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const TARGET: &[&str] = &["account", "region", "product"];
const BUILD_INFO: Def = Def {
    name: "build_info",
    help: "Always 1; labels carry the exporter's version and git revision.",
    labels: &["version", "revision"],
};
const API_REQUESTS: Def = Def {
    name: "api_requests_total",
    help: "HTTP requests sent to the cloud API, retries included.",
    labels: &["account", "region", "product", "action"],
};
const API_ERRORS: Def = Def {
    name: "api_errors_total",
    help: "Failed cloud API requests and skipped malformed items, by error code.",
    labels: &["account", "region", "product", "action", "code"],
};
const API_DURATION: Def = Def {
    name: "api_request_duration_seconds",
    help: "Duration of cloud API requests.",
    labels: &["product", "action"],
};
const LAST_POLL_SUCCESS: Def = Def {
    name: "last_poll_success",
    help: "1 if the last poll of the target succeeded, else 0.",
    labels: TARGET,
};
const LAST_SUCCESS_TS: Def = Def {
    name: "last_successful_poll_timestamp_seconds",
    help: "Unix time of the last successful poll of the target.",
    labels: TARGET,
};
const POLL_DURATION: Def = Def {
    name: "poll_duration_seconds",
    help: "Duration of the last poll of the target.",
    labels: TARGET,
};
const TASKS_TRACKED: Def = Def {
    name: "tasks_tracked",
    help: "Tasks held in memory for the target.",
    labels: TARGET,
};
const INSTANCES_OVER_LIMIT: Def = Def {
    name: "instances_over_limit",
    help: "Instances of the target past the limit of monitored instances: they get no zero series, only those of their own tasks.",
    labels: TARGET,
};
const TASK_TYPES_FOLDED: Def = Def {
    name: "task_types_folded_total",
    help: "Task observations whose type was counted as task_type=\"other\": the target already had the most unknown task types it keeps as labels.",
    labels: TARGET,
};
const API_CLOCK_SKEW: Def = Def {
    name: "api_clock_skew_seconds",
    help: "The API's clock minus this host's, from the Date header of its answers; signing and windows are corrected by it.",
    labels: TARGET,
};
const SHARD_INFO: Def = Def {
    name: "shard_info",
    help: "Always 1; labels carry this process's shard and the number of shards.",
    labels: &["shard", "total_shards"],
};
const TOTAL_SHARDS: Def = Def {
    name: "total_shards",
    help: "The number of shards this process's configuration splits the instances into (sharding.total_shards).",
    labels: &[],
};
const SHARD_ORDINAL: Def = Def {
    name: "shard_ordinal",
    help: "This process's shard, 0 to total_shards - 1.",
    labels: &[],
};
const STATE_FILE_ERRORS: Def = Def {
    name: "state_file_errors_total",
    help: "Failed reads and writes of the state file, by operation; a failed read turns persistence off for the run.",
    labels: &["operation"],
};
const RELOAD_SUCCESSFUL: Def = Def {
    name: "config_last_reload_successful",
    help: "1 if the last configuration load (start-up or SIGHUP) was applied, 0 if it was rejected and the previous one still runs.",
    labels: &[],
};
const RELOAD_SUCCESS_TS: Def = Def {
    name: "config_last_reload_success_timestamp_seconds",
    help: "Unix time of the last configuration load that was applied.",
    labels: &[],
};

impl Def {
    fn opts(&self) -> Opts {
        Opts::new(
            format!("tencentcloud_cdb_exporter_{}", self.name),
            format!("{} {FROM_POLL}", self.help),
        )
    }
}

/// Registers `m` in `r` and returns it.
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

/// Makes and registers one metric vector of `def`.
fn vec<M: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    def: &Def,
    make: impl FnOnce(Opts, &[&str]) -> prometheus::Result<M>,
) -> M {
    register(r, make(def.opts(), def.labels).expect("valid metric"))
}

/// Removes every series of `vec` labelled with the target's account, region and product,
/// whatever its other labels.
fn remove_target_series<B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    t: &TargetId,
) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("account") == Some(&t.account.as_str())
                && labels.get("region") == Some(&t.region.as_str())
                && labels.get("product") == Some(&t.product)
            {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// The standard process collector, in a registry of its own (read at scrape time, unlike the
/// rest).
fn process_registry() -> Registry {
    let process = Registry::new();
    #[cfg(target_os = "linux")]
    process
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector");
    process
}

impl Metrics {
    /// Creates and registers every metric; `task_progress` enables the opt-in progress gauge.
    pub fn new(task_progress: bool, version: &str, revision: &str) -> Metrics {
        let r = Registry::new();
        let build_info = vec(&r, &BUILD_INFO, IntGaugeVec::new);
        build_info.with_label_values(&[version, revision]).set(1);
        let api_duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::from(API_DURATION.opts()).buckets(API_DURATION_BUCKETS.to_vec()),
                API_DURATION.labels,
            )
            .expect("valid metric"),
        );
        let single = |def: &Def| {
            register(
                &r,
                prometheus::Gauge::with_opts(def.opts()).expect("valid metric"),
            )
        };
        Metrics {
            api_requests: vec(&r, &API_REQUESTS, IntCounterVec::new),
            api_errors: vec(&r, &API_ERRORS, IntCounterVec::new),
            api_duration,
            last_poll_success: vec(&r, &LAST_POLL_SUCCESS, IntGaugeVec::new),
            last_success_ts: vec(&r, &LAST_SUCCESS_TS, GaugeVec::new),
            poll_duration: vec(&r, &POLL_DURATION, GaugeVec::new),
            tasks_tracked: vec(&r, &TASKS_TRACKED, IntGaugeVec::new),
            instances_over_limit: vec(&r, &INSTANCES_OVER_LIMIT, IntGaugeVec::new),
            task_types_folded: vec(&r, &TASK_TYPES_FOLDED, IntCounterVec::new),
            api_clock_skew: vec(&r, &API_CLOCK_SKEW, IntGaugeVec::new),
            shard_info: vec(&r, &SHARD_INFO, IntGaugeVec::new),
            total_shards: single(&TOTAL_SHARDS),
            shard_ordinal: single(&SHARD_ORDINAL),
            state_file_errors: vec(&r, &STATE_FILE_ERRORS, IntCounterVec::new),
            reload_successful: single(&RELOAD_SUCCESSFUL),
            reload_success_ts: single(&RELOAD_SUCCESS_TS),
            process: process_registry(),
            task_progress,
            small_page: std::sync::Mutex::new([None, None]),
            kept_gzip: std::sync::Mutex::default(),
            registry: r,
        }
    }

    /// Sets `shard_info` (one series; a reload that changes the sharding replaces it), and the
    /// `total_shards` and `shard_ordinal` gauges that PromQL can compare.
    pub fn shard(&self, shard: u32, total_shards: u32) {
        self.shard_info.reset();
        self.shard_info
            .with_label_values(&[&shard.to_string(), &total_shards.to_string()])
            .set(1);
        self.total_shards.set(f64::from(total_shards));
        self.shard_ordinal.set(f64::from(shard));
    }

    /// A configuration load (start-up or reload) at `at` was applied, or rejected.
    pub fn config_loaded(&self, applied: bool, at: i64) {
        self.reload_successful.set(f64::from(u8::from(applied)));
        if applied {
            self.reload_success_ts.set(at as f64);
        }
    }

    /// A failed read or write (`operation`) of the state file.
    pub fn state_file_error(&self, operation: &str) {
        self.state_file_errors.with_label_values(&[operation]).inc();
    }

    /// One HTTP attempt to the API and how long it took.
    pub fn api_request(&self, t: &TargetId, action: &str, seconds: f64) {
        self.api_requests
            .with_label_values(&[t.account.as_str(), t.region.as_str(), t.product, action])
            .inc();
        self.api_duration
            .with_label_values(&[t.product, action])
            .observe(seconds);
    }

    /// `n` API errors with this code (a failed attempt, or malformed items with `Decode`).
    pub fn api_errors(&self, t: &TargetId, action: &str, code: &str, n: u64) {
        self.api_errors
            .with_label_values(&[
                t.account.as_str(),
                t.region.as_str(),
                t.product,
                action,
                code,
            ])
            .inc_by(n);
    }

    /// The end of a poll of a target.
    pub fn poll_done(&self, t: &TargetId, ok: bool, now: i64, seconds: f64, tracked: usize) {
        let labels = [t.account.as_str(), t.region.as_str(), t.product];
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

    /// `n` task observations of a target had their type folded into `other`.
    pub fn task_types_folded(&self, t: &TargetId, n: u64) {
        self.task_types_folded
            .with_label_values(&[t.account.as_str(), t.region.as_str(), t.product])
            .inc_by(n);
    }

    /// The API's clock minus this host's, as a target's answers tell it (docs/semantics.md#clock-skew).
    pub fn api_clock_skew(&self, t: &TargetId, seconds: i64) {
        self.api_clock_skew
            .with_label_values(&[t.account.as_str(), t.region.as_str(), t.product])
            .set(seconds);
    }

    /// Publishes a target's task series after a poll: `monitored` instances get their 48 zero
    /// counters (so `increase()` sees a first failure), the gauges are set from the store's
    /// aggregates, and the whole set replaces the target's previous snapshot at once.
    /// [`Metrics::stage`] then [`Metrics::promote`].
    pub fn publish<'a>(
        &self,
        t: &TargetId,
        series: &TargetSeries,
        monitored: impl IntoIterator<Item = &'a str>,
        aggregates: &Aggregates<'_>,
        last_finished: impl IntoIterator<Item = (KeyRef<'a>, i64)>,
    ) {
        let staged = self.stage(t, series, monitored, aggregates, last_finished);
        self.promote(series, staged);
    }

    /// Builds the snapshot [`Metrics::publish`] describes without showing it yet.
    pub fn stage<'a>(
        &self,
        t: &TargetId,
        series: &TargetSeries,
        monitored: impl IntoIterator<Item = &'a str>,
        aggregates: &Aggregates<'_>,
        last_finished: impl IntoIterator<Item = (KeyRef<'a>, i64)>,
    ) -> Staged {
        let (snapshot, over) = series.build(
            &t.region,
            monitored,
            aggregates,
            last_finished,
            self.task_progress,
        );
        self.instances_over_limit
            .with_label_values(&[t.account.as_str(), t.region.as_str(), t.product])
            .set(over);
        Staged(snapshot)
    }

    /// Whether [`Metrics::promote`] deflates (a gzip scrape has asked for a large page): then
    /// it takes tens of milliseconds at a thousand instances, and belongs on a blocking thread.
    pub fn deflates(&self) -> bool {
        self.kept_gzip
            .lock()
            .expect("lock")
            .iter()
            .any(kept::Kept::is_used)
    }

    /// Shows a staged snapshot in place of the target's previous one. Its region's families
    /// are deflated first, in each format a gzip scrape has asked for, so that a scrape finds
    /// them kept: until the swap, scrapes get the previous snapshot and its kept pieces, whole.
    pub fn promote(&self, series: &TargetSeries, staged: Staged) {
        let current = staged.0;
        let previous = series.snapshot().0;
        let mut replaced = [false; 2];
        if let Some(previous) = &previous {
            for format in [Format::Text, Format::OpenMetrics] {
                let ix = usize::from(format == Format::OpenMetrics);
                let group = self.kept_gzip.lock().expect("lock")[ix].successor(previous, &current);
                if let Some(group) = group {
                    let region = kept::Kept::deflate_region(format, group, self.task_progress);
                    self.kept_gzip.lock().expect("lock")[ix].add(region);
                    replaced[ix] = true;
                }
            }
        }
        series.show(current);
        if let Some(previous) = &previous {
            let mut kept = self.kept_gzip.lock().expect("lock");
            for (k, replaced) in kept.iter_mut().zip(replaced) {
                if replaced {
                    k.forget(previous);
                }
            }
        }
    }

    /// Removes the gauges of a target that restarts (its next poll sets them again).
    pub fn target_restarted(&self, t: &TargetId) {
        remove_target_series(&self.last_poll_success, t);
        remove_target_series(&self.last_success_ts, t);
        remove_target_series(&self.poll_duration, t);
        remove_target_series(&self.tasks_tracked, t);
        remove_target_series(&self.instances_over_limit, t);
        remove_target_series(&self.api_clock_skew, t);
    }

    /// Removes every self-metric series of a target that left the config, counters included
    /// (its task series leave with its [`TargetSeries`]).
    pub fn forget_target(&self, t: &TargetId) {
        self.target_restarted(t);
        remove_target_series(&self.api_requests, t);
        remove_target_series(&self.api_errors, t);
        remove_target_series(&self.task_types_folded, t);
    }

    /// The text exposition of every metric, whole.
    pub fn render<'a>(&self, targets: impl IntoIterator<Item = &'a TargetSeries>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        self.render_to(&mut out, targets)
            .expect("writing to memory");
        out
    }

    /// Writes the text exposition to `w`: the self-metrics, the task families from the latest
    /// snapshot of every target, then the process metrics. Stops at the first write error (a
    /// client that went away).
    pub fn render_to<'a>(
        &self,
        w: &mut impl Write,
        targets: impl IntoIterator<Item = &'a TargetSeries>,
    ) -> io::Result<()> {
        self.render_format_to(w, targets, Format::Text)
    }

    /// Writes the page in `format` to `w`: the same series and values in either, OpenMetrics
    /// with the exemplars of the finished counters and duration buckets. A small page is its
    /// parts ([`Metrics::small_page`]); a large one is rendered as it is written.
    pub fn render_format_to<'a>(
        &self,
        w: &mut impl Write,
        targets: impl IntoIterator<Item = &'a TargetSeries>,
        format: Format,
    ) -> io::Result<()> {
        // The self-metrics first, the snapshots after: a poll publishes its snapshot before it
        // sets its success time, so a page that shows a poll's success also shows its tasks.
        let own = self.registry.gather();
        let (snapshots, inventories) = snapshots_of(targets);
        if is_small(&snapshots, &inventories) {
            for part in self.small_parts(&own, &snapshots, &inventories, format) {
                w.write_all(&part)?;
            }
            return w.flush();
        }
        match format {
            Format::Text => self.page(&mut Text::new(w), &own, &snapshots, &inventories),
            Format::OpenMetrics => {
                self.page(&mut OpenMetrics::new(w), &own, &snapshots, &inventories)
            }
        }
    }

    /// A small page in `format` as its three parts: the self-metrics, the task families as
    /// kept (shared with the scrapes that follow, not copied), then the process metrics and the
    /// page's end. `None` when the page is large (over [`SMALL_PAGE_SERIES`]): stream it with
    /// [`Metrics::render_format_to`].
    pub fn small_page<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a TargetSeries>,
        format: Format,
    ) -> Option<[bytes::Bytes; 3]> {
        let own = self.registry.gather();
        let (snapshots, inventories) = snapshots_of(targets);
        is_small(&snapshots, &inventories)
            .then(|| self.small_parts(&own, &snapshots, &inventories, format))
    }

    /// Whether the page of `targets` is small (up to [`SMALL_PAGE_SERIES`] task samples).
    pub fn is_small<'a>(&self, targets: impl IntoIterator<Item = &'a TargetSeries>) -> bool {
        let (snapshots, inventories) = snapshots_of(targets);
        is_small(&snapshots, &inventories)
    }

    fn small_parts(
        &self,
        own: &[prometheus::proto::MetricFamily],
        snapshots: &[Arc<Series>],
        inventories: &[Arc<Inventory>],
        format: Format,
    ) -> [bytes::Bytes; 3] {
        let kept = self.small_task_text(snapshots, inventories, format);
        let (head, tail) = self.head_and_tail(own, format);
        [head.into(), bytes::Bytes::from_owner(kept), tail.into()]
    }

    /// The whole page in `format`, gzipped, as parts to send in order (one gzip member). The
    /// task and info families come deflated as kept from the last gzip scrape in that format
    /// wherever their snapshots are unchanged, so a scrape between two polls deflates only the
    /// self-metrics and the process metrics.
    pub fn gzip_page<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a TargetSeries>,
        format: Format,
    ) -> Vec<bytes::Bytes> {
        let own = self.registry.gather();
        let (snapshots, inventories) = snapshots_of(targets);
        let (head, tail) = self.head_and_tail(&own, format);
        let mut page = gzip::GzPage::new(GZIP_LEVEL);
        page.text(&head);
        self.kept_gzip.lock().expect("lock")[usize::from(format == Format::OpenMetrics)].write(
            &mut page,
            format,
            (&snapshots, &inventories),
            self.task_progress,
        );
        page.text(&tail);
        page.finish()
    }

    /// The self-metrics, and the process metrics with the page's end, in `format`.
    fn head_and_tail(
        &self,
        own: &[prometheus::proto::MetricFamily],
        format: Format,
    ) -> (Vec<u8>, Vec<u8>) {
        let (mut head, mut tail) = (Vec::with_capacity(16 * 1024), Vec::with_capacity(4 * 1024));
        match format {
            Format::Text => self.ends(&mut Text::new(&mut head), own, &mut Text::new(&mut tail)),
            Format::OpenMetrics => self.ends(
                &mut OpenMetrics::new(&mut head),
                own,
                &mut OpenMetrics::new(&mut tail),
            ),
        }
        .expect("writing to memory");
        (head, tail)
    }

    /// A large page in the format `out` writes: the self-metrics, the task families rendered
    /// now, the process metrics.
    fn page(
        &self,
        out: &mut impl Exposition,
        own: &[prometheus::proto::MetricFamily],
        snapshots: &[Arc<Series>],
        inventories: &[Arc<Inventory>],
    ) -> io::Result<()> {
        render::gathered(out, own, "")?;
        render::render_tasks(out, snapshots, self.task_progress)?;
        render::render_instances(out, inventories)?;
        self.tail(out)
    }

    /// The self-metrics into `head`, the process metrics and the page's end into `tail`.
    fn ends<E: Exposition>(
        &self,
        head: &mut E,
        own: &[prometheus::proto::MetricFamily],
        tail: &mut E,
    ) -> io::Result<()> {
        render::gathered(head, own, "")?;
        self.tail(tail)
    }

    /// The process metrics, then the page's end.
    fn tail(&self, out: &mut impl Exposition) -> io::Result<()> {
        render::gathered(out, &self.process.gather(), PROCESS_NOTE)?;
        out.finish()
    }
}

/// The latest snapshots and listings of `targets`.
fn snapshots_of<'a>(
    targets: impl IntoIterator<Item = &'a TargetSeries>,
) -> (Vec<Arc<Series>>, Vec<Arc<Inventory>>) {
    let (snapshots, inventories): (Vec<_>, Vec<_>) =
        targets.into_iter().map(TargetSeries::snapshot).unzip();
    (
        snapshots.into_iter().flatten().collect(),
        inventories.into_iter().flatten().collect(),
    )
}

/// Whether a page of these is small: up to [`SMALL_PAGE_SERIES`] task and listing samples.
fn is_small(snapshots: &[Arc<Series>], inventories: &[Arc<Inventory>]) -> bool {
    let samples: usize = snapshots.iter().map(|s| s.series_count()).sum::<usize>()
        + inventories.iter().map(|i| i.instances.len()).sum::<usize>();
    samples <= SMALL_PAGE_SERIES
}

impl Metrics {
    /// The task and instance families of a small page in `format`: kept from the last scrape
    /// in that format while no snapshot changed, else rendered and kept. (Prometheus asks for
    /// OpenMetrics; a browser or curl for the text format.)
    fn small_task_text(
        &self,
        snapshots: &[Arc<Series>],
        inventories: &[Arc<Inventory>],
        format: Format,
    ) -> Arc<[u8]> {
        let mut pages = self.small_page.lock().expect("lock");
        let kept = &mut pages[usize::from(format == Format::OpenMetrics)];
        if let Some(r) = kept.as_ref().filter(|r| r.of(snapshots, inventories)) {
            return r.text.clone();
        }
        let text: Arc<[u8]> = match format {
            Format::Text => self
                .task_families(
                    Text::new(Vec::with_capacity(64 * 1024)),
                    snapshots,
                    inventories,
                )
                .into_inner(),
            Format::OpenMetrics => self
                .task_families(
                    OpenMetrics::new(Vec::with_capacity(64 * 1024)),
                    snapshots,
                    inventories,
                )
                .into_inner(),
        }
        .into();
        *kept = Some(RenderedTasks {
            snapshots: snapshots.to_vec(),
            inventories: inventories.to_vec(),
            text: text.clone(),
        });
        text
    }

    /// The task and instance families of `snapshots`, written by `out` into memory.
    fn task_families<E: Exposition>(
        &self,
        mut out: E,
        snapshots: &[Arc<Series>],
        inventories: &[Arc<Inventory>],
    ) -> E {
        render::render_tasks(&mut out, snapshots, self.task_progress)
            .and_then(|()| render::render_instances(&mut out, inventories))
            .expect("writing to memory");
        out
    }
}

#[cfg(test)]
mod tests;
