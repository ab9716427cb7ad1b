//! The end of the newest finished task by (instance, type, terminal status), kept compact: one
//! run per terminal status, each a vector of 16-byte entries sorted by key, with the few keys
//! added since the last merge kept apart, unsorted, until there are [`PENDING`] of them.
//!
//! At 1,000 instances the store holds about 28,000 such ends. A hash map of
//! `(Sym, Sym, TaskStatus) -> i64` spends 24 bytes an entry plus a control byte, over a table
//! that is at most seven eighths full (819 KB there, measured with heaptrack); sorted runs
//! spend 16 (about 450 KB). Looking a key up costs a binary search and a scan of the pending
//! ones; a merge moves the run once per [`PENDING`] new keys.

use crate::domain::TaskStatus;
use crate::intern::Sym;

/// New keys kept unsorted before they are merged into their run.
const PENDING: usize = 64;

/// One key's entry: instance, task type, end.
type Entry = (Sym, Sym, i64);

#[derive(Debug, Clone, Default)]
struct Run {
    sorted: Vec<Entry>,
    pending: Vec<Entry>,
}

impl Run {
    fn get_mut(&mut self, key: (Sym, Sym)) -> Option<&mut i64> {
        if let Ok(at) = self.sorted.binary_search_by_key(&key, |e| (e.0, e.1)) {
            return Some(&mut self.sorted[at].2);
        }
        self.pending
            .iter_mut()
            .find(|e| (e.0, e.1) == key)
            .map(|e| &mut e.2)
    }

    fn insert_new(&mut self, entry: Entry) {
        self.pending.push(entry);
        if self.pending.len() >= PENDING {
            self.merge();
        }
    }

    /// Moves the pending keys into the sorted run, in place from the back.
    fn merge(&mut self) {
        self.pending.sort_unstable_by_key(|e| (e.0, e.1));
        let old = self.sorted.len();
        self.sorted.extend_from_slice(&self.pending);
        let (mut i, mut j, mut to) = (old, self.pending.len(), self.sorted.len());
        while j > 0 {
            to -= 1;
            if i > 0
                && (self.sorted[i - 1].0, self.sorted[i - 1].1)
                    > (self.pending[j - 1].0, self.pending[j - 1].1)
            {
                self.sorted[to] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[to] = self.pending[j - 1];
                j -= 1;
            }
        }
        self.pending.clear();
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.sorted.iter().chain(&self.pending)
    }
}

/// Newest ends by (instance, type, terminal status).
#[derive(Debug, Clone, Default)]
pub(super) struct LastEnds {
    runs: [Run; TaskStatus::TERMINAL.len()],
}

fn run_of(status: TaskStatus) -> Option<usize> {
    TaskStatus::TERMINAL.iter().position(|s| *s == status)
}

impl LastEnds {
    /// The end kept for a key, to raise; `None` when the key is new or the status is not
    /// terminal.
    pub(super) fn get_mut(&mut self, (i, t, st): (Sym, Sym, TaskStatus)) -> Option<&mut i64> {
        self.runs[run_of(st)?].get_mut((i, t))
    }

    /// Adds a key that [`LastEnds::get_mut`] did not find. A status that is not terminal has no
    /// last finished task and is not kept (returns false).
    pub(super) fn insert_new(&mut self, (i, t, st): (Sym, Sym, TaskStatus), end: i64) -> bool {
        let Some(run) = run_of(st) else {
            return false;
        };
        self.runs[run].insert_new((i, t, end));
        true
    }

    /// Every entry: the key and its end.
    pub(super) fn iter(&self) -> impl Iterator<Item = ((Sym, Sym, TaskStatus), i64)> + '_ {
        TaskStatus::TERMINAL
            .iter()
            .zip(&self.runs)
            .flat_map(|(st, run)| run.iter().map(move |e| ((e.0, e.1, *st), e.2)))
    }

    /// Keeps the entries `keep` accepts (it sees each key once).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(Sym, Sym) -> bool) {
        for run in &mut self.runs {
            run.sorted.retain(|e| keep(e.0, e.1));
            run.pending.retain(|e| keep(e.0, e.1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against a hash map, through every merge: the same ends, raised the same way.
    #[test]
    fn keeps_what_a_map_keeps() {
        let mut ends = LastEnds::default();
        let mut want: HashMap<(Sym, Sym, TaskStatus), i64> = HashMap::new();
        let mut rng = fastrand::Rng::with_seed(3);
        for n in 0..5_000 {
            let key = (
                Sym::from_raw(rng.u32(0..300)),
                Sym::from_raw(rng.u32(0..7)),
                [TaskStatus::Succeed, TaskStatus::Failed, TaskStatus::Killed][rng.usize(..3)],
            );
            let end = rng.i64(-50..1_000_000);
            match ends.get_mut(key) {
                Some(v) => *v = (*v).max(end),
                None => assert!(ends.insert_new(key, end)),
            }
            let w = want.entry(key).or_insert(end);
            *w = (*w).max(end);
            if n % 997 == 0 {
                ends.retain(|i, _| i.raw() % 11 != 5);
                want.retain(|k, _| k.0.raw() % 11 != 5);
            }
        }
        let got: HashMap<_, _> = ends.iter().collect();
        assert_eq!(got.len(), ends.iter().count(), "a key kept twice");
        assert_eq!(got, want);
        for run in &ends.runs {
            assert!(
                run.sorted
                    .windows(2)
                    .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
            );
        }
    }

    #[test]
    fn a_status_that_is_not_terminal_is_not_kept() {
        let mut ends = LastEnds::default();
        let key = (Sym::from_raw(1), Sym::from_raw(2), TaskStatus::Running);
        assert!(!ends.insert_new(key, 10));
        assert!(ends.get_mut(key).is_none());
        assert_eq!(ends.iter().count(), 0);
    }
}
