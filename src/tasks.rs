//! The task store of one target (account + region): every task of the lookback window, and every
//! unfinished task whatever its age, keyed by `JobId` with its latest known state; and the
//! exactly-once accounting of finished tasks.
//!
//! Pure: no clock (`now` is a parameter) and no I/O, so its rules are tested exhaustively.
//!
//! The rules (contract §5.3):
//! - A task is counted as finished exactly once, when the store first sees it terminal after
//!   having seen it unfinished, or when it is first seen already terminal with an `EndTime` after
//!   the *baseline cutoff* (the process start, or with a state file the end of the time the
//!   previous run had covered). Tasks first seen terminal before the cutoff are the baseline: in
//!   the gauge, not in the counter.
//! - A terminal task never goes back to an unfinished status (a stale page cannot undo an end).
//! - Finished tasks that started before `now - lookback` are evicted; unfinished ones stay until
//!   they end. An evicted task is remembered by `JobId` (a tombstone) for one lookback after its
//!   eviction, so a late re-report cannot count it twice.

use crate::tencent::model::{Task, TaskStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which instances a target monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every instance in the region (no `instances` listed).
    Region,
    /// Only these instances.
    Listed(BTreeSet<String>),
}

/// One observation of a task: what a page said, and which instance was polled (per-instance
/// queries) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The task as the page showed it.
    pub task: Task,
    /// The `InstanceId` filter of the query that returned it.
    pub via_instance: Option<String>,
}

/// A tracked task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// Latest known state.
    pub task: Task,
    /// The `instance_id` label values it counts under.
    pub instances: Vec<String>,
    /// Whether it was counted in `tasks_finished_total`.
    pub counted: bool,
    /// Consecutive final-state look-ups that did not find it.
    #[serde(default)]
    pub missed: u8,
}

/// A task that just finished and must be counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// `JobId`
    pub job_id: i64,
    /// `instance_id` label values.
    pub instances: Vec<String>,
    /// `task_type` label value.
    pub task_type: String,
    /// Terminal status.
    pub status: TaskStatus,
    /// `EndTime - StartTime`, when the end is known.
    pub duration: Option<i64>,
}

/// Key of the task gauge: instance, type, status.
pub type TaskKey = (String, String, TaskStatus);

/// The aggregates the metrics are set from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tracked tasks by instance, type and latest status.
    pub tasks: BTreeMap<TaskKey, u64>,
    /// Oldest start of unfinished tasks by instance and type.
    pub oldest_unfinished: BTreeMap<(String, String), i64>,
    /// Progress of unfinished tasks: key, job id, progress.
    pub progress: Vec<(TaskKey, i64, i64)>,
}

/// How many consecutive look-ups may miss a tracked unfinished task before it is dropped.
pub const MAX_MISSES: u8 = 3;

/// The store of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStore {
    lookback: i64,
    baseline_cutoff: i64,
    tasks: HashMap<i64, Tracked>,
    tombstones: HashMap<i64, i64>,
    last_finished: BTreeMap<String, i64>,
    #[serde(skip, default = "default_scope")]
    scope: Scope,
}

fn default_scope() -> Scope {
    Scope::Region
}

/// Serialized key of the last-finished map (instance, type, status), kept flat for JSON.
fn lf_key(instance: &str, task_type: &str, status: TaskStatus) -> String {
    format!("{instance}\u{1f}{task_type}\u{1f}{}", status.as_str())
}

impl TaskStore {
    /// An empty store. `baseline_cutoff`: tasks first seen terminal with an end at or before it
    /// are baseline.
    pub fn new(scope: Scope, lookback_secs: i64, baseline_cutoff: i64) -> Self {
        TaskStore {
            lookback: lookback_secs,
            baseline_cutoff,
            tasks: HashMap::new(),
            tombstones: HashMap::new(),
            last_finished: BTreeMap::new(),
            scope,
        }
    }

    /// Re-scopes a store restored from a state file or kept over a reload; tasks that no longer
    /// belong to a monitored instance are dropped.
    pub fn set_scope(&mut self, scope: Scope, lookback_secs: i64) {
        self.lookback = lookback_secs;
        if let Scope::Listed(list) = &scope {
            self.tasks.retain(|_, t| {
                t.instances.retain(|i| list.contains(i));
                !t.instances.is_empty()
            });
            self.last_finished
                .retain(|k, _| list.contains(k.split('\u{1f}').next().unwrap_or_default()));
        }
        self.scope = scope;
    }

    /// Moves the baseline cutoff (a restored state's cutoff is where the last run left off).
    pub fn set_baseline_cutoff(&mut self, cutoff: i64) {
        self.baseline_cutoff = cutoff;
    }

    /// Number of tracked tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// A tracked task.
    pub fn get(&self, job_id: i64) -> Option<&Tracked> {
        self.tasks.get(&job_id)
    }

    /// The `instance_id` label values an observation counts under; empty when it cannot be
    /// attributed to a monitored instance.
    fn attribute(&self, obs: &Observation) -> Vec<String> {
        let ids = &obs.task.instance_ids;
        let mut out: Vec<String> = match &self.scope {
            Scope::Region if ids.is_empty() => vec![String::new()],
            Scope::Region => ids.clone(),
            Scope::Listed(list) => ids.iter().filter(|i| list.contains(*i)).cloned().collect(),
        };
        if out.is_empty()
            && let Some(via) = &obs.via_instance
        {
            out.push(via.clone());
        }
        out
    }

    /// Applies one observation; returns the task if it just finished and must be counted.
    /// An observation that cannot be attributed to a monitored instance is ignored.
    pub fn observe(&mut self, obs: Observation) -> Option<Finished> {
        let job_id = obs.task.job_id;
        if self.tombstones.contains_key(&job_id) {
            return None;
        }
        let instances = self.attribute(&obs);
        if instances.is_empty() {
            return None;
        }
        let task = obs.task;
        if task.status.is_terminal()
            && let Some(end) = task.end_time
        {
            for i in &instances {
                let slot = self
                    .last_finished
                    .entry(lf_key(i, &task.task_type, task.status))
                    .or_insert(end);
                *slot = (*slot).max(end);
            }
        }
        match self.tasks.get_mut(&job_id) {
            None => {
                let counted = task.status.is_terminal()
                    && task.end_time.unwrap_or(task.start_time) > self.baseline_cutoff;
                let finished = counted.then(|| finished(&task, &instances));
                self.tasks.insert(
                    job_id,
                    Tracked {
                        task,
                        instances,
                        counted,
                        missed: 0,
                    },
                );
                finished
            }
            Some(t) => {
                t.missed = 0;
                let was_terminal = t.task.status.is_terminal();
                if was_terminal && !task.status.is_terminal() {
                    return None; // a stale page; an end is final
                }
                for i in instances {
                    if !t.instances.contains(&i) {
                        t.instances.push(i);
                    }
                }
                t.task = task;
                if !was_terminal && t.task.status.is_terminal() && !t.counted {
                    t.counted = true;
                    return Some(finished(&t.task, &t.instances));
                }
                None
            }
        }
    }

    /// Unfinished tasks that started before `before`: `(job id, start, instances)`.
    pub fn unfinished_before(&self, before: i64) -> Vec<(i64, i64, Vec<String>)> {
        let mut v: Vec<_> = self
            .tasks
            .values()
            .filter(|t| !t.task.status.is_terminal() && t.task.start_time < before)
            .map(|t| (t.task.job_id, t.task.start_time, t.instances.clone()))
            .collect();
        v.sort_by_key(|(id, start, _)| (*start, *id));
        v
    }

    /// Records that a final-state look-up did not find these tracked tasks; after
    /// [`MAX_MISSES`] in a row a task is dropped (it vanished from the API). Returns how many
    /// were dropped.
    pub fn missed(&mut self, job_ids: &[i64]) -> usize {
        let mut dropped = 0;
        for id in job_ids {
            if let Some(t) = self.tasks.get_mut(id) {
                t.missed += 1;
                if t.missed >= MAX_MISSES {
                    self.tasks.remove(id);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Evicts finished tasks that started before `now - lookback`, and old tombstones.
    /// Returns how many tasks were evicted.
    pub fn evict(&mut self, now: i64) -> usize {
        let horizon = now - self.lookback;
        let before = self.tasks.len();
        let tombstones = &mut self.tombstones;
        self.tasks.retain(|id, t| {
            let keep = !t.task.status.is_terminal() || t.task.start_time >= horizon;
            if !keep {
                tombstones.insert(*id, now);
            }
            keep
        });
        self.tombstones
            .retain(|_, evicted_at| *evicted_at >= horizon);
        before - self.tasks.len()
    }

    /// The aggregates of the task metrics.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for t in self.tasks.values() {
            let task = &t.task;
            for i in &t.instances {
                let key = (i.clone(), task.task_type.clone(), task.status);
                *s.tasks.entry(key.clone()).or_default() += 1;
                if !task.status.is_terminal() {
                    let slot = s
                        .oldest_unfinished
                        .entry((i.clone(), task.task_type.clone()))
                        .or_insert(task.start_time);
                    *slot = (*slot).min(task.start_time);
                    s.progress.push((key, task.job_id, task.progress));
                }
            }
        }
        s.progress.sort();
        s
    }

    /// End time of the newest finished task seen, by instance, type and status.
    pub fn last_finished(&self) -> impl Iterator<Item = ((&str, &str, TaskStatus), i64)> + '_ {
        self.last_finished.iter().filter_map(|(k, v)| {
            let mut parts = k.split('\u{1f}');
            let instance = parts.next()?;
            let task_type = parts.next()?;
            let status = TaskStatus::from_label(parts.next()?)?;
            Some(((instance, task_type, status), *v))
        })
    }

    /// The instances this store knows tasks of (for region-wide targets, the monitored set).
    pub fn instances(&self) -> BTreeSet<String> {
        self.tasks
            .values()
            .flat_map(|t| t.instances.iter().cloned())
            .collect()
    }
}

fn finished(task: &Task, instances: &[String]) -> Finished {
    Finished {
        job_id: task.job_id,
        instances: instances.to_vec(),
        task_type: task.task_type.clone(),
        status: task.status,
        duration: task.end_time.map(|e| (e - task.start_time).max(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn task(id: i64, status: TaskStatus, start: i64, end: Option<i64>, inst: &[&str]) -> Task {
        Task {
            job_id: id,
            task_type: "import_data".into(),
            status,
            start_time: start,
            end_time: end,
            progress: 0,
            instance_ids: inst.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn obs(t: Task) -> Observation {
        Observation {
            task: t,
            via_instance: None,
        }
    }

    #[test]
    fn baseline_is_in_the_gauge_not_the_counter() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 1_000);
        assert!(
            s.observe(obs(task(1, Failed, 100, Some(900), &["cdb-a"])))
                .is_none()
        );
        // Ended after the process started: counted even though first seen terminal.
        let f = s
            .observe(obs(task(2, Failed, 100, Some(1_100), &["cdb-a"])))
            .unwrap();
        assert_eq!((f.job_id, f.duration), (2, Some(1_000)));
        let sum = s.summary();
        assert_eq!(
            sum.tasks[&("cdb-a".into(), "import_data".into(), Failed)],
            2
        );
    }

    #[test]
    fn a_transition_counts_once_and_never_regresses() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 1_000);
        assert!(
            s.observe(obs(task(1, Running, 500, None, &["cdb-a"])))
                .is_none()
        );
        assert!(
            s.observe(obs(task(1, Failed, 500, Some(600), &["cdb-a"])))
                .is_some()
        );
        assert!(
            s.observe(obs(task(1, Failed, 500, Some(600), &["cdb-a"])))
                .is_none()
        );
        assert!(
            s.observe(obs(task(1, Running, 500, None, &["cdb-a"])))
                .is_none()
        );
        assert_eq!(s.get(1).unwrap().task.status, Failed);
        assert!(
            s.observe(obs(task(1, Removed, 500, Some(600), &["cdb-a"])))
                .is_none()
        );
    }

    #[test]
    fn long_tasks_stay_until_they_end_then_age_out() {
        let mut s = TaskStore::new(Scope::Region, 100, 0);
        s.observe(obs(task(1, Running, 10, None, &["cdb-a"])));
        assert_eq!(s.evict(10_000), 0);
        assert_eq!(s.unfinished_before(11).len(), 1);
        assert!(
            s.observe(obs(task(1, Succeed, 10, Some(9_000), &["cdb-a"])))
                .is_some()
        );
        assert_eq!(s.evict(10_000), 1);
        assert!(s.is_empty());
        // A late re-report of an evicted task is ignored.
        assert!(
            s.observe(obs(task(1, Succeed, 10, Some(9_000), &["cdb-a"])))
                .is_none()
        );
        assert!(s.is_empty());
    }

    #[test]
    fn attribution_follows_the_scope() {
        let listed = Scope::Listed(["cdb-a".to_string()].into());
        let mut s = TaskStore::new(listed, 86_400, 0);
        let f = s
            .observe(obs(task(1, Failed, 5, Some(6), &["cdb-a", "cdb-b"])))
            .unwrap();
        assert_eq!(f.instances, ["cdb-a"]);
        assert!(
            s.observe(obs(task(2, Failed, 5, Some(6), &["cdb-b"])))
                .is_none()
        );
        assert!(s.observe(obs(task(3, Failed, 5, Some(6), &[]))).is_none());
        let via = Observation {
            task: task(4, Failed, 5, Some(6), &[]),
            via_instance: Some("cdb-a".into()),
        };
        assert_eq!(s.observe(via).unwrap().instances, ["cdb-a"]);

        let mut r = TaskStore::new(Scope::Region, 86_400, 0);
        let f = r.observe(obs(task(1, Failed, 5, Some(6), &[]))).unwrap();
        assert_eq!(f.instances, [""]);
        let f = r
            .observe(obs(task(2, Failed, 5, Some(6), &["cdb-a", "cdb-b"])))
            .unwrap();
        assert_eq!(f.instances, ["cdb-a", "cdb-b"]);
    }

    #[test]
    fn vanished_tasks_are_dropped_after_repeated_misses() {
        let mut s = TaskStore::new(Scope::Region, 100, 0);
        s.observe(obs(task(1, Waiting, 10, None, &["cdb-a"])));
        assert_eq!(s.missed(&[1]), 0);
        assert_eq!(s.missed(&[1]), 0);
        s.observe(obs(task(1, Waiting, 10, None, &["cdb-a"])));
        assert_eq!(s.missed(&[1]), 0);
        assert_eq!(s.missed(&[1]), 0);
        assert_eq!(s.missed(&[1]), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn summary_and_last_finished() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 0);
        s.observe(obs(task(1, Running, 50, None, &["cdb-a"])));
        s.observe(obs(task(2, Running, 40, None, &["cdb-a"])));
        s.observe(obs(task(3, Succeed, 10, Some(20), &["cdb-a"])));
        s.observe(obs(task(4, Succeed, 10, Some(30), &["cdb-a"])));
        let sum = s.summary();
        assert_eq!(
            sum.oldest_unfinished[&("cdb-a".into(), "import_data".into())],
            40
        );
        assert_eq!(sum.progress.len(), 2);
        let lf: Vec<_> = s.last_finished().collect();
        assert_eq!(lf, [(("cdb-a", "import_data", Succeed), 30)]);
        let json = serde_json::to_string(&s).unwrap();
        let mut back: TaskStore = serde_json::from_str(&json).unwrap();
        back.set_scope(Scope::Region, 86_400);
        assert_eq!(back, s);
    }
}
