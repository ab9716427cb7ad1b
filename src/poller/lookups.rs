//! Step 3 of a poll: the final states of old unfinished tasks, read by narrow look-ups around
//! their start seconds (docs/semantics.md#how-a-poll-asks). A product whose list takes no
//! status filter (PostgreSQL) looks up every old unfinished task in turn
//! ([`window::LookupTurns`]); the others only those the status-filtered query no longer
//! returned.

use super::{Pass, PollReport, Target, query};
use crate::domain::owner;
use crate::poller::plan::QueryMode;
use crate::tasks::Unfinished;
use crate::window::{self, LOOKUP_SPAN_SECS};
use std::collections::{BTreeMap, HashSet};
use tokio_util::sync::CancellationToken;

impl Target {
    /// Looks up the old unfinished tasks (`old`) that are due: those the status-filtered query
    /// did not return (`returned`), or, `unfiltered`, those whose turn has come.
    pub(super) async fn look_up_old(
        &mut self,
        (old, returned, unfiltered): (Vec<Unfinished>, &HashSet<i64>, bool),
        (mode, now): (QueryMode, i64),
        cancel: &CancellationToken,
        report: &mut PollReport,
    ) {
        let interval = self.settings.interval.as_secs().max(1) as i64;
        // Without a status filter, look-ups are packed by the tracked tasks they return.
        let known = unfiltered.then(|| self.lock().store.sorted_starts());
        let poll = self.polls as i64;
        if let Some(known) = &known {
            let per_page = self.client.product().task_page_limit() as i64;
            let old_ids: Vec<i64> = old.iter().map(|t| t.job_id).collect();
            self.turns.start_poll(known, per_page, &old_ids);
        }
        let mut due = |t: &Unfinished| {
            !unfiltered || self.turns.due(poll, (t.job_id, t.start), (now, interval))
        };
        let missing: Vec<Unfinished> = old
            .into_iter()
            .filter(|t| due(t) && !returned.contains(&t.job_id))
            .collect();
        let asked: Vec<i64> = missing.iter().map(|t| t.job_id).collect();
        let read = self
            .final_states(mode, missing, known, cancel, report)
            .await;
        if report.failure.is_none() {
            self.turns.read(poll, asked.into_iter().chain(read));
        }
    }

    /// Narrow look-ups around the start seconds of `missing` tracked tasks (job, start,
    /// instances). Tasks a successful look-up did not find count a miss in the store. Returns
    /// the job ids the look-ups returned.
    async fn final_states(
        &mut self,
        mode: QueryMode,
        missing: Vec<Unfinished>,
        packed: Option<Vec<i64>>,
        cancel: &CancellationToken,
        report: &mut PollReport,
    ) -> Vec<i64> {
        let mut by_unit: BTreeMap<Option<String>, Vec<(i64, i64)>> = BTreeMap::new();
        for u in missing {
            let unit = match mode {
                QueryMode::RegionWide => None,
                QueryMode::PerInstance => u
                    .instances
                    .iter()
                    .map(|i| owner(i))
                    .find(|o| self.instances.iter().any(|l| l == o))
                    .map(str::to_string),
            };
            by_unit.entry(unit).or_default().push((u.job_id, u.start));
        }
        let (mut not_found, mut read) = (Vec::new(), Vec::new());
        // `packed`, the tracked start times, for a product without a status filter: its
        // long-running tasks are all looked up in turn, so ranges are packed by the page they
        // cost rather than by their span.
        for (unit, tasks) in by_unit {
            let starts: Vec<i64> = tasks.iter().map(|t| t.1).collect();
            let ranges = match &packed {
                Some(known) => window::packed_lookup_ranges(
                    &starts,
                    known,
                    self.client.product().task_page_limit() as usize,
                ),
                None => window::lookup_ranges(&starts, LOOKUP_SPAN_SECS),
            };
            for range in ranges {
                let found: HashSet<i64> = match self
                    .fetch_all(
                        query(&unit, range, &[]),
                        range,
                        &unit,
                        Pass::Follow,
                        cancel,
                        report,
                    )
                    .await
                {
                    Ok(f) => f.ids.into_iter().collect(),
                    Err(e) => {
                        report.failure = Some(e);
                        return read;
                    }
                };
                read.extend(&found);
                let in_range =
                    |start: i64| range.begin.is_some_and(|b| start >= b) && start <= range.end;
                not_found.extend(
                    tasks
                        .iter()
                        .filter(|(job, start)| in_range(*start) && !found.contains(job))
                        .map(|t| t.0),
                );
            }
        }
        let dropped = self.lock().store.missed(&not_found);
        if dropped > 0 {
            tracing::info!(target_id = %self.id, dropped, "unfinished tasks no longer reported by the API were dropped");
        }
        read
    }
}
