//! Every metric of docs/metrics.md: names, HELP, labels, series lifetime, behind verb methods.
//! Nothing here knows about JSON or the API; the poller calls the verbs, the server renders.
//!
//! # Two kinds of metric, two mechanisms
//!
//! The self-metrics (`tencentcloud_cdb_exporter_*`, a few series per target) live in a
//! `prometheus` crate registry, and so does the process collector.
//!
//! The task families can have tens of thousands of series (48 zero-initialised counters per
//! instance alone), so they bypass the general machinery: each target keeps a compact [`Book`]
//! (instance ids stored once, counters in dense arrays indexed by task type and terminal status),
//! and at the end of each poll publishes an immutable [`Series`] snapshot behind an `Arc`. A
//! scrape takes the current snapshots and writes the text straight from them, so it never sees a
//! poll half-applied (counters and gauges of one poll are published together), never blocks a
//! poll while it writes, and needs no cache of the whole page: the text can be streamed out in
//! chunks ([`Metrics::render_to`]).
//!
//! Several targets may share a label set (two accounts polling one region region-wide both have
//! `instance_id=""`), so series are merged across the targets of a region when rendered: counts
//! and counters are summed, the oldest start is the minimum, the last end the maximum.

use crate::config::tag_label;
use crate::domain::{Instance, Instances, TASK_TYPES, TaskStatus};
use crate::tasks::{Aggregates, Finished, KeyRef};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// Appended to every HELP line.
const FROM_POLL: &str =
    "Values come from a background poll of the CDB DescribeTasks API, not from the scrape.";

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

const TASKS: &str = "tencentcloud_cdb_tasks";
const FINISHED: &str = "tencentcloud_cdb_tasks_finished_total";
const DURATION: &str = "tencentcloud_cdb_task_duration_seconds";
const LAST_FINISHED: &str = "tencentcloud_cdb_task_last_finished_timestamp_seconds";
const OLDEST: &str = "tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds";
const PROGRESS: &str = "tencentcloud_cdb_task_progress_ratio";
const INSTANCE_INFO: &str = "tencentcloud_cdb_instance_info";
const INSTANCE_INFO_HELP: &str = "Always 1: an instance as DescribeDBInstances lists it, with its name, type, engine version, zone and configured tags, for joins.";

/// HELP texts of the task families (without [`FROM_POLL`]).
const TASKS_HELP: &str = "Tasks that started inside the lookback window or are still unfinished, by their latest known status.";
const FINISHED_HELP: &str = "Tasks that reached a terminal status, each job counted once when the exporter first saw it terminal.";
const DURATION_HELP: &str =
    "EndTime - StartTime of each task counted in tencentcloud_cdb_tasks_finished_total.";
const LAST_FINISHED_HELP: &str = "EndTime (unix seconds) of the newest finished task seen.";
const OLDEST_HELP: &str =
    "StartTime (unix seconds) of the oldest unfinished task; absent when there is none.";
const PROGRESS_HELP: &str = "Progress (0-1) of each unfinished task, by job id.";

/// Index of a task type in a book's type table: the 12 known types first, in [`TASK_TYPES`]
/// order, then the unknown ones in order of appearance.
type TypeIx = u16;
/// Index of an instance id in a book's instance table.
type InstIx = u32;
/// Known types x terminal statuses: the dense counter array of one instance.
const DENSE: usize = TASK_TYPES.len() * TaskStatus::TERMINAL.len();

fn terminal_ix(st: TaskStatus) -> Option<usize> {
    TaskStatus::TERMINAL.iter().position(|s| *s == st)
}

/// Cumulative histogram of task durations.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; TASK_DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (b, le) in self.buckets.iter_mut().zip(TASK_DURATION_BUCKETS) {
            if v <= le {
                *b += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// A table of label strings stored once, shared with the published snapshots.
#[derive(Debug, Clone, Default)]
struct Labels {
    index: HashMap<Box<str>, u32>,
    /// Copy-on-write: a snapshot holds the table it was published with.
    names: Arc<Vec<Box<str>>>,
}

impl Labels {
    fn with(initial: impl IntoIterator<Item = &'static str>) -> Labels {
        let mut l = Labels::default();
        for s in initial {
            l.ix(s);
        }
        l
    }

    fn ix(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 labels");
        Arc::make_mut(&mut self.names).push(s.into());
        self.index.insert(s.into(), i);
        i
    }
}

/// The mutable accounting of one target: what its series are made of between publications.
#[derive(Debug)]
struct Book {
    instances: Labels,
    types: Labels,
    /// Per instance: finished counters of known types, `[type * 4 + terminal status]`.
    finished: Vec<[u64; DENSE]>,
    /// Per instance: whether its 48 zero counters exist (a monitored instance).
    monitored: Vec<bool>,
    /// How many are.
    monitored_count: usize,
    /// Finished counters of unknown types.
    finished_other: BTreeMap<(InstIx, TypeIx, TaskStatus), u64>,
    durations: BTreeMap<(TypeIx, TaskStatus), Histogram>,
    /// Task gauge series once seen: they stay, at 0, while the target runs.
    seen_tasks: HashSet<(InstIx, TypeIx, TaskStatus)>,
}

impl Book {
    fn new() -> Book {
        Book {
            instances: Labels::default(),
            types: base_types(),
            finished: Vec::new(),
            monitored: Vec::new(),
            monitored_count: 0,
            finished_other: BTreeMap::new(),
            durations: BTreeMap::new(),
            seen_tasks: HashSet::new(),
        }
    }

    fn instance(&mut self, name: &str) -> InstIx {
        let i = self.instances.ix(name);
        if i as usize == self.finished.len() {
            self.finished.push([0; DENSE]);
            self.monitored.push(false);
        }
        i
    }

    fn task_type(&mut self, name: &str) -> TypeIx {
        // The table is compacted long before it could outgrow the index; should a restored
        // store still bring more names than that, they count as `other` (its place is fixed).
        TypeIx::try_from(self.types.ix(name)).unwrap_or(OTHER_IX)
    }

    /// Drops the series of unknown task types (outside [`TASK_TYPES`]) that no task in the
    /// store has any more, and compacts the type table once it holds many such dead names.
    fn drop_types_without_tasks(&mut self, present: &HashSet<&str>) {
        let known = TASK_TYPES.len();
        let names = self.types.names.clone();
        let gone = |t: TypeIx| (t as usize) > known && !present.contains(&*names[t as usize]);
        self.seen_tasks.retain(|&(_, t, _)| !gone(t));
        self.finished_other.retain(|&(_, t, _), _| !gone(t));
        self.durations.retain(|&(t, _), _| !gone(t));
        if names.len() > known + 4 * crate::domain::MAX_OTHER_TASK_TYPES {
            self.compact_types();
        }
    }

    /// Rebuilds the type table with the types still referenced, renumbering their uses (the
    /// known types keep their places, so the dense counters stay as they are).
    fn compact_types(&mut self) {
        let old = self.types.names.clone();
        let mut used: Vec<TypeIx> = self
            .seen_tasks
            .iter()
            .map(|k| k.1)
            .chain(self.finished_other.keys().map(|k| k.1))
            .chain(self.durations.keys().map(|k| k.0))
            .filter(|t| *t > OTHER_IX)
            .collect();
        used.sort_unstable();
        used.dedup();
        let mut table = base_types();
        let mut map: HashMap<TypeIx, TypeIx> = HashMap::new();
        for t in used {
            let new = TypeIx::try_from(table.ix(&old[t as usize])).expect("few types");
            map.insert(t, new);
        }
        let re = |t: TypeIx| map.get(&t).copied().unwrap_or(t);
        self.seen_tasks = self
            .seen_tasks
            .iter()
            .map(|&(i, t, s)| (i, re(t), s))
            .collect();
        self.finished_other = std::mem::take(&mut self.finished_other)
            .into_iter()
            .map(|((i, t, s), v)| ((i, re(t), s), v))
            .collect();
        self.durations = std::mem::take(&mut self.durations)
            .into_iter()
            .map(|((t, s), h)| ((re(t), s), h))
            .collect();
        self.types = table;
    }
}

/// One finished counter's value, as the state file keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedFinished {
    /// `instance_id` label.
    pub instance: String,
    /// `task_type` label.
    pub task_type: String,
    /// Terminal status.
    pub status: TaskStatus,
    /// The counter's value.
    pub value: u64,
}

/// One duration histogram's values, as the state file keeps them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedDuration {
    /// `task_type` label.
    pub task_type: String,
    /// Terminal status.
    pub status: TaskStatus,
    /// Cumulative counts, one per bucket of [`TASK_DURATION_BUCKETS`].
    pub buckets: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// The values of one target's task counters and duration histograms (docs/semantics.md#counters-survive-restarts): written
/// with its task store, restored at start, so that a restart is not a counter reset. Only
/// values above zero are kept; the zero series come back from the target's first poll.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedCounters {
    /// The shard these values were counted in, as `[shard, total_shards]`. The duration
    /// histograms carry no instance label, so they are restored only into the same sharding.
    pub shard: [u32; 2],
    /// Finished counters above zero.
    pub finished: Vec<SavedFinished>,
    /// Duration histograms with an observation.
    pub durations: Vec<SavedDuration>,
}

impl SavedCounters {
    /// Whether no value is kept.
    pub fn is_empty(&self) -> bool {
        self.finished.is_empty() && self.durations.is_empty()
    }
}

impl Book {
    /// The book's counter values above zero.
    fn saved(&self, shard: crate::shard::Shard) -> SavedCounters {
        let inst = |i: InstIx| self.instances.names[i as usize].to_string();
        let ty = |t: TypeIx| self.types.names[t as usize].to_string();
        let mut finished = Vec::new();
        for (i, dense) in self.finished.iter().enumerate() {
            for (k, &value) in dense.iter().enumerate().filter(|(_, v)| **v > 0) {
                finished.push(SavedFinished {
                    instance: inst(i as InstIx),
                    task_type: ty((k / 4) as TypeIx),
                    status: TaskStatus::TERMINAL[k % 4],
                    value,
                });
            }
        }
        for (&(i, t, status), &value) in &self.finished_other {
            finished.push(SavedFinished {
                instance: inst(i),
                task_type: ty(t),
                status,
                value,
            });
        }
        let durations = self
            .durations
            .iter()
            .map(|(&(t, status), h)| SavedDuration {
                task_type: ty(t),
                status,
                buckets: h.buckets.to_vec(),
                sum: h.sum,
                count: h.count,
            })
            .collect();
        SavedCounters {
            shard: [shard.index, shard.total],
            finished,
            durations,
        }
    }

    /// Adds saved values to the book: the finished counters of the instances `keep` accepts,
    /// and the histograms when they were counted in this `shard`. A histogram of another
    /// bucket layout is dropped.
    fn restore(
        &mut self,
        saved: &SavedCounters,
        shard: crate::shard::Shard,
        keep: &dyn Fn(&str) -> bool,
    ) {
        for f in saved.finished.iter().filter(|f| keep(&f.instance)) {
            let ix = self.instance(&f.instance);
            let ty = self.task_type(&f.task_type);
            match terminal_ix(f.status) {
                Some(s) if (ty as usize) < TASK_TYPES.len() => {
                    self.finished[ix as usize][ty as usize * 4 + s] += f.value;
                }
                _ => *self.finished_other.entry((ix, ty, f.status)).or_default() += f.value,
            }
        }
        if saved.shard != [shard.index, shard.total] {
            return;
        }
        for d in &saved.durations {
            let Ok(buckets) = <[u64; TASK_DURATION_BUCKETS.len()]>::try_from(d.buckets.as_slice())
            else {
                continue;
            };
            let ty = self.task_type(&d.task_type);
            self.durations
                .entry((ty, d.status))
                .or_default()
                .merge(&Histogram {
                    buckets,
                    sum: d.sum,
                    count: d.count,
                });
        }
    }
}

/// The type table's fixed start: the known types in [`TASK_TYPES`] order (indices into the
/// dense counters), then `other` at [`OTHER_IX`].
fn base_types() -> Labels {
    Labels::with(
        TASK_TYPES
            .iter()
            .map(|t| t.2)
            .chain([crate::domain::OTHER_TASK_TYPE]),
    )
}

/// Where `other` sits in every type table.
const OTHER_IX: TypeIx = TASK_TYPES.len() as TypeIx;

/// Label values of a row: instance, task type, status.
type Key3<'a> = (&'a str, &'a str, &'static str);

/// One target's series as of its last poll: immutable, shared by the scrapes rendering it.
#[derive(Debug)]
pub struct Series {
    region: Box<str>,
    instances: Arc<Vec<Box<str>>>,
    types: Arc<Vec<Box<str>>>,
    /// Instance indices in label order.
    order: Vec<InstIx>,
    /// Type indices in label order.
    type_order: Vec<TypeIx>,
    tasks: Vec<(InstIx, TypeIx, TaskStatus, u64)>,
    finished: Vec<[u64; DENSE]>,
    monitored: Vec<bool>,
    finished_other: Vec<(InstIx, TypeIx, TaskStatus, u64)>,
    durations: Vec<(TypeIx, TaskStatus, Histogram)>,
    last_finished: Vec<(InstIx, TypeIx, TaskStatus, i64)>,
    oldest: Vec<(InstIx, TypeIx, i64)>,
    progress: Vec<(InstIx, TypeIx, TaskStatus, i64, i64)>,
}

impl Series {
    fn inst(&self, i: InstIx) -> &str {
        &self.instances[i as usize]
    }

    fn ty(&self, t: TypeIx) -> &str {
        &self.types[t as usize]
    }

    /// Sorts rows by their label strings (instance, type, then status), as the text shows them.
    fn sort<T>(&self, rows: &mut [T], key: impl Fn(&T) -> (InstIx, TypeIx, &'static str)) {
        rows.sort_by(|a, b| {
            let (ia, ta, sa) = key(a);
            let (ib, tb, sb) = key(b);
            (self.inst(ia), self.ty(ta), sa).cmp(&(self.inst(ib), self.ty(tb), sb))
        });
    }

    /// Task gauge rows: (instance, type, status) and count.
    fn task_rows(&self) -> impl Iterator<Item = (Key3<'_>, u64)> + '_ {
        self.tasks
            .iter()
            .map(|(i, t, st, n)| ((self.inst(*i), self.ty(*t), st.as_str()), *n))
    }

    /// Last-finished rows: (instance, type, status) and end time.
    fn last_finished_rows(&self) -> impl Iterator<Item = (Key3<'_>, i64)> + '_ {
        self.last_finished
            .iter()
            .map(|(i, t, st, v)| ((self.inst(*i), self.ty(*t), st.as_str()), *v))
    }

    /// Oldest-unfinished rows: (instance, type) and start time.
    fn oldest_rows(&self) -> impl Iterator<Item = ((&str, &str), i64)> + '_ {
        self.oldest
            .iter()
            .map(|(i, t, v)| ((self.inst(*i), self.ty(*t)), *v))
    }

    /// Progress rows: (instance, job id, type, status) and progress 0-100.
    fn progress_rows(&self) -> impl Iterator<Item = ((&str, i64, &str, &'static str), i64)> + '_ {
        self.progress
            .iter()
            .map(|(i, t, st, job, p)| ((self.inst(*i), *job, self.ty(*t), st.as_str()), *p))
    }

    /// Duration histogram rows: (status, type) and histogram.
    fn duration_rows(&self) -> impl Iterator<Item = ((&'static str, &str), Histogram)> + '_ {
        self.durations
            .iter()
            .map(|(t, st, h)| ((st.as_str(), self.ty(*t)), h.clone()))
    }

    /// Finished counters in label order: (instance, type, status, value).
    fn finished_rows(&self) -> impl Iterator<Item = (Key3<'_>, u64)> + '_ {
        let mut statuses = TaskStatus::TERMINAL;
        statuses.sort_by_key(|s| s.as_str());
        self.order.iter().flat_map(move |&i| {
            let dense = &self.finished[i as usize];
            let all = self.monitored[i as usize];
            self.type_order.iter().flat_map(move |&t| {
                let known = (t as usize) < TASK_TYPES.len();
                let dense_rows = statuses.into_iter().filter_map(move |st| {
                    if !known {
                        return None;
                    }
                    let v = dense[t as usize * 4 + terminal_ix(st).expect("terminal")];
                    (all || v > 0).then(|| ((self.inst(i), self.ty(t), st.as_str()), v))
                });
                let other_rows = self
                    .finished_other
                    .iter()
                    .filter(move |(oi, ot, ..)| !known && *oi == i && *ot == t)
                    .map(move |(_, _, st, v)| ((self.inst(i), self.ty(t), st.as_str()), *v));
                dense_rows.chain(other_rows)
            })
        })
    }
}

/// The metrics of what the exporter bounds and corrects: instances and task types past their
/// limits, and the API's clock.
#[derive(Debug)]
struct Guards {
    instances_over_limit: IntGaugeVec,
    task_types_folded: IntCounterVec,
    api_clock_skew: IntGaugeVec,
}

impl Guards {
    fn register(r: &Registry) -> Guards {
        Guards {
            instances_over_limit: int_gauge(
                r,
                &format!("{EX}instances_over_limit"),
                "Instances of the target past the limit of monitored instances: they get no zero series, only those of their own tasks.",
                TARGET_LABELS,
            ),
            task_types_folded: counter(
                r,
                &format!("{EX}task_types_folded_total"),
                "Task observations whose type was counted as task_type=\"other\": the target already had the most unknown task types it keeps as labels.",
                TARGET_LABELS,
            ),
            api_clock_skew: int_gauge(
                r,
                &format!("{EX}api_clock_skew_seconds"),
                "The API's clock minus this host's, from the Date header of its answers; signing and windows are corrected by it.",
                &["account", "region", "product"],
            ),
        }
    }
}

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
    guards: Guards,
    shard_info: IntGaugeVec,
    state_file_errors: IntCounterVec,
    reload_successful: prometheus::IntGauge,
    reload_success_ts: prometheus::Gauge,
    process: Registry,
    task_progress: bool,
    books: Mutex<BTreeMap<TargetId, Book>>,
    published: Mutex<BTreeMap<TargetId, Arc<Series>>>,
    inventories: Mutex<BTreeMap<TargetId, Arc<Inventory>>>,
}

/// A target's instances as last listed, for `tencentcloud_cdb_instance_info`.
#[derive(Debug)]
struct Inventory {
    region: String,
    /// `tag_<key>` label names, in the order of `tag_keys`.
    tag_labels: Vec<String>,
    tag_keys: Vec<String>,
    instances: Arc<Instances>,
}

fn help(text: &str) -> String {
    format!("{text} {FROM_POLL}")
}

/// Registers `m` in `r` and returns it.
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge(r: &Registry, name: &str, text: &str, labels: &[&str]) -> GaugeVec {
    register(
        r,
        GaugeVec::new(Opts::new(name, help(text)), labels).expect("valid metric"),
    )
}

fn int_gauge(r: &Registry, name: &str, text: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name, help(text)), labels).expect("valid metric"),
    )
}

fn counter(r: &Registry, name: &str, text: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help(text)), labels).expect("valid metric"),
    )
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
    register(r, h)
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

const TARGET_LABELS: &[&str] = &["account", "region"];
const EX: &str = "tencentcloud_cdb_exporter_";

impl Metrics {
    /// Creates and registers every metric; `task_progress` enables the opt-in progress gauge.
    pub fn new(task_progress: bool, version: &str, revision: &str) -> Metrics {
        let r = Registry::new();
        let build_info = int_gauge(
            &r,
            &format!("{EX}build_info"),
            "Always 1; labels carry the exporter's version and git revision.",
            &["version", "revision"],
        );
        build_info.with_label_values(&[version, revision]).set(1);
        let api_duration = histogram(
            &r,
            &format!("{EX}api_request_duration_seconds"),
            "Duration of cloud API requests.",
            &["action"],
            API_DURATION_BUCKETS,
        );
        Metrics {
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
            api_duration,
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
            guards: Guards::register(&r),
            shard_info: int_gauge(
                &r,
                &format!("{EX}shard_info"),
                "Always 1; labels carry this process's shard and the number of shards.",
                &["shard", "total_shards"],
            ),
            state_file_errors: counter(
                &r,
                &format!("{EX}state_file_errors_total"),
                "Failed reads and writes of the state file, by operation; a failed read turns persistence off for the run.",
                &["operation"],
            ),
            reload_successful: register(
                &r,
                prometheus::IntGauge::with_opts(Opts::new(
                    format!("{EX}config_last_reload_successful"),
                    help("1 if the last configuration load (start-up or SIGHUP) was applied, 0 if it was rejected and the previous one still runs."),
                ))
                .expect("valid metric"),
            ),
            reload_success_ts: register(
                &r,
                prometheus::Gauge::with_opts(Opts::new(
                    format!("{EX}config_last_reload_success_timestamp_seconds"),
                    help("Unix time of the last configuration load that was applied."),
                ))
                .expect("valid metric"),
            ),
            registry: r,
            process: process_registry(),
            task_progress,
            books: Mutex::new(BTreeMap::new()),
            published: Mutex::new(BTreeMap::new()),
            inventories: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sets `shard_info` (one series; a reload that changes the sharding replaces it).
    pub fn shard(&self, shard: u32, total_shards: u32) {
        self.shard_info.reset();
        self.shard_info
            .with_label_values(&[&shard.to_string(), &total_shards.to_string()])
            .set(1);
    }

    /// A configuration load (start-up or reload) at `at` was applied, or rejected.
    pub fn config_loaded(&self, applied: bool, at: i64) {
        self.reload_successful.set(i64::from(applied));
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
            .with_label_values(&[t.account.as_str(), t.region.as_str(), action])
            .inc();
        self.api_duration
            .with_label_values(&[action])
            .observe(seconds);
    }

    /// `n` API errors with this code (a failed attempt, or malformed items with `Decode`).
    pub fn api_errors(&self, t: &TargetId, action: &str, code: &str, n: u64) {
        self.api_errors
            .with_label_values(&[t.account.as_str(), t.region.as_str(), action, code])
            .inc_by(n);
    }

    /// The end of a poll of a target.
    pub fn poll_done(&self, t: &TargetId, ok: bool, now: i64, seconds: f64, tracked: usize) {
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

    /// `n` task observations of a target had their type folded into `other`.
    pub fn task_types_folded(&self, t: &TargetId, n: u64) {
        self.guards
            .task_types_folded
            .with_label_values(&[t.account.as_str(), t.region.as_str()])
            .inc_by(n);
    }

    /// The API's clock minus this host's, as a target's answers tell it (docs/semantics.md#clock-skew).
    pub fn api_clock_skew(&self, t: &TargetId, seconds: i64) {
        self.guards
            .api_clock_skew
            .with_label_values(&[t.account.as_str(), t.region.as_str(), "cdb"])
            .set(seconds);
    }

    /// A task finished: count it once under each of its instances, observe its duration once.
    /// Visible from the target's next [`Metrics::publish`].
    pub fn task_finished(&self, t: &TargetId, f: &Finished) {
        let mut books = self.books.lock().expect("lock");
        let book = books.entry(t.clone()).or_insert_with(Book::new);
        let ty = book.task_type(&f.task_type);
        for i in &f.instances {
            let ix = book.instance(i);
            match terminal_ix(f.status) {
                Some(s) if (ty as usize) < TASK_TYPES.len() => {
                    book.finished[ix as usize][ty as usize * 4 + s] += 1;
                }
                _ => *book.finished_other.entry((ix, ty, f.status)).or_default() += 1,
            }
        }
        if let Some(d) = f.duration {
            book.durations
                .entry((ty, f.status))
                .or_default()
                .observe(d as f64);
        }
    }

    /// The values of a target's task counters and histograms, for the state file. The state
    /// writer calls it under the target's state lock, which every increment also holds, so the
    /// values match the task store written beside them.
    pub fn saved_counters(&self, t: &TargetId, shard: crate::shard::Shard) -> SavedCounters {
        self.books.lock().expect("lock").get(t).map_or_else(
            || SavedCounters {
                shard: [shard.index, shard.total],
                ..SavedCounters::default()
            },
            |b| b.saved(shard),
        )
    }

    /// Starts a target's series from saved counter values (a restart, or a reload that
    /// restarts the target): what it had counted, for the instances `keep` accepts, replaces
    /// whatever the target had. Visible from its next [`Metrics::publish`].
    pub fn restore_counters(
        &self,
        t: &TargetId,
        saved: &SavedCounters,
        shard: crate::shard::Shard,
        keep: &dyn Fn(&str) -> bool,
    ) {
        let mut book = Book::new();
        book.restore(saved, shard, keep);
        self.books.lock().expect("lock").insert(t.clone(), book);
    }

    /// Publishes a target's task series after a poll: `monitored` instances get their 48 zero
    /// counters (so `increase()` sees a first failure), the gauges are set from the store's
    /// aggregates, and the whole set replaces the target's previous snapshot at once.
    pub fn publish<'a>(
        &self,
        t: &TargetId,
        monitored: impl IntoIterator<Item = &'a str>,
        aggregates: &Aggregates<'_>,
        last_finished: impl IntoIterator<Item = (KeyRef<'a>, i64)>,
    ) {
        let mut books = self.books.lock().expect("lock");
        let book = books.entry(t.clone()).or_insert_with(Book::new);
        let mut over = 0i64;
        for i in monitored {
            let ix = book.instance(i);
            if book.monitored[ix as usize] {
                continue;
            }
            // Each monitored instance brings 48 zero series: past the bound, an instance
            // gets only the series of its own tasks, and the gauge below says how many.
            if book.monitored_count >= MAX_MONITORED_INSTANCES {
                over += 1;
                continue;
            }
            book.monitored[ix as usize] = true;
            book.monitored_count += 1;
        }
        self.guards
            .instances_over_limit
            .with_label_values(&[t.account.as_str(), t.region.as_str()])
            .set(over);
        // Task types outside the known table leave with their last task: their series go, and
        // the table keeps room for the types the API sends next.
        let present: HashSet<&str> = aggregates.tasks.keys().map(|k| k.1).collect();
        book.drop_types_without_tasks(&present);
        let mut counts: HashMap<(InstIx, TypeIx, TaskStatus), u64> = HashMap::new();
        for ((i, ty, st), n) in &aggregates.tasks {
            let key = (book.instance(i), book.task_type(ty), *st);
            book.seen_tasks.insert(key);
            counts.insert(key, *n);
        }
        let tasks = book
            .seen_tasks
            .iter()
            .map(|&(i, ty, st)| (i, ty, st, counts.get(&(i, ty, st)).copied().unwrap_or(0)))
            .collect();
        let oldest = aggregates
            .oldest_unfinished
            .iter()
            .map(|((i, ty), v)| (book.instance(i), book.task_type(ty), *v))
            .collect();
        let progress = if self.task_progress {
            aggregates
                .progress
                .iter()
                .map(|((i, ty, st), job, p)| (book.instance(i), book.task_type(ty), *st, *job, *p))
                .collect()
        } else {
            Vec::new()
        };
        let last_finished = last_finished
            .into_iter()
            .map(|((i, ty, st), v)| (book.instance(i), book.task_type(ty), st, v))
            .collect();
        let series = Series::from_book(&t.region, book, tasks, oldest, progress, last_finished);
        drop(books);
        self.published
            .lock()
            .expect("lock")
            .insert(t.clone(), Arc::new(series));
    }

    /// Drops the series of instances that are no longer monitored (a discovered instance left
    /// the list and has no task in the window); takes effect at the next `publish`.
    pub fn forget_instances<'a>(&self, t: &TargetId, ids: impl IntoIterator<Item = &'a str>) {
        let mut books = self.books.lock().expect("lock");
        let Some(book) = books.get_mut(t) else {
            return;
        };
        for id in ids {
            let Some(&ix) = book.instances.index.get(id) else {
                continue;
            };
            if book.monitored[ix as usize] {
                book.monitored_count -= 1;
            }
            book.monitored[ix as usize] = false;
            book.finished[ix as usize] = [0; DENSE];
            book.finished_other.retain(|(i, ..), _| *i != ix);
            book.seen_tasks.retain(|(i, ..)| *i != ix);
        }
    }

    /// A target's instances as just listed, with the tag keys to copy into labels.
    pub fn instances(&self, t: &TargetId, tag_keys: &[String], instances: Arc<Instances>) {
        let inventory = Inventory {
            region: t.region.to_string(),
            tag_labels: tag_keys.iter().map(|k| tag_label(k)).collect(),
            tag_keys: tag_keys.to_vec(),
            instances,
        };
        self.inventories
            .lock()
            .expect("lock")
            .insert(t.clone(), Arc::new(inventory));
    }

    /// Removes every series a target contributed (it left the config or restarts).
    pub fn remove_target(&self, t: &TargetId) {
        self.inventories.lock().expect("lock").remove(t);
        self.books.lock().expect("lock").remove(t);
        self.published.lock().expect("lock").remove(t);
        let labels = [t.account.as_str(), t.region.as_str()];
        let _ = self.last_poll_success.remove_label_values(&labels);
        let _ = self.last_success_ts.remove_label_values(&labels);
        let _ = self.poll_duration.remove_label_values(&labels);
        let _ = self.tasks_tracked.remove_label_values(&labels);
        let _ = self
            .guards
            .instances_over_limit
            .remove_label_values(&labels);
        let _ = self.guards.api_clock_skew.remove_label_values(&[
            t.account.as_str(),
            t.region.as_str(),
            "cdb",
        ]);
    }

    /// The text exposition of every metric, whole.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        self.render_to(&mut out).expect("writing to memory");
        out
    }

    /// Writes the text exposition to `w`: the self-metrics, the task families from the latest
    /// snapshot of every target, then the process metrics. Stops at the first write error (a
    /// client that went away).
    pub fn render_to(&self, w: &mut impl Write) -> io::Result<()> {
        // The self-metrics first, the snapshots after: a poll publishes its snapshot before it
        // sets its success time, so a page that shows a poll's success also shows its tasks.
        let own = self.registry.gather();
        let snapshots: Vec<Arc<Series>> = self
            .published
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        let encode = |families: &[prometheus::proto::MetricFamily], w: &mut dyn Write| {
            let mut buf = Vec::new();
            TextEncoder::new()
                .encode(families, &mut buf)
                .map_err(io::Error::other)?;
            w.write_all(&buf)
        };
        let inventories: Vec<Arc<Inventory>> = self
            .inventories
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        encode(&own, w)?;
        render_tasks(w, &snapshots, self.task_progress)?;
        render_instances(w, &inventories)?;
        let mut process = self.process.gather();
        for family in &mut process {
            let help = format!("{} {PROCESS_NOTE}", family.help());
            family.set_help(help);
        }
        encode(&process, w)
    }
}

impl Series {
    fn from_book(
        region: &str,
        book: &Book,
        mut tasks: Vec<(InstIx, TypeIx, TaskStatus, u64)>,
        mut oldest: Vec<(InstIx, TypeIx, i64)>,
        mut progress: Vec<(InstIx, TypeIx, TaskStatus, i64, i64)>,
        mut last_finished: Vec<(InstIx, TypeIx, TaskStatus, i64)>,
    ) -> Series {
        let instances = book.instances.names.clone();
        let types = book.types.names.clone();
        let mut order: Vec<InstIx> = (0..instances.len() as InstIx).collect();
        order.sort_by(|a, b| instances[*a as usize].cmp(&instances[*b as usize]));
        let mut type_order: Vec<TypeIx> = (0..types.len() as TypeIx).collect();
        type_order.sort_by(|a, b| types[*a as usize].cmp(&types[*b as usize]));
        let mut s = Series {
            region: region.into(),
            instances,
            types,
            order,
            type_order,
            tasks: Vec::new(),
            finished: book.finished.clone(),
            monitored: book.monitored.clone(),
            finished_other: book
                .finished_other
                .iter()
                .map(|(&(i, t, st), &v)| (i, t, st, v))
                .collect(),
            durations: Vec::new(),
            last_finished: Vec::new(),
            oldest: Vec::new(),
            progress: Vec::new(),
        };
        s.sort(&mut tasks, |r| (r.0, r.1, r.2.as_str()));
        s.sort(&mut last_finished, |r| (r.0, r.1, r.2.as_str()));
        s.sort(&mut oldest, |r| (r.0, r.1, ""));
        progress.sort_by(|a, b| {
            (s.inst(a.0), a.3, s.ty(a.1), a.2.as_str()).cmp(&(
                s.inst(b.0),
                b.3,
                s.ty(b.1),
                b.2.as_str(),
            ))
        });
        let mut other = s.finished_other.clone();
        s.sort(&mut other, |r| (r.0, r.1, r.2.as_str()));
        s.finished_other = other;
        let mut durations: Vec<_> = book
            .durations
            .iter()
            .map(|(&(t, st), h)| (t, st, h.clone()))
            .collect();
        durations.sort_by(|a, b| (a.1.as_str(), s.ty(a.0)).cmp(&(b.1.as_str(), s.ty(b.0))));
        s.tasks = tasks;
        s.oldest = oldest;
        s.progress = progress;
        s.last_finished = last_finished;
        s.durations = durations;
        s
    }
}

/// A sample value.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

/// Writes `name{labels} value\n` the way the text format wants it.
fn sample(w: &mut impl Write, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()> {
    w.write_all(name.as_bytes())?;
    w.write_all(b"{")?;
    for (k, (n, v)) in labels.iter().enumerate() {
        if k > 0 {
            w.write_all(b",")?;
        }
        w.write_all(n.as_bytes())?;
        w.write_all(b"=\"")?;
        escape_label(w, v)?;
        w.write_all(b"\"")?;
    }
    w.write_all(b"} ")?;
    match value {
        Num::U(v) => write_u64(w, v)?,
        Num::I(v) if v < 0 => {
            w.write_all(b"-")?;
            write_u64(w, v.unsigned_abs())?;
        }
        Num::I(v) => write_u64(w, v.unsigned_abs())?,
        Num::F(v) => write!(w, "{v}")?,
    }
    w.write_all(b"\n")
}

fn write_u64(w: &mut impl Write, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    w.write_all(&buf[i..])
}

fn escape_label(w: &mut impl Write, v: &str) -> io::Result<()> {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        return w.write_all(v.as_bytes());
    }
    for c in v.chars() {
        match c {
            '\\' => w.write_all(b"\\\\")?,
            '"' => w.write_all(b"\\\"")?,
            '\n' => w.write_all(b"\\n")?,
            c => {
                let mut b = [0u8; 4];
                w.write_all(c.encode_utf8(&mut b).as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Writes a family's HELP and TYPE before its first sample, and nothing for an empty family.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    started: bool,
}

impl<'a> Family<'a> {
    fn new(name: &'a str, help: &'a str, kind: &'a str) -> Self {
        Family {
            name,
            help,
            kind,
            started: false,
        }
    }

    fn start(&mut self, w: &mut impl Write) -> io::Result<()> {
        if !self.started {
            self.started = true;
            writeln!(w, "# HELP {} {} {FROM_POLL}", self.name, self.help)?;
            writeln!(w, "# TYPE {} {}", self.name, self.kind)?;
        }
        Ok(())
    }

    fn sample(&mut self, w: &mut impl Write, labels: &[(&str, &str)], v: Num) -> io::Result<()> {
        self.start(w)?;
        sample(w, self.name, labels, v)
    }
}

/// Calls `emit` for each row of one region, in label order: straight from the snapshot when one
/// target has the region, merged with `fold` when several do.
fn each_row<'a, K: Ord, V, I>(
    group: &[&'a Series],
    rows: impl Fn(&'a Series) -> I,
    fold: impl Fn(&mut V, V),
    mut emit: impl FnMut(K, V) -> io::Result<()>,
) -> io::Result<()>
where
    I: Iterator<Item = (K, V)>,
{
    if let [one] = group {
        for (k, v) in rows(one) {
            emit(k, v)?;
        }
        return Ok(());
    }
    let mut merged: BTreeMap<K, V> = BTreeMap::new();
    for s in group {
        for (k, v) in rows(s) {
            match merged.entry(k) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => fold(e.get_mut(), v),
            }
        }
    }
    for (k, v) in merged {
        emit(k, v)?;
    }
    Ok(())
}

/// A family labelled `instance_id`, `region`, `status`, `task_type`: one sample per row key.
fn by_key<'a, V, I>(
    w: &mut impl Write,
    regions: &BTreeMap<&'a str, Vec<&'a Series>>,
    mut family: Family<'_>,
    rows: impl Fn(&'a Series) -> I + Copy,
    fold: impl Fn(&mut V, V) + Copy,
    num: impl Fn(V) -> Num + Copy,
) -> io::Result<()>
where
    I: Iterator<Item = (Key3<'a>, V)>,
{
    for (region, group) in regions {
        each_row(group, rows, fold, |(i, ty, st), v| {
            let labels = [
                ("instance_id", i),
                ("region", *region),
                ("status", st),
                ("task_type", ty),
            ];
            family.sample(w, &labels, num(v))
        })?;
    }
    Ok(())
}

/// `tencentcloud_cdb_instance_info`, by region and instance id; an instance two targets list
/// (the same account configured twice) is written once.
fn render_instances(w: &mut impl Write, inventories: &[Arc<Inventory>]) -> io::Result<()> {
    let mut rows: BTreeMap<(&str, &str), (&Inventory, &Instance)> = BTreeMap::new();
    for inv in inventories {
        for i in inv.instances.values() {
            rows.entry((inv.region.as_str(), i.instance_id.as_str()))
                .or_insert((inv, i));
        }
    }
    let mut f = Family::new(INSTANCE_INFO, INSTANCE_INFO_HELP, "gauge");
    for ((region, id), (inv, i)) in rows {
        let mut labels: Vec<(&str, &str)> = vec![
            ("engine_version", &i.engine_version),
            ("instance_id", id),
            ("instance_name", &i.name),
            ("instance_type", i.instance_type),
            ("region", region),
            ("zone", &i.zone),
        ];
        for (label, key) in inv.tag_labels.iter().zip(&inv.tag_keys) {
            let value = i
                .tags
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, v)| v.as_str());
            labels.push((label, value));
        }
        f.sample(w, &labels, Num::U(1))?;
    }
    Ok(())
}

/// The task families from the targets' snapshots, in name order.
/// The targets' snapshots grouped by region (targets of one region are merged).
type Regions<'a> = BTreeMap<&'a str, Vec<&'a Series>>;

fn render_tasks(w: &mut impl Write, snapshots: &[Arc<Series>], progress: bool) -> io::Result<()> {
    let mut regions: Regions<'_> = BTreeMap::new();
    for s in snapshots {
        regions.entry(&s.region).or_default().push(s);
    }
    let sum = |a: &mut u64, b: u64| *a += b;
    render_durations(w, &regions)?;
    by_key(
        w,
        &regions,
        Family::new(LAST_FINISHED, LAST_FINISHED_HELP, "gauge"),
        Series::last_finished_rows,
        |a, b| *a = (*a).max(b),
        Num::I,
    )?;
    let mut f = Family::new(OLDEST, OLDEST_HELP, "gauge");
    for (region, group) in &regions {
        each_row(
            group,
            Series::oldest_rows,
            |a, b| *a = (*a).min(b),
            |(i, ty), v| {
                let labels = [("instance_id", i), ("region", *region), ("task_type", ty)];
                f.sample(w, &labels, Num::I(v))
            },
        )?;
    }
    if progress {
        render_progress(w, &regions)?;
    }
    by_key(
        w,
        &regions,
        Family::new(TASKS, TASKS_HELP, "gauge"),
        Series::task_rows,
        sum,
        Num::U,
    )?;
    by_key(
        w,
        &regions,
        Family::new(FINISHED, FINISHED_HELP, "counter"),
        Series::finished_rows,
        sum,
        Num::U,
    )
}

/// The duration histogram: buckets, `+Inf`, sum and count per region, status and type.
fn render_durations(w: &mut impl Write, regions: &Regions<'_>) -> io::Result<()> {
    let mut f = Family::new(DURATION, DURATION_HELP, "histogram");
    let bucket = format!("{DURATION}_bucket");
    for (region, group) in regions {
        each_row(
            group,
            Series::duration_rows,
            |a, b| a.merge(&b),
            |(st, ty), h| {
                let base = [("region", *region), ("status", st), ("task_type", ty)];
                f.start(w)?;
                for (le, n) in TASK_DURATION_BUCKETS.iter().zip(h.buckets) {
                    let le = le.to_string();
                    let labels = [base[0], base[1], base[2], ("le", &le)];
                    sample(w, &bucket, &labels, Num::U(n))?;
                }
                let labels = [base[0], base[1], base[2], ("le", "+Inf")];
                sample(w, &bucket, &labels, Num::U(h.count))?;
                sample(w, &format!("{DURATION}_sum"), &base, Num::F(h.sum))?;
                sample(w, &format!("{DURATION}_count"), &base, Num::U(h.count))
            },
        )?;
    }
    Ok(())
}

/// The opt-in progress gauge, one series per unfinished task.
fn render_progress(w: &mut impl Write, regions: &Regions<'_>) -> io::Result<()> {
    let mut f = Family::new(PROGRESS, PROGRESS_HELP, "gauge");
    for (region, group) in regions {
        each_row(
            group,
            Series::progress_rows,
            |_, _| {},
            |(i, job, ty, st), p| {
                let job = job.to_string();
                let labels = [
                    ("instance_id", i),
                    ("job_id", job.as_str()),
                    ("region", *region),
                    ("status", st),
                    ("task_type", ty),
                ];
                f.sample(w, &labels, Num::F(p as f64 / 100.0))
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{Scope, TaskStore};

    fn store_with_types(types: &[String]) -> TaskStore {
        let mut store = TaskStore::new(Scope::Region, 86_400, 0);
        for (n, ty) in types.iter().enumerate() {
            let task = crate::domain::Task {
                job_id: n as i64,
                task_type: ty.clone(),
                status: TaskStatus::Failed,
                start_time: 100,
                end_time: Some(110),
                progress: 0,
                instance_ids: vec!["cdb-aaaa1111".into()],
                async_request_id: String::new(),
                code: None,
                message: String::new(),
            };
            let _ = store.observe(crate::tasks::Observation {
                task,
                via_instance: None,
            });
        }
        store
    }

    #[test]
    fn unknown_types_leave_with_their_tasks_and_the_table_stays_small() {
        let m = Metrics::new(false, "t", "t");
        let t = TargetId {
            account: "a".into(),
            region: "ap-guangzhou".into(),
        };
        // Waves of new types, each leaving before the next: the series follow, and the type
        // table is compacted instead of growing towards its index limit.
        for wave in 0..40 {
            let types: Vec<String> = (0..30).map(|i| format!("wave{wave}_type{i}")).collect();
            let store = store_with_types(&types);
            for (n, ty) in types.iter().enumerate() {
                m.task_finished(
                    &t,
                    &crate::tasks::Finished {
                        job_id: n as i64,
                        instances: vec!["cdb-aaaa1111".into()],
                        task_type: ty.clone(),
                        status: TaskStatus::Failed,
                        duration: Some(10),
                    },
                );
            }
            m.publish(&t, ["cdb-aaaa1111"], &store.aggregates(), []);
            let text = String::from_utf8(m.render()).unwrap();
            assert!(text.contains(&format!("task_type=\"wave{wave}_type29\"")));
            if wave > 0 {
                assert!(
                    !text.contains(&format!("task_type=\"wave{}_type0\"", wave - 1)),
                    "the last wave's types left with their tasks"
                );
            }
            let finished = text
                .lines()
                .filter(|l| {
                    l.starts_with("tencentcloud_cdb_tasks_finished_total{") && l.contains("wave")
                })
                .count();
            assert_eq!(finished, 30, "one counter per type of this wave");
        }
        let books = m.books.lock().unwrap();
        let size = books[&t].types.names.len();
        assert!(
            size <= TASK_TYPES.len() + 1 + 4 * crate::domain::MAX_OTHER_TASK_TYPES + 30,
            "{size}"
        );
    }

    #[test]
    fn monitored_instances_are_bounded_and_the_excess_counted() {
        let m = Metrics::new(false, "t", "t");
        let t = TargetId {
            account: "a".into(),
            region: "ap-guangzhou".into(),
        };
        let ids: Vec<String> = (0..MAX_MONITORED_INSTANCES + 5)
            .map(|i| format!("cdb-{i:08}"))
            .collect();
        let store = TaskStore::new(Scope::Region, 1, 1);
        m.publish(&t, ids.iter().map(String::as_str), &store.aggregates(), []);
        let text = String::from_utf8(m.render()).unwrap();
        let zeros = text
            .lines()
            .filter(|l| l.starts_with("tencentcloud_cdb_tasks_finished_total{"))
            .count();
        assert_eq!(zeros, MAX_MONITORED_INSTANCES * DENSE);
        assert!(
            text.contains(
                "tencentcloud_cdb_exporter_instances_over_limit{account=\"a\",region=\"ap-guangzhou\"} 5"
            ),
            "the excess is counted"
        );
        // Instances that left make room for those waiting.
        m.forget_instances(&t, ids[..10].iter().map(String::as_str));
        m.publish(
            &t,
            ids[10..].iter().map(String::as_str),
            &store.aggregates(),
            [],
        );
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "tencentcloud_cdb_exporter_instances_over_limit{account=\"a\",region=\"ap-guangzhou\"} 0"
        ));
    }
}
