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
