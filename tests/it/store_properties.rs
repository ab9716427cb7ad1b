//! Property tests of the task store: random task timelines, random poll times, pages with
//! duplicates, reordering and statuses that change between pages of one poll, long tasks, and
//! restarts through the state file's serialization.

use cdb_task_exporter::tasks::{Observation, Scope, TaskStore};
use cdb_task_exporter::tencent::model::{Task, TaskStatus};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};

const LOOKBACK: i64 = 2_000;
const START: i64 = 0; // the process start

#[derive(Debug, Clone)]
struct Timeline {
    job_id: i64,
    start: i64,
    /// `None`: never ends.
    duration: Option<i64>,
    outcome: TaskStatus,
    instance: &'static str,
    task_type: &'static str,
}

impl Timeline {
    fn at(&self, t: i64) -> Option<Task> {
        if t < self.start {
            return None;
        }
        let end = self.duration.map(|d| self.start + d).filter(|e| *e <= t);
        Some(Task {
            job_id: self.job_id,
            task_type: self.task_type.into(),
            status: if end.is_some() {
                self.outcome
            } else {
                TaskStatus::Running
            },
            start_time: self.start,
            end_time: end,
            progress: 0,
            instance_ids: vec![self.instance.into()],
            async_request_id: format!("req-{}", self.job_id),
            code: end.map(|_| 0),
            message: if end.is_some() {
                "done".into()
            } else {
                String::new()
            },
        })
    }
    fn end(&self) -> Option<i64> {
        self.duration.map(|d| self.start + d)
    }
}

fn timeline() -> impl Strategy<Value = Timeline> {
    (
        -3_000i64..3_000,
        prop::option::weighted(0.8, 0i64..4_000),
        prop::sample::select(vec![
            TaskStatus::Succeed,
            TaskStatus::Failed,
            TaskStatus::Killed,
            TaskStatus::Removed,
        ]),
        prop::sample::select(vec!["cdb-aaaa1111", "cdb-bbbb2222"]),
        prop::sample::select(vec!["reboot", "import_data"]),
    )
        .prop_map(|(start, duration, outcome, instance, task_type)| Timeline {
            job_id: 0,
            start,
            duration,
            outcome,
            instance,
            task_type,
        })
}

#[derive(Debug, Clone)]
struct Case {
    tasks: Vec<Timeline>,
    polls: Vec<i64>,
    restarts: Vec<bool>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(timeline(), 1..30),
        prop::collection::vec(1i64..600, 1..25),
        prop::collection::vec(prop::bool::weighted(0.15), 25),
        any::<u64>(),
    )
        .prop_map(|(mut tasks, gaps, restarts, seed)| {
            for (i, t) in tasks.iter_mut().enumerate() {
                t.job_id = 1_000 + i as i64;
            }
            let mut polls = Vec::new();
            let mut t = START;
            for g in gaps {
                t += g;
                polls.push(t);
            }
            Case {
                tasks,
                polls,
                restarts,
                seed,
            }
        })
}

/// An independent recount: latest non-regressing state per job, the same eviction rule.
#[derive(Default)]
struct Model {
    latest: HashMap<i64, Task>,
    evicted: HashSet<i64>,
}

impl Model {
    fn observe(&mut self, t: &Task) {
        if self.evicted.contains(&t.job_id) {
            return;
        }
        match self.latest.get(&t.job_id) {
            Some(old) if old.status.is_terminal() && !t.status.is_terminal() => {}
            _ => {
                self.latest.insert(t.job_id, t.clone());
            }
        }
    }
    fn evict(&mut self, now: i64) {
        let gone: Vec<i64> = self
            .latest
            .values()
            .filter(|t| t.status.is_terminal() && t.start_time < now - LOOKBACK)
            .map(|t| t.job_id)
            .collect();
        for id in gone {
            self.latest.remove(&id);
            self.evicted.insert(id);
        }
    }
    fn counts(&self) -> BTreeMap<(String, String, TaskStatus), u64> {
        let mut m = BTreeMap::new();
        for t in self.latest.values() {
            *m.entry((t.instance_ids[0].clone(), t.task_type.clone(), t.status))
                .or_default() += 1;
        }
        m
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn exactly_once_and_gauges_recount(case in case()) {
        let mut rng = fastrand::Rng::with_seed(case.seed);
        let mut store = TaskStore::new(Scope::Region, LOOKBACK, START);
        let mut model = Model::default();
        let mut counted: Vec<i64> = Vec::new();
        let mut fed_unfinished: HashSet<i64> = HashSet::new();
        let mut seen_at: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut prev = START;
        for (i, &p) in case.polls.iter().enumerate() {
            // What a poll returns: tasks started inside the lookback, unfinished tasks the
            // exporter follows (all unfinished ones on the first poll).
            let mut page: Vec<Task> = Vec::new();
            for tl in &case.tasks {
                let Some(now_state) = tl.at(p) else { continue };
                let in_window = tl.start >= p - LOOKBACK;
                if !(in_window || fed_unfinished.contains(&tl.job_id) || (i == 0 && !now_state.status.is_terminal())) {
                    continue;
                }
                // Some pages were served a moment earlier, before a status change.
                let early = rng.i64(prev..=p);
                if rng.bool() && let Some(earlier) = tl.at(early) {
                    page.push(earlier);
                }
                page.push(now_state.clone());
                if rng.u8(..10) == 0 {
                    page.push(now_state.clone()); // overlap: reported twice
                }
            }
            // Pages arrive in any order, but an earlier state of a task comes before its later one
            // only most of the time: shuffle freely, the store must not regress.
            rng.shuffle(&mut page);
            for t in &page {
                seen_at.entry(t.job_id).or_default().push(p);
                if t.status.is_terminal() {
                    fed_unfinished.remove(&t.job_id);
                } else {
                    fed_unfinished.insert(t.job_id);
                }
                model.observe(t);
                if let Some(f) = store.observe(Observation { task: t.clone(), via_instance: None }) {
                    counted.push(f.job_id);
                }
            }
            // Terminal states override fed_unfinished if any page showed the end.
            for t in &page {
                if t.status.is_terminal() {
                    fed_unfinished.remove(&t.job_id);
                }
            }
            store.evict(p);
            model.evict(p);
            prop_assert_eq!(store.summary().tasks, model.counts());
            // Restart through the state file's serialization: the cutoff is this poll.
            if case.restarts[i % case.restarts.len()] {
                let json = serde_json::to_string(&store).unwrap();
                store = serde_json::from_str(&json).unwrap();
                store.set_scope(Scope::Region, LOOKBACK);
                store.set_baseline_cutoff(p);
            }
            prev = p;
        }
        // No JobId counted twice.
        let unique: HashSet<i64> = counted.iter().copied().collect();
        prop_assert_eq!(unique.len(), counted.len(), "counted twice: {:?}", counted);
        // Every task that finished while the exporter ran, and was reported after its end,
        // is counted; nothing that ended before the start is.
        let last = *case.polls.last().unwrap();
        for tl in &case.tasks {
            let Some(end) = tl.end() else {
                prop_assert!(!unique.contains(&tl.job_id));
                continue;
            };
            let reported_after_end = seen_at.get(&tl.job_id).is_some_and(|ps| ps.iter().any(|p| *p >= end));
            if end > START && end <= last && reported_after_end {
                prop_assert!(unique.contains(&tl.job_id), "job {} (end {end}) not counted", tl.job_id);
            }
            if end <= START {
                prop_assert!(!unique.contains(&tl.job_id), "baseline job {} counted", tl.job_id);
            }
        }
    }
}

// The compact renderer against the semantics it replaced: for random stores (one or two
// targets in one region), every task series and value of a real render equals an independent
// recount written with plain strings, the way the prometheus-crate version kept them.

use crate::common::Series;
use cdb_task_exporter::metrics::{Metrics, TASK_DURATION_BUCKETS, TargetId, TargetSeries};
use cdb_task_exporter::tencent::model::{TASK_TYPES, known_task_type_labels};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

/// A generated task: instance, type, status, start, duration once terminal.
type GenTask = (&'static str, &'static str, TaskStatus, i64, Option<i64>);

#[derive(Debug, Clone)]
struct RenderCase {
    /// Per target: its tasks.
    targets: Vec<Vec<GenTask>>,
    monitored: Vec<&'static str>,
    progress: bool,
}

fn render_case() -> impl Strategy<Value = RenderCase> {
    let task = (
        prop::sample::select(vec!["cdb-aaaa1111", "cdb-bbbb2222", "cdb-cccc3333", ""]),
        prop::sample::select(vec!["reboot", "import_data", "create_backup"]),
        prop::sample::select(TaskStatus::ALL.to_vec()),
        0i64..1_000,
        prop::option::of(0i64..5_000),
    );
    (
        prop::collection::vec(prop::collection::vec(task, 0..40), 1..3),
        prop::sample::subsequence(vec!["cdb-aaaa1111", "cdb-bbbb2222", "cdb-dddd4444"], 0..=3),
        any::<bool>(),
    )
        .prop_map(|(targets, monitored, progress)| RenderCase {
            targets,
            monitored,
            progress,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compact_render_equals_a_plain_recount(case in render_case()) {
        let metrics = Metrics::new(case.progress, "t", "t");
        let mut want: BTreeMap<(String, Labels), f64> = BTreeMap::new();
        let region = "ap-guangzhou";
        let mut hist: BTreeMap<(String, String), (Vec<u64>, f64, u64)> = BTreeMap::new();
        let mut all_series = Vec::new();
        for (n, tasks) in case.targets.iter().enumerate() {
            let series = TargetSeries::default();
            let id = TargetId { account: format!("acct{n}").into(), region: region.into(), product: "cdb" };
            // Baseline cutoff 0: tasks first seen terminal with an end after it are counted.
            let mut store = TaskStore::new(Scope::Region, 1_000_000, 0);
            for (k, (inst, ty, status, start, end)) in tasks.iter().enumerate() {
                let end = if status.is_terminal() { end.map(|e| start + e) } else { None };
                let task = Task {
                    job_id: (n * 1_000 + k) as i64,
                    task_type: ty.to_string(),
                    status: *status,
                    start_time: *start,
                    end_time: end,
                    progress: k as i64 % 101,
                    instance_ids: if inst.is_empty() { vec![] } else { vec![inst.to_string()] },
                    async_request_id: String::new(),
                    code: None,
                    message: String::new(),
                };
                if let Some(f) = store.observe(Observation { task: task.clone(), via_instance: None }) {
                    series.task_finished(&f);
                    let inst = f.instances[0].clone();
                    *want
                        .entry(("tencentcloud_cdb_tasks_finished_total".into(), labels(&[("region", region), ("instance_id", &inst), ("task_type", ty), ("status", status.as_str())])))
                        .or_default() += 1.0;
                    if let Some(d) = f.duration {
                        let h = hist.entry((ty.to_string(), status.as_str().to_string())).or_insert((vec![0; TASK_DURATION_BUCKETS.len()], 0.0, 0));
                        for (b, le) in h.0.iter_mut().zip(TASK_DURATION_BUCKETS) {
                            if d as f64 <= le { *b += 1; }
                        }
                        h.1 += d as f64;
                        h.2 += 1;
                    }
                }
            }
            // The recount, from the store's tasks as plain strings.
            let mut seen_instances: Vec<String> = Vec::new();
            for t in store.iter() {
                let inst = t.instance_ids.first().cloned().unwrap_or_default();
                seen_instances.push(inst.clone());
                let l = labels(&[("region", region), ("instance_id", &inst), ("task_type", &t.task_type), ("status", t.status.as_str())]);
                *want.entry(("tencentcloud_cdb_tasks".into(), l)).or_default() += 1.0;
                if !t.status.is_terminal() {
                    let l = labels(&[("region", region), ("instance_id", &inst), ("task_type", &t.task_type)]);
                    let e = want.entry(("tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds".into(), l)).or_insert(f64::MAX);
                    *e = e.min(t.start_time as f64);
                    if case.progress {
                        let job = t.job_id.to_string();
                        let l = labels(&[("region", region), ("instance_id", &inst), ("task_type", &t.task_type), ("status", t.status.as_str()), ("job_id", &job)]);
                        want.insert(("tencentcloud_cdb_task_progress_ratio".into(), l), t.progress as f64 / 100.0);
                    }
                }
            }
            for ((inst, ty, st), end) in store.last_finished() {
                let l = labels(&[("region", region), ("instance_id", inst), ("task_type", ty), ("status", st.as_str())]);
                let e = want.entry(("tencentcloud_cdb_task_last_finished_timestamp_seconds".into(), l)).or_insert(f64::MIN);
                *e = e.max(end as f64);
            }
            // Zero counters: listed instances (region-wide here, the instances seen) x 12 x 4.
            let mut monitored: Vec<String> = case.monitored.iter().map(std::string::ToString::to_string).collect();
            monitored.extend(seen_instances);
            for inst in &monitored {
                for ty in known_task_type_labels() {
                    for st in TaskStatus::TERMINAL {
                        want.entry(("tencentcloud_cdb_tasks_finished_total".into(), labels(&[("region", region), ("instance_id", inst), ("task_type", ty), ("status", st.as_str())]))).or_insert(0.0);
                    }
                }
            }
            let aggregates = store.aggregates();
            metrics.publish(&id, &series, monitored.iter().map(String::as_str), &aggregates, store.last_finished());
            all_series.push(series);
        }
        for ((ty, st), (buckets, sum, count)) in &hist {
            let base = [("region", region), ("task_type", ty.as_str()), ("status", st.as_str())];
            for (le, n) in TASK_DURATION_BUCKETS.iter().zip(buckets) {
                let le = le.to_string();
                let mut l = base.to_vec();
                l.push(("le", &le));
                want.insert(("tencentcloud_cdb_task_duration_seconds_bucket".into(), labels(&l)), *n as f64);
            }
            let mut l = base.to_vec();
            l.push(("le", "+Inf"));
            want.insert(("tencentcloud_cdb_task_duration_seconds_bucket".into(), labels(&l)), *count as f64);
            want.insert(("tencentcloud_cdb_task_duration_seconds_sum".into(), labels(&base)), *sum);
            want.insert(("tencentcloud_cdb_task_duration_seconds_count".into(), labels(&base)), *count as f64);
        }
        let text = String::from_utf8(metrics.render(&all_series)).unwrap();
        let got: BTreeMap<(String, Labels), f64> = Series::parse(&text)
            .samples
            .into_iter()
            .filter(|((name, _), _)| name.starts_with("tencentcloud_cdb_task"))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(TASK_TYPES.len(), 12);
    }
}
