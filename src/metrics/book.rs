//! The task series of one target: the mutable [`Book`] a poll counts into (published as the
//! immutable [`Series`] snapshot of `series.rs`), the counter values the state file keeps
//! ([`SavedCounters`]), and the instance [`Inventory`] of the info family.

use super::chunked::Chunked;
use super::series::Series;
use super::{MAX_MONITORED_INSTANCES, TASK_DURATION_BUCKETS};
use crate::config::tag_label;
use crate::domain::{Instances, TASK_TYPES, TaskStatus};
use crate::product::Product;
use crate::tasks::{Aggregates, Finished, KeyRef, add_up_by_key};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Index of a task type in a book's type table: the 12 known types first, in [`TASK_TYPES`]
/// order, then the unknown ones in order of appearance.
pub(super) type TypeIx = u16;
/// Index of an instance id in a book's instance table.
pub(super) type InstIx = u32;
/// Known types x terminal statuses: the dense counter array of one instance.
pub(super) const DENSE: usize = TASK_TYPES.len() * TaskStatus::TERMINAL.len();

pub(super) fn terminal_ix(st: TaskStatus) -> Option<usize> {
    TaskStatus::TERMINAL.iter().position(|s| *s == st)
}

/// Cumulative histogram of task durations.
#[derive(Debug, Clone, Default)]
pub(super) struct Histogram {
    pub(super) buckets: [u64; TASK_DURATION_BUCKETS.len()],
    pub(super) sum: f64,
    pub(super) count: u64,
    /// The last task each bucket counted, `+Inf` last: (job id, duration, end).
    pub(super) last: Box<[Option<(i64, f64, i64)>; TASK_DURATION_BUCKETS.len() + 1]>,
}

impl Histogram {
    /// Observes a task's duration; with its (job id, end) it becomes the exemplar of every
    /// bucket that counts it.
    pub(super) fn observe_task(&mut self, v: f64, task: Option<(i64, i64)>) {
        for (i, le) in TASK_DURATION_BUCKETS
            .iter()
            .chain([&f64::INFINITY])
            .enumerate()
        {
            if v <= *le {
                if let Some(b) = self.buckets.get_mut(i) {
                    *b += 1;
                }
                if let Some((job, end)) = task {
                    self.last[i] = Some((job, v, end));
                }
            }
        }
        self.sum += v;
        self.count += 1;
    }

    pub(super) fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        // Of two exemplars of one bucket, the task that ended last.
        for (a, b) in self.last.iter_mut().zip(o.last.iter()) {
            if b.is_some_and(|b| a.is_none_or(|a| b.2 > a.2)) {
                *a = *b;
            }
        }
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// A table of label strings stored once, shared with the published snapshots.
#[derive(Debug, Clone, Default)]
pub(super) struct Labels {
    pub(super) index: HashMap<Box<str>, u32>,
    /// Copy-on-write: a snapshot holds the table it was published with.
    pub(super) names: Arc<Vec<Box<str>>>,
}

impl Labels {
    pub(super) fn with(initial: impl IntoIterator<Item = &'static str>) -> Labels {
        let mut l = Labels::default();
        for s in initial {
            l.ix(s);
        }
        l
    }

    pub(super) fn ix(&mut self, s: &str) -> u32 {
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
pub(super) struct Book {
    /// Whether its product documents its task types (CDB): their counters are dense and exist
    /// at 0 for every monitored instance. Otherwise every type is counted in
    /// `finished_other`, its zeros written at first sight of each (instance, type).
    pub(super) dense: bool,
    pub(super) instances: Labels,
    pub(super) types: Labels,
    /// Per instance: finished counters of known types, `[type * 4 + terminal status]`.
    pub(super) finished: Chunked<[u64; DENSE]>,
    /// Per instance: whether its 48 zero counters exist (a monitored instance).
    pub(super) monitored: Vec<bool>,
    /// How many are.
    pub(super) monitored_count: usize,
    /// Finished counters of unknown types.
    pub(super) finished_other: BTreeMap<(InstIx, TypeIx, TaskStatus), u64>,
    pub(super) durations: BTreeMap<(TypeIx, TaskStatus), Histogram>,
    /// Task gauge series once seen: they stay, at 0, while the target runs. Sorted, each key
    /// once (12 bytes a key; a set took twice that).
    pub(super) seen_tasks: Vec<(InstIx, TypeIx, TaskStatus)>,
    /// The last task each finished counter counted (job id, end): the counter's exemplar.
    /// Shared with the snapshots, copied when a poll changes it after a publication.
    pub(super) exemplars: Arc<Exemplars>,
}

/// Finished counters' exemplars: (job id, end) by (instance, type, status).
pub(super) type Exemplars = HashMap<(InstIx, TypeIx, TaskStatus), (i64, i64)>;

impl Book {
    pub(super) fn new(dense: bool) -> Book {
        Book {
            dense,
            instances: Labels::default(),
            types: base_types(),
            finished: Chunked::default(),
            monitored: Vec::new(),
            monitored_count: 0,
            finished_other: BTreeMap::new(),
            durations: BTreeMap::new(),
            seen_tasks: Vec::new(),
            exemplars: Arc::default(),
        }
    }

    pub(super) fn instance(&mut self, name: &str) -> InstIx {
        let i = self.instances.ix(name);
        if i as usize == self.monitored.len() {
            // Only a product with documented types counts densely.
            if self.dense {
                self.finished.push([0; DENSE]);
            }
            self.monitored.push(false);
        }
        i
    }

    pub(super) fn task_type(&mut self, name: &str) -> TypeIx {
        // The table is compacted long before it could outgrow the index; should a restored
        // store still bring more names than that, they count as `other` (its place is fixed).
        TypeIx::try_from(self.types.ix(name)).unwrap_or(OTHER_IX)
    }

    /// Drops the series of unknown task types (outside [`TASK_TYPES`]) that no task in the
    /// store has any more, and compacts the type table once it holds many such dead names.
    pub(super) fn drop_types_without_tasks(&mut self, present: &HashSet<&str>) {
        let known = TASK_TYPES.len();
        let names = self.types.names.clone();
        let gone = |t: TypeIx| (t as usize) > known && !present.contains(&*names[t as usize]);
        self.seen_tasks.retain(|&(_, t, _)| !gone(t));
        self.finished_other.retain(|&(_, t, _), _| !gone(t));
        if self.exemplars.keys().any(|&(_, t, _)| gone(t)) {
            Arc::make_mut(&mut self.exemplars).retain(|&(_, t, _), _| !gone(t));
        }
        self.durations.retain(|&(t, _), _| !gone(t));
        if names.len() > known + 4 * crate::domain::MAX_OTHER_TASK_TYPES {
            self.compact_types();
        }
    }

    /// Rebuilds the type table with the types still referenced, renumbering their uses (the
    /// known types keep their places, so the dense counters stay as they are).
    pub(super) fn compact_types(&mut self) {
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
        for key in &mut self.seen_tasks {
            key.1 = re(key.1);
        }
        self.seen_tasks.sort_unstable();
        self.finished_other = std::mem::take(&mut self.finished_other)
            .into_iter()
            .map(|((i, t, s), v)| ((i, re(t), s), v))
            .collect();
        self.durations = std::mem::take(&mut self.durations)
            .into_iter()
            .map(|((t, s), h)| ((re(t), s), h))
            .collect();
        self.exemplars = Arc::new(
            self.exemplars
                .iter()
                .map(|(&(i, t, s), &e)| ((i, re(t), s), e))
                .collect(),
        );
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
    pub(super) fn saved(&self, shard: crate::shard::Shard) -> SavedCounters {
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
    pub(super) fn restore(
        &mut self,
        saved: &SavedCounters,
        shard: crate::shard::Shard,
        keep: &dyn Fn(&str) -> bool,
    ) {
        for f in saved.finished.iter().filter(|f| keep(&f.instance)) {
            let ix = self.instance(&f.instance);
            let ty = self.task_type(&f.task_type);
            match terminal_ix(f.status) {
                Some(s) if self.dense && (ty as usize) < TASK_TYPES.len() => {
                    if let Some(dense) = self.finished.get_mut(ix as usize) {
                        dense[ty as usize * 4 + s] += f.value;
                    }
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
                    last: Box::default(),
                });
        }
    }
}

/// The type table's fixed start: the known types in [`TASK_TYPES`] order (indices into the
/// dense counters), then `other` at [`OTHER_IX`].
pub(super) fn base_types() -> Labels {
    Labels::with(
        TASK_TYPES
            .iter()
            .map(|t| t.2)
            .chain([crate::domain::OTHER_TASK_TYPE]),
    )
}

/// Where `other` sits in every type table.
pub(super) const OTHER_IX: TypeIx = TASK_TYPES.len() as TypeIx;

/// A target's instances as last listed, for `tencentcloud_cdb_instance_info`.
#[derive(Debug)]
pub(super) struct Inventory {
    pub(super) product: &'static dyn Product,
    pub(super) region: String,
    /// `tag_<key>` label names, in the order of `tag_keys`.
    pub(super) tag_labels: Vec<String>,
    pub(super) tag_keys: Vec<String>,
    pub(super) instances: Arc<Instances>,
}

/// One target's task series: the book its polls count into, the snapshot scrapes render, and
/// the instance inventory of the info family. Owned by the target's handle, so that a target
/// that goes takes all of them with it.
#[derive(Debug)]
pub struct TargetSeries {
    product: &'static dyn Product,
    book: Mutex<Book>,
    /// The last published snapshot; none before the first publication.
    published: Mutex<Option<Arc<Series>>>,
    /// The last listing; none without discovery.
    inventory: Mutex<Option<Arc<Inventory>>>,
}

impl Default for TargetSeries {
    /// A CDB target's.
    fn default() -> Self {
        TargetSeries::of(crate::product::default_product())
    }
}

impl TargetSeries {
    /// The series of a target of `product`.
    pub fn of(product: &'static dyn Product) -> Self {
        TargetSeries {
            product,
            book: Mutex::new(Book::new(!product.known_task_types().is_empty())),
            published: Mutex::new(None),
            inventory: Mutex::new(None),
        }
    }

    /// Series that start from saved counter values (a restart, or a reload that restarts the
    /// target): what it had counted, for the instances `keep` accepts. Visible from the next
    /// publication.
    pub fn restored(
        product: &'static dyn Product,
        saved: &SavedCounters,
        shard: crate::shard::Shard,
        keep: &dyn Fn(&str) -> bool,
    ) -> Self {
        let series = TargetSeries::of(product);
        series
            .book
            .lock()
            .expect("lock")
            .restore(saved, shard, keep);
        series
    }

    /// The values of the task counters and histograms, for the state file. The state writer
    /// calls it under the target's state lock, which every increment also holds, so the values
    /// match the task store written beside them.
    pub fn saved(&self, shard: crate::shard::Shard) -> SavedCounters {
        self.book.lock().expect("lock").saved(shard)
    }

    /// A task finished: count it once under each of its instances, observe its duration once.
    /// Visible from the next publication.
    pub fn task_finished(&self, f: &Finished) {
        let mut book = self.book.lock().expect("lock");
        let ty = book.task_type(&f.task_type);
        for i in &f.instances {
            let ix = book.instance(i);
            match terminal_ix(f.status) {
                Some(s) if book.dense && (ty as usize) < TASK_TYPES.len() => {
                    if let Some(dense) = book.finished.get_mut(ix as usize) {
                        dense[ty as usize * 4 + s] += 1;
                    }
                }
                _ => *book.finished_other.entry((ix, ty, f.status)).or_default() += 1,
            }
            if let Some(end) = f.end {
                Arc::make_mut(&mut book.exemplars).insert((ix, ty, f.status), (f.job_id, end));
            }
        }
        if let Some(d) = f.duration {
            let task = f.end.map(|end| (f.job_id, end));
            book.durations
                .entry((ty, f.status))
                .or_default()
                .observe_task(d as f64, task);
        }
    }

    /// Drops the series of instances that are no longer monitored (a discovered instance left
    /// the list and has no task in the window); takes effect at the next publication.
    pub fn forget_instances<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let gone: HashSet<&str> = ids.into_iter().collect();
        let mut book = self.book.lock().expect("lock");
        // A TDSQL-C cluster takes its `cluster/instance` units with it.
        let names = book.instances.names.clone();
        let units = names
            .iter()
            .enumerate()
            .filter(|(_, n)| gone.contains(crate::domain::owner(n)))
            .map(|(ix, _)| ix as InstIx);
        for ix in units {
            if book.monitored[ix as usize] {
                book.monitored_count -= 1;
            }
            book.monitored[ix as usize] = false;
            if let Some(dense) = book.finished.get_mut(ix as usize) {
                *dense = [0; DENSE];
            }
            book.finished_other.retain(|(i, ..), _| *i != ix);
            if book.exemplars.keys().any(|k| k.0 == ix) {
                Arc::make_mut(&mut book.exemplars).retain(|(i, ..), _| *i != ix);
            }
            book.seen_tasks.retain(|(i, ..)| *i != ix);
        }
    }

    /// The target's instances as just listed in `region`, with the tag keys to copy into
    /// labels.
    pub fn set_inventory(&self, region: &str, tag_keys: &[String], instances: Arc<Instances>) {
        let inventory = Inventory {
            product: self.product,
            region: region.to_string(),
            tag_labels: tag_keys.iter().map(|k| tag_label(k)).collect(),
            tag_keys: tag_keys.to_vec(),
            instances,
        };
        *self.inventory.lock().expect("lock") = Some(Arc::new(inventory));
    }

    /// The size of the task type table (it is compacted as unknown types leave).
    #[cfg(test)]
    pub(super) fn type_table_len(&self) -> usize {
        self.book.lock().expect("lock").types.names.len()
    }

    /// About how many samples the target's last snapshot and listing put on a page (a
    /// histogram's buckets count one each), for choosing how to serve it.
    pub fn series_count(&self) -> usize {
        let (series, inventory) = self.snapshot();
        let tasks = series.map_or(0, |s| s.series_count());
        tasks + inventory.map_or(0, |i| i.instances.len())
    }

    /// What a scrape renders: the last snapshot and the last listing.
    pub(super) fn snapshot(&self) -> (Option<Arc<Series>>, Option<Arc<Inventory>>) {
        (
            self.published.lock().expect("lock").clone(),
            self.inventory.lock().expect("lock").clone(),
        )
    }

    /// Builds the snapshot of a poll (see [`super::Metrics::publish`]), and how many
    /// monitored instances were past [`MAX_MONITORED_INSTANCES`].
    pub(super) fn build<'a>(
        &self,
        region: &str,
        monitored: impl IntoIterator<Item = &'a str>,
        aggregates: &Aggregates<'_>,
        last_finished: impl IntoIterator<Item = (KeyRef<'a>, i64)>,
        with_progress: bool,
    ) -> (Arc<Series>, i64) {
        let mut book = self.book.lock().expect("lock");
        // Without documented types there are no zeros in advance: they come at first sight.
        let over = if book.dense {
            book.monitor(monitored)
        } else {
            0
        };
        // Task types outside the known table leave with their last task: their series go, and
        // the table keeps room for the types the API sends next.
        let present: HashSet<&str> = aggregates.tasks.iter().map(|(k, _)| k.1).collect();
        book.drop_types_without_tasks(&present);
        // The counts of this poll, then a zero for each series seen before and not now.
        let mut tasks: Vec<((InstIx, TypeIx, TaskStatus), u64)> =
            Vec::with_capacity(aggregates.tasks.len());
        for &((i, ty, st), n) in &aggregates.tasks {
            tasks.push(((book.instance(i), book.task_type(ty), st), n));
        }
        // Types folded into `other` can bring a key twice.
        add_up_by_key(&mut tasks);
        book.see_tasks(tasks.iter().map(|&(key, _)| key));
        if !book.dense {
            book.zeros_at_first_sight();
        }
        // The snapshot keeps it: exactly one entry per series seen, no spare room.
        let counted = tasks.len();
        tasks.reserve_exact(book.seen_tasks.len().saturating_sub(counted));
        for &key in &book.seen_tasks {
            if tasks[..counted]
                .binary_search_by_key(&key, |&(k, _)| k)
                .is_err()
            {
                tasks.push((key, 0));
            }
        }
        let oldest = aggregates
            .oldest_unfinished
            .iter()
            .map(|((i, ty), v)| (book.instance(i), book.task_type(ty), *v))
            .collect();
        let progress = if with_progress {
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
        let series = Series::from_book(
            self.product,
            region,
            &book,
            tasks,
            oldest,
            progress,
            last_finished,
        );
        (Arc::new(series), over)
    }

    /// Shows `snapshot` on the pages from now on.
    pub(super) fn show(&self, snapshot: Arc<Series>) {
        *self.published.lock().expect("lock") = Some(snapshot);
    }
}

impl Book {
    /// The finished counters of every (instance, type) pair seen in the gauge, at 0 for the
    /// terminal statuses not counted yet: a product without documented types gets its zero
    /// series when a type first shows, so that `increase()` sees the first failure after it.
    fn zeros_at_first_sight(&mut self) {
        let pairs: HashSet<(InstIx, TypeIx)> =
            self.seen_tasks.iter().map(|&(i, t, _)| (i, t)).collect();
        for (i, t) in pairs {
            for st in TaskStatus::TERMINAL {
                self.finished_other.entry((i, t, st)).or_default();
            }
        }
    }

    /// Adds the task gauge series not seen before (`keys`: sorted), keeping the list sorted.
    fn see_tasks(&mut self, keys: impl Iterator<Item = (InstIx, TypeIx, TaskStatus)>) {
        let seen = &self.seen_tasks;
        let new: Vec<_> = keys.filter(|k| seen.binary_search(k).is_err()).collect();
        if !new.is_empty() {
            // Kept between polls, and rarely added to: no spare room.
            self.seen_tasks.reserve_exact(new.len());
            self.seen_tasks.extend(new);
            self.seen_tasks.sort_unstable();
        }
    }

    /// Marks `instances` monitored (their zero counters exist), up to the bound; returns how
    /// many were past it. Each monitored instance brings 48 zero series: past the bound an
    /// instance gets only the series of its own tasks.
    fn monitor<'a>(&mut self, instances: impl IntoIterator<Item = &'a str>) -> i64 {
        let mut over = 0;
        for i in instances {
            let ix = self.instance(i);
            if self.monitored[ix as usize] {
                continue;
            }
            if self.monitored_count >= MAX_MONITORED_INSTANCES {
                over += 1;
                continue;
            }
            self.monitored[ix as usize] = true;
            self.monitored_count += 1;
        }
        over
    }
}
