//! The task store of one target (account + region): every task of the lookback window, and every
//! unfinished task whatever its age, keyed by `JobId` with its latest known state; and the
//! exactly-once accounting of finished tasks.
//!
//! Pure: no clock (`now` is a parameter) and no I/O, so its rules are tested exhaustively.
//!
//! The rules (docs/semantics.md#exactly-once):
//! - A task is counted as finished exactly once, when the store first sees it terminal after
//!   having seen it unfinished, or when it is first seen already terminal with an `EndTime` after
//!   the *baseline cutoff* (the process start, or with a state file the end of the time the
//!   previous run had covered). Tasks first seen terminal before the cutoff are the baseline: in
//!   the gauge, not in the counter.
//! - A terminal task never goes back to an unfinished status (a stale page cannot undo an end).
//! - Finished tasks that started before `now - lookback` (the *horizon*) are evicted; unfinished
//!   ones stay until they end. The horizon only moves forward, and a task that is not tracked and
//!   started before it is ignored: it was evicted, or it ended before the exporter could see it
//!   run, so a late re-report (a final-state look-up returns neighbours of the task it looks for)
//!   cannot count it twice. This replaces a per-job tombstone list, which at 100k tasks a day
//!   cost as much memory as the tasks themselves.
//!
//! # Memory
//!
//! A tracked task is one 40-byte `Slot` (48 with its `JobId`) in a table sorted by `JobId`,
//! with no hash index over the whole store (see `table.rs`): times
//! as 32-bit integers, status as a small code, and the strings (instance list, task type,
//! message with its code, a request id that is not a UUID) as handles into a
//! reference-counted [`Symbols`] table, so a thousand tasks of one instance share one copy of
//! its id. A UUID request id is kept as its 16 bytes.

use crate::domain::{Task, TaskStatus};
use crate::intern::{Sym, Symbols};
use crate::shard::Shard;
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod last_ends;
mod persist;
mod slot;
mod table;
#[cfg(test)]
mod tests;

use slot::{
    COUNTED, HAS_CODE, IdLayout, NO_END, NO_PROGRESS, REQUEST_SYM, REQUEST_UUID, Slot, format_id,
    pack_start, parse_id, split,
};
pub use slot::{MAX_MISSES, TaskView};
use table::JobTable;

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
    /// `EndTime - StartTime`, when the end is known and this shard observes it.
    pub duration: Option<i64>,
    /// `EndTime`, when known: the timestamp of the task's exemplar.
    pub end: Option<i64>,
}

/// A tracked unfinished task that started before some time (see
/// [`TaskStore::unfinished_before`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// `JobId`
    pub job_id: i64,
    /// `StartTime`
    pub start: i64,
    /// The `instance_id` label values it counts under.
    pub instances: Vec<String>,
}

/// Key of the task gauge: instance, type, status.
pub type TaskKey = (String, String, TaskStatus);

/// The aggregates of the task gauges with owned strings: a convenience for tests and tools; the
/// exporter itself uses the borrowed [`Aggregates`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tracked tasks by instance, type and latest status.
    pub tasks: BTreeMap<TaskKey, u64>,
    /// Oldest start of unfinished tasks by instance and type.
    pub oldest_unfinished: BTreeMap<(String, String), i64>,
    /// Progress of unfinished tasks: key, job id, progress.
    pub progress: Vec<(TaskKey, i64, i64)>,
}

/// A gauge key whose strings are borrowed from the store: instance, type, status.
pub type KeyRef<'a> = (&'a str, &'a str, TaskStatus);

/// The aggregates the task gauges are set from, borrowed from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates<'a> {
    /// Tracked tasks by instance, type and latest status: each key once, sorted by key. (A
    /// vector: at 1,000 instances its 17,600 keys take 0.8 MB, where a map took 1.6 MB, at
    /// every poll.)
    pub tasks: Vec<(KeyRef<'a>, u64)>,
    /// Oldest start of unfinished tasks by instance and type.
    pub oldest_unfinished: HashMap<(&'a str, &'a str), i64>,
    /// Unfinished tasks: key, job id, progress (0-100).
    pub progress: Vec<(KeyRef<'a>, i64, i64)>,
}

/// Sorts `(key, count)` rows by key and adds up the counts of equal keys: each key once.
pub fn add_up_by_key<K: Ord>(rows: &mut Vec<(K, u64)>) {
    rows.sort_unstable_by(|x, y| x.0.cmp(&y.0));
    rows.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
}

/// The store of one target.
#[derive(Debug, Clone)]
pub struct TaskStore {
    lookback: i64,
    baseline_cutoff: i64,
    /// Untracked tasks that started before it are ignored (see the module docs).
    horizon: i64,
    tasks: JobTable,
    /// End of the newest finished task by (instance, type, status).
    last_finished: last_ends::LastEnds,
    symbols: Symbols,
    scope: Scope,
    /// Instances of other shards are not this store's (docs/configuration.md#sharding).
    shard: Shard,
}

impl PartialEq for TaskStore {
    /// Equal when they hold the same tasks and accounting (symbol numbering aside).
    fn eq(&self, other: &Self) -> bool {
        let tasks = |s: &TaskStore| -> BTreeMap<i64, (Task, Vec<String>, bool, u8)> {
            s.tasks
                .iter()
                .map(|(id, slot)| {
                    let instances = split(s.symbols.get(slot.instances))
                        .map(str::to_string)
                        .collect();
                    (
                        id,
                        (s.task_of(id, slot), instances, slot.counted(), slot.missed),
                    )
                })
                .collect()
        };
        let lf = |s: &TaskStore| -> BTreeMap<(String, String, TaskStatus), i64> {
            s.last_finished()
                .map(|((i, t, st), v)| ((i.to_string(), t.to_string(), st), v))
                .collect()
        };
        self.lookback == other.lookback
            && self.baseline_cutoff == other.baseline_cutoff
            && self.horizon == other.horizon
            && tasks(self) == tasks(other)
            && lf(self) == lf(other)
    }
}

impl Eq for TaskStore {}

impl TaskStore {
    /// An empty store. `baseline_cutoff`: tasks first seen terminal with an end at or before it
    /// are baseline.
    pub fn new(scope: Scope, lookback_secs: i64, baseline_cutoff: i64) -> Self {
        TaskStore {
            lookback: lookback_secs,
            baseline_cutoff,
            horizon: i64::MIN,
            tasks: JobTable::default(),
            last_finished: last_ends::LastEnds::default(),
            symbols: Symbols::default(),
            scope,
            shard: Shard::ALL,
        }
    }

    /// Keeps only this shard's instances from now on, and drops what belongs to other shards.
    pub fn set_shard(&mut self, shard: Shard) {
        self.shard = shard;
        self.retain_instances(|i| shard.owns(i));
    }

    /// Re-scopes a store restored from a state file or kept over a reload; tasks that no longer
    /// belong to a monitored instance are dropped.
    pub fn set_scope(&mut self, scope: Scope, lookback_secs: i64) {
        self.lookback = lookback_secs;
        if let Scope::Listed(list) = &scope {
            self.retain_instances(|i| list.contains(crate::domain::owner(i)));
        }
        self.scope = scope;
    }

    /// Removes the instances `keep` rejects from every task (dropping tasks left with none) and
    /// from the last-finished entries.
    fn retain_instances(&mut self, keep: impl Fn(&str) -> bool) {
        let ids: Vec<i64> = self.tasks.keys().collect();
        for id in ids {
            let slot = *self.tasks.get(id).expect("present");
            let old = self.symbols.get(slot.instances);
            if split(old).all(&keep) {
                continue;
            }
            let kept: Vec<&str> = split(old).filter(|i| keep(i)).collect();
            if kept.is_empty() {
                self.drop_task(id);
            } else {
                let joined = kept.join(",");
                let sym = self.symbols.intern(&joined);
                self.symbols.release(slot.instances);
                self.tasks.get_mut(id).expect("present").instances = sym;
            }
        }
        let symbols = &mut self.symbols;
        self.last_finished.retain(|i, t| {
            let kept = keep(symbols.get(i));
            if !kept {
                symbols.release(i);
                symbols.release(t);
            }
            kept
        });
    }

    /// The baseline cutoff.
    pub fn baseline_cutoff(&self) -> i64 {
        self.baseline_cutoff
    }

    /// Moves the baseline cutoff (a restored state's cutoff is where the last run left off).
    pub fn set_baseline_cutoff(&mut self, cutoff: i64) {
        self.baseline_cutoff = cutoff;
    }

    /// Makes room for `additional` more tasks at once (the first poll knows how many are
    /// coming from its first page), instead of growing the map step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.tasks.reserve(additional);
    }

    /// Number of tracked tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Number of distinct strings held for the tasks (instance lists, types, messages, odd
    /// request ids).
    pub fn strings(&self) -> usize {
        self.symbols.len()
    }

    /// A tracked task as last seen, with the instances it counts under in `instance_ids`.
    pub fn get(&self, job_id: i64) -> Option<Task> {
        self.tasks.get(job_id).map(|s| self.task_of(job_id, s))
    }

    /// A tracked task's status.
    pub fn status_of(&self, job_id: i64) -> Option<TaskStatus> {
        self.tasks.get(job_id).map(Slot::status)
    }

    /// Every tracked task, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Task> + '_ {
        self.views().map(|v| v.task())
    }

    /// Every tracked task as a borrowed view: filtering and ordering read the slot in place,
    /// and only the tasks kept are made into a [`Task`].
    pub fn views(&self) -> impl Iterator<Item = TaskView<'_>> + '_ {
        self.tasks.iter().map(|(job_id, slot)| TaskView {
            store: self,
            job_id,
            slot,
        })
    }

    fn task_of(&self, job_id: i64, s: &Slot) -> Task {
        let instances = self.symbols.get(s.instances);
        let (code, message) = self.code_and_message(s);
        Task {
            job_id,
            task_type: self.symbols.get(s.task_type).to_string(),
            status: s.status(),
            start_time: s.start(),
            end_time: s.end(),
            progress: if s.progress == NO_PROGRESS {
                0
            } else {
                i64::from(s.progress)
            },
            instance_ids: split(instances)
                .filter(|i| !i.is_empty())
                .map(str::to_string)
                .collect(),
            async_request_id: if s.flags & REQUEST_SYM != 0 {
                self.symbols.get(Sym::from_raw(s.request[0])).to_string()
            } else if s.flags & REQUEST_UUID != 0 {
                format_id(s.request, IdLayout::Uuid)
            } else {
                format_id(s.request, IdLayout::Groups)
            },
            code,
            message: message.to_string(),
        }
    }

    /// A slot's code and message (see [`HAS_CODE`]).
    fn code_and_message<'s>(&'s self, s: &Slot) -> (Option<i64>, &'s str) {
        let text = self.symbols.get(s.message);
        if s.flags & HAS_CODE == 0 {
            return (None, text);
        }
        let (code, message) = text.split_once('\0').unwrap_or(("", text));
        (code.parse().ok(), message)
    }

    /// The `instance_id` label values an observation counts under; empty when it cannot be
    /// attributed to a monitored instance.
    fn attribute<'o>(&self, obs: &'o Observation) -> Vec<&'o str> {
        let ids = &obs.task.instance_ids;
        let mut out: Vec<&str> = match &self.scope {
            Scope::Region if ids.is_empty() => vec![""],
            Scope::Region => ids.iter().map(String::as_str).collect(),
            Scope::Listed(list) => ids
                .iter()
                .filter(|i| list.contains(crate::domain::owner(i)))
                .map(String::as_str)
                .collect(),
        };
        out.retain(|i| self.shard.owns(i));
        if out.is_empty()
            && let Some(via) = &obs.via_instance
        {
            out.push(via);
        }
        out
    }

    /// Writes the task's fields (not its accounting) into a slot, interning its strings and
    /// releasing the ones they replace.
    fn fill(&mut self, slot: &mut Slot, task: &Task, fresh: bool) {
        // A task seen again keeps its type, and mostly its code and message: their symbols are
        // then kept as they are, without interning (or formatting the pair) on the poll's path.
        let same_type = !fresh && self.symbols.get(slot.task_type) == task.task_type;
        let task_type = if same_type {
            slot.task_type
        } else {
            self.symbols.intern(&task.task_type)
        };
        let unchanged = !fresh && self.code_and_message(slot) == (task.code, task.message.as_str());
        let message = match task.code {
            _ if unchanged => slot.message,
            Some(code) => self.symbols.intern(&format!("{code}\0{}", task.message)),
            None => self.symbols.intern(&task.message),
        };
        let (request, request_flags) = match parse_id(&task.async_request_id) {
            Some((words, IdLayout::Groups)) => (words, 0),
            Some((words, IdLayout::Uuid)) => (words, REQUEST_UUID),
            None => (
                [self.symbols.intern(&task.async_request_id).raw(), 0, 0, 0],
                REQUEST_SYM,
            ),
        };
        if !fresh {
            if !same_type {
                self.symbols.release(slot.task_type);
            }
            if !unchanged {
                self.symbols.release(slot.message);
            }
            if slot.flags & REQUEST_SYM != 0 {
                self.symbols.release(Sym::from_raw(slot.request[0]));
            }
        }
        slot.task_type = task_type;
        slot.message = message;
        slot.request = request;
        slot.flags &= !(REQUEST_SYM | REQUEST_UUID | HAS_CODE);
        slot.flags |= request_flags;
        if task.code.is_some() {
            slot.flags |= HAS_CODE;
        }
        slot.start = pack_start(task.start_time);
        slot.duration = task.end_time.map_or(NO_END, |e| {
            (e - task.start_time).clamp(0, i64::from(NO_END - 1)) as u32
        });
        slot.packed_status = task.status.pack();
        slot.progress = u8::try_from(task.progress.clamp(0, 100)).unwrap_or(0);
    }

    /// Applies one observation; returns the task if it just finished and must be counted.
    /// An observation that cannot be attributed to a monitored instance is ignored.
    pub fn observe(&mut self, obs: Observation) -> Option<Finished> {
        let job_id = obs.task.job_id;
        // Searched for once: nothing below changes the table before the task is put back.
        let place = self.tasks.place(job_id);
        let tracked = self.tasks.at(place).copied();
        if tracked.is_none() && obs.task.start_time < self.horizon {
            return None; // evicted, or ended before it could be seen running
        }
        let instances = self.attribute(&obs);
        if instances.is_empty() {
            return None;
        }
        let task = &obs.task;
        if task.status.is_terminal()
            && let Some(end) = task.end_time
        {
            for i in &instances {
                self.record_last_finished(i, &task.task_type, task.status, end);
            }
        }
        match tracked {
            None => {
                let counted = task.status.is_terminal()
                    && task.end_time.unwrap_or(task.start_time) > self.baseline_cutoff;
                let mut slot = Slot {
                    start: 0,
                    duration: NO_END,
                    request: [0; 4],
                    instances: self.symbols.intern(&instances.join(",")),
                    task_type: Sym::EMPTY,
                    message: Sym::EMPTY,
                    packed_status: task.status.pack(),
                    progress: NO_PROGRESS,
                    flags: if counted { COUNTED } else { 0 },
                    missed: 0,
                };
                self.fill(&mut slot, task, true);
                self.tasks.put(place, job_id, slot);
                let instances = instances
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect();
                counted.then(|| self.finished(task, instances))
            }
            Some(mut slot) => {
                slot.missed = 0;
                let was_terminal = slot.status().is_terminal();
                if was_terminal && !task.status.is_terminal() {
                    self.tasks.put(place, job_id, slot);
                    return None; // a stale page; an end is final
                }
                let current = self.symbols.get(slot.instances);
                let added: Vec<&str> = instances
                    .iter()
                    .copied()
                    .filter(|i| !split(current).any(|c| c == *i))
                    .collect();
                if !added.is_empty() {
                    let joined = format!("{current},{}", added.join(","));
                    let sym = self.symbols.intern(&joined);
                    self.symbols.release(slot.instances);
                    slot.instances = sym;
                }
                self.fill(&mut slot, task, false);
                let now_counted = !was_terminal && task.status.is_terminal() && !slot.counted();
                if now_counted {
                    slot.flags |= COUNTED;
                }
                self.tasks.put(place, job_id, slot);
                now_counted.then(|| {
                    let all = split(self.symbols.get(slot.instances))
                        .map(str::to_string)
                        .collect();
                    self.finished(task, all)
                })
            }
        }
    }

    /// Raises the end kept for a finished task's key. Only terminal statuses have one.
    fn record_last_finished(&mut self, instance: &str, task_type: &str, st: TaskStatus, end: i64) {
        if !st.is_terminal() {
            return;
        }
        let (Some(i), Some(t)) = (self.symbols.find(instance), self.symbols.find(task_type)) else {
            let i = self.symbols.intern(instance);
            let t = self.symbols.intern(task_type);
            self.last_finished.insert_new((i, t, st), end);
            return;
        };
        if let Some(v) = self.last_finished.get_mut((i, t, st)) {
            *v = (*v).max(end);
        } else {
            self.symbols.retain(i);
            self.symbols.retain(t);
            self.last_finished.insert_new((i, t, st), end);
        }
    }

    /// Removes a task and releases its strings.
    fn drop_task(&mut self, job_id: i64) {
        if let Some(s) = self.tasks.remove(job_id) {
            self.symbols.release(s.instances);
            self.symbols.release(s.task_type);
            self.symbols.release(s.message);
            if s.flags & REQUEST_SYM != 0 {
                self.symbols.release(Sym::from_raw(s.request[0]));
            }
        }
    }

    /// In one pass: how many tracked tasks started in `[begin, end]` (unbounded below without
    /// `begin`), and how many of those that started at or before `unfinished_until` are
    /// unfinished.
    pub fn count_started_between(
        &self,
        begin: Option<i64>,
        end: i64,
        unfinished_until: i64,
    ) -> (usize, usize) {
        let begin = begin.unwrap_or(i64::MIN);
        self.tasks
            .values()
            .filter(|t| t.start() >= begin && t.start() <= end)
            .fold((0, 0), |(n, u), t| {
                let open = !t.status().is_terminal() && t.start() <= unfinished_until;
                (n + 1, u + usize::from(open))
            })
    }

    /// The start times of every tracked task, sorted.
    pub fn sorted_starts(&self) -> Vec<i64> {
        let mut starts: Vec<i64> = self.tasks.values().map(Slot::start).collect();
        starts.sort_unstable();
        starts
    }

    /// Unfinished tasks that started before `before`, oldest first.
    pub fn unfinished_before(&self, before: i64) -> Vec<Unfinished> {
        let mut v: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.status().is_terminal() && t.start() < before)
            .map(|(id, t)| Unfinished {
                job_id: id,
                start: t.start(),
                instances: split(self.symbols.get(t.instances))
                    .map(str::to_string)
                    .collect(),
            })
            .collect();
        v.sort_by_key(|u| (u.start, u.job_id));
        v
    }

    /// Records that a final-state look-up did not find these tracked tasks; after
    /// [`MAX_MISSES`] in a row a task is dropped (it vanished from the API). Returns how many
    /// were dropped.
    pub fn missed(&mut self, job_ids: &[i64]) -> usize {
        let mut dropped = 0;
        for id in job_ids {
            if let Some(t) = self.tasks.get_mut(*id) {
                t.missed += 1;
                if t.missed >= MAX_MISSES {
                    self.drop_task(*id);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Evicts finished tasks that started before `now - lookback`, and moves the horizon there.
    /// Returns how many tasks were evicted.
    pub fn evict(&mut self, now: i64) -> usize {
        let horizon = now - self.lookback;
        self.horizon = self.horizon.max(horizon);
        let gone: Vec<i64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.status().is_terminal() && t.start() < horizon)
            .map(|(id, _)| id)
            .collect();
        for id in &gone {
            self.drop_task(*id);
        }
        if gone.len() > self.tasks.len() {
            // After a large eviction, give the memory back instead of keeping the peak.
            self.tasks.shrink_to_fit();
        } else {
            // Once a poll: the tasks it added merged in, its removals gone.
            self.tasks.settle();
        }
        gone.len()
    }

    /// The aggregates of the task gauges, borrowing the label strings from the store. Cost: one
    /// pass over the tasks, hashing small integer keys; instance lists are split once per
    /// distinct key, not once per task.
    pub fn aggregates(&self) -> Aggregates<'_> {
        // Counts in 32 bits: a table holds fewer than 2^32 tasks.
        let mut by_sym: HashMap<(Sym, Sym, TaskStatus), u32> = HashMap::new();
        let mut oldest_sym: HashMap<(Sym, Sym), i64> = HashMap::new();
        let mut progress_sym = Vec::new();
        for (id, t) in self.tasks.iter() {
            *by_sym
                .entry((t.instances, t.task_type, t.status()))
                .or_default() += 1;
            if !t.status().is_terminal() {
                let slot = oldest_sym
                    .entry((t.instances, t.task_type))
                    .or_insert(t.start());
                *slot = (*slot).min(t.start());
                let p = if t.progress == NO_PROGRESS {
                    0
                } else {
                    i64::from(t.progress)
                };
                progress_sym.push((t.instances, t.task_type, t.status(), id, p));
            }
        }
        let s = &self.symbols;
        let mut a = Aggregates::default();
        for ((list, ty, st), n) in by_sym {
            for i in split(s.get(list)) {
                a.tasks.push(((i, s.get(ty), st), u64::from(n)));
            }
        }
        // Lists that share an instance bring its key more than once: add them up.
        add_up_by_key(&mut a.tasks);
        for ((list, ty), start) in oldest_sym {
            for i in split(s.get(list)) {
                let slot = a.oldest_unfinished.entry((i, s.get(ty))).or_insert(start);
                *slot = (*slot).min(start);
            }
        }
        for (list, ty, st, id, p) in progress_sym {
            for i in split(s.get(list)) {
                a.progress.push(((i, s.get(ty), st), id, p));
            }
        }
        a
    }

    /// The aggregates of the task gauges with owned strings.
    pub fn summary(&self) -> Summary {
        let a = self.aggregates();
        let key = |(i, t, st): KeyRef<'_>| (i.to_string(), t.to_string(), st);
        let mut progress: Vec<_> = a
            .progress
            .iter()
            .map(|(k, id, p)| (key(*k), *id, *p))
            .collect();
        progress.sort();
        Summary {
            tasks: a.tasks.iter().map(|(k, n)| (key(*k), *n)).collect(),
            oldest_unfinished: a
                .oldest_unfinished
                .iter()
                .map(|((i, t), v)| ((i.to_string(), t.to_string()), *v))
                .collect(),
            progress,
        }
    }

    /// End time of the newest finished task seen, by instance, type and status.
    pub fn last_finished(&self) -> impl Iterator<Item = (KeyRef<'_>, i64)> + '_ {
        self.last_finished
            .iter()
            .map(|((i, t, st), v)| ((self.symbols.get(i), self.symbols.get(t), st), v))
    }
}

impl TaskStore {
    /// What [`TaskStore::observe`] reports for a task that just finished. When sharded, the
    /// duration is observed only by the shard that owns the task's smallest instance id, so
    /// that the shards' histograms (which carry no instance label) add up to one process's.
    fn finished(&self, task: &Task, instances: Vec<String>) -> Finished {
        let owner = task.instance_ids.iter().min().map_or("", String::as_str);
        let observes = self.shard.total <= 1 || self.shard.owns(owner);
        Finished {
            job_id: task.job_id,
            instances,
            task_type: task.task_type.clone(),
            status: task.status,
            duration: task
                .end_time
                .filter(|_| observes)
                .map(|e| (e - task.start_time).max(0)),
            end: task.end_time,
        }
    }
}
