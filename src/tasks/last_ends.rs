//! The end of the newest finished task by (instance, type, terminal status), kept compact: one
//! map per terminal status, keyed by (instance, type), so an entry is 16 bytes.
//!
//! One map keyed by `(Sym, Sym, TaskStatus)` spent 24 bytes an entry (819 KB at 1,000
//! instances, measured with heaptrack, when it also kept non-terminal statuses); the maps by
//! status spend 16 (418 KB there for 16,040 ends, heaptrack again). Sorted vectors with
//! insertion in place would spend less, but at 10,000 instances their inserts slowed the first
//! ingest by a fifth (the job table's sorted part with a merged tail, `table.rs`, avoids that,
//! and could serve here too).

use crate::domain::TaskStatus;
use crate::intern::Sym;
use std::collections::HashMap;

/// One terminal status's ends, by instance and task type.
type Run = HashMap<(Sym, Sym), i64>;

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
        self.runs[run_of(st)?].get_mut(&(i, t))
    }

    /// Adds a key that [`LastEnds::get_mut`] did not find. A status that is not terminal has no
    /// last finished task and is not kept (returns false).
    pub(super) fn insert_new(&mut self, (i, t, st): (Sym, Sym, TaskStatus), end: i64) -> bool {
        let Some(run) = run_of(st) else {
            return false;
        };
        self.runs[run].insert((i, t), end);
        true
    }

    /// Every entry: the key and its end.
    pub(super) fn iter(&self) -> impl Iterator<Item = ((Sym, Sym, TaskStatus), i64)> + '_ {
        TaskStatus::TERMINAL
            .iter()
            .zip(&self.runs)
            .flat_map(|(st, run)| run.iter().map(move |(&(i, t), &e)| ((i, t, *st), e)))
    }

    /// Keeps the entries `keep` accepts (it sees each key once).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(Sym, Sym) -> bool) {
        for run in &mut self.runs {
            run.retain(|k, _| keep(k.0, k.1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against one hash map of the whole key: the same ends, raised and dropped the same way.
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
