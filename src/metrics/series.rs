//! The immutable snapshot of one target's task series that a poll publishes and scrapes
//! render: instance ids and type names stored once, rows produced in label order.

use super::TASK_DURATION_BUCKETS;
use super::book::{Book, DENSE, Exemplars, Histogram, InstIx, TypeIx, terminal_ix};
use super::chunked::Chunked;
use crate::domain::{TASK_TYPES, TaskStatus};
use crate::product::Product;
use std::collections::HashMap;
use std::sync::Arc;

/// A finished counter's value and its last counted task (job id, end).
pub(super) type Counted = (u64, Option<(i64, i64)>);

/// Label values of a row: instance, task type, status.
pub(super) type Key3<'a> = (&'a str, &'a str, &'static str);

/// One target's series as of its last poll: immutable, shared by the scrapes rendering it.
#[derive(Debug)]
pub struct Series {
    pub(super) product: &'static dyn Product,
    /// [`Book::dense`]
    pub(super) dense: bool,
    pub(super) region: Box<str>,
    pub(super) instances: Arc<Vec<Box<str>>>,
    pub(super) types: Arc<Vec<Box<str>>>,
    /// Instance indices in label order.
    pub(super) order: Vec<InstIx>,
    /// Type indices in label order.
    pub(super) type_order: Vec<TypeIx>,
    pub(super) tasks: Vec<((InstIx, TypeIx, TaskStatus), u64)>,
    pub(super) finished: Chunked<[u64; DENSE]>,
    pub(super) monitored: Vec<bool>,
    /// How many are monitored (each renders its 48 counters).
    pub(super) monitored_count: usize,
    pub(super) finished_other: Vec<(InstIx, TypeIx, TaskStatus, u64)>,
    /// Where each (instance, type) pair's rows sit in `finished_other`: start and end.
    pub(super) other_at: HashMap<(InstIx, TypeIx), (u32, u32)>,
    /// [`Book::exemplars`] as of the publication.
    pub(super) exemplars: Arc<Exemplars>,
    pub(super) durations: Vec<(TypeIx, TaskStatus, Histogram)>,
    pub(super) last_finished: Vec<(InstIx, TypeIx, TaskStatus, i64)>,
    pub(super) oldest: Vec<(InstIx, TypeIx, i64)>,
    pub(super) progress: Vec<(InstIx, TypeIx, TaskStatus, i64, i64)>,
}

impl Series {
    /// About how many samples it renders.
    pub fn series_count(&self) -> usize {
        self.tasks.len()
            + self.monitored_count * DENSE
            + self.finished_other.len()
            + self.durations.len() * (TASK_DURATION_BUCKETS.len() + 3)
            + self.last_finished.len()
            + self.oldest.len()
            + self.progress.len()
    }

    pub(super) fn inst(&self, i: InstIx) -> &str {
        &self.instances[i as usize]
    }

    pub(super) fn ty(&self, t: TypeIx) -> &str {
        &self.types[t as usize]
    }

    /// Sorts rows by their label strings (instance, type, then status), as the text shows them.
    pub(super) fn sort<T>(
        &self,
        rows: &mut [T],
        key: impl Fn(&T) -> (InstIx, TypeIx, &'static str),
    ) {
        rows.sort_by(|a, b| {
            let (ia, ta, sa) = key(a);
            let (ib, tb, sb) = key(b);
            (self.inst(ia), self.ty(ta), sa).cmp(&(self.inst(ib), self.ty(tb), sb))
        });
    }

    /// Task gauge rows: (instance, type, status) and count.
    pub(super) fn task_rows(&self) -> impl Iterator<Item = (Key3<'_>, u64)> + '_ {
        self.tasks
            .iter()
            .map(|((i, t, st), n)| ((self.inst(*i), self.ty(*t), st.as_str()), *n))
    }

    /// Last-finished rows: (instance, type, status) and end time.
    pub(super) fn last_finished_rows(&self) -> impl Iterator<Item = (Key3<'_>, i64)> + '_ {
        self.last_finished
            .iter()
            .map(|(i, t, st, v)| ((self.inst(*i), self.ty(*t), st.as_str()), *v))
    }

    /// Oldest-unfinished rows: (instance, type) and start time.
    pub(super) fn oldest_rows(&self) -> impl Iterator<Item = ((&str, &str), i64)> + '_ {
        self.oldest
            .iter()
            .map(|(i, t, v)| ((self.inst(*i), self.ty(*t)), *v))
    }

    /// Progress rows: (instance, job id, type, status) and progress 0-100.
    pub(super) fn progress_rows(
        &self,
    ) -> impl Iterator<Item = ((&str, i64, &str, &'static str), i64)> + '_ {
        self.progress
            .iter()
            .map(|(i, t, st, job, p)| ((self.inst(*i), *job, self.ty(*t), st.as_str()), *p))
    }

    /// Duration histogram rows: (status, type) and histogram.
    pub(super) fn duration_rows(
        &self,
    ) -> impl Iterator<Item = ((&'static str, &str), Histogram)> + '_ {
        self.durations
            .iter()
            .map(|(t, st, h)| ((st.as_str(), self.ty(*t)), h.clone()))
    }

    /// Finished counters in label order: (instance, type, status) and the value.
    pub(super) fn finished_rows(&self) -> impl Iterator<Item = (Key3<'_>, u64)> + '_ {
        self.finished_rows_as(|_, v| v)
    }

    /// Finished counters in label order with the last task each counted (job id, end), when
    /// known: the OpenMetrics page's rows. A sibling of [`Series::finished_rows`] rather than
    /// an option of it, so that the text page's rows stay plain counts (measured: carrying the
    /// empty exemplar through the text page's merge cost it 15% of its render time).
    pub(super) fn counted_rows(&self) -> impl Iterator<Item = (Key3<'_>, Counted)> + '_ {
        // A counter at 0 has counted no task: no look-up (most rows of a large page).
        self.finished_rows_as(|key, v| {
            (
                v,
                (v > 0).then(|| self.exemplars.get(&key).copied()).flatten(),
            )
        })
    }

    fn finished_rows_as<'s, V>(
        &'s self,
        value: impl Fn((InstIx, TypeIx, TaskStatus), u64) -> V + Copy + 's,
    ) -> impl Iterator<Item = (Key3<'s>, V)> + 's {
        let mut statuses = TaskStatus::TERMINAL;
        statuses.sort_by_key(|s| s.as_str());
        self.order.iter().flat_map(move |&i| {
            let dense = self.finished.get(i as usize).unwrap_or(&[0; DENSE]);
            let all = self.monitored[i as usize];
            self.type_order.iter().flat_map(move |&t| {
                let known = self.dense && (t as usize) < TASK_TYPES.len();
                let dense_rows = statuses.into_iter().filter_map(move |st| {
                    if !known {
                        return None;
                    }
                    let v = dense[t as usize * 4 + terminal_ix(st).expect("terminal")];
                    (all || v > 0).then(|| {
                        (
                            (self.inst(i), self.ty(t), st.as_str()),
                            value((i, t, st), v),
                        )
                    })
                });
                let (from, to) = match self.other_at.get(&(i, t)) {
                    Some(&(from, to)) if !known => (from as usize, to as usize),
                    _ => (0, 0),
                };
                let other_rows = self.finished_other[from..to]
                    .iter()
                    .map(move |(_, _, st, v)| {
                        (
                            (self.inst(i), self.ty(t), st.as_str()),
                            value((i, t, *st), *v),
                        )
                    });
                dense_rows.chain(other_rows)
            })
        })
    }
}

impl Series {
    pub(super) fn from_book(
        product: &'static dyn Product,
        region: &str,
        book: &Book,
        mut tasks: Vec<((InstIx, TypeIx, TaskStatus), u64)>,
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
            product,
            dense: book.dense,
            region: region.into(),
            instances,
            types,
            order,
            type_order,
            tasks: Vec::new(),
            finished: book.finished.clone(),
            monitored: book.monitored.clone(),
            monitored_count: book.monitored_count,
            finished_other: book
                .finished_other
                .iter()
                .map(|(&(i, t, st), &v)| (i, t, st, v))
                .collect(),
            other_at: HashMap::new(),
            exemplars: book.exemplars.clone(),
            durations: Vec::new(),
            last_finished: Vec::new(),
            oldest: Vec::new(),
            progress: Vec::new(),
        };
        s.sort(&mut tasks, |r| (r.0.0, r.0.1, r.0.2.as_str()));
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
        let mut other = std::mem::take(&mut s.finished_other);
        s.sort(&mut other, |r| (r.0, r.1, r.2.as_str()));
        let mut from = 0;
        for (n, row) in other.iter().enumerate() {
            let last = other
                .get(n + 1)
                .is_none_or(|next| (next.0, next.1) != (row.0, row.1));
            if last {
                s.other_at
                    .insert((row.0, row.1), (from as u32, n as u32 + 1));
                from = n + 1;
            }
        }
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
