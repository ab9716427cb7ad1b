//! The poll loop of one target (account + region): schedule, query plan, paging, retries with
//! jittered exponential backoff, the account's rate limit, and shutdown. It drives
//! client -> store -> metrics; it never stops on an API failure.

mod lookups;
mod plan;

use crate::call::{CallContext, RateLimiter, call_with_retry};
use crate::clock::SharedClock;
use crate::domain::{Instances, TargetId, Task, TaskStatus, owner};
use crate::metrics::{Metrics, Staged};
use crate::shard::Shard;
use crate::state::{Persister, SavedTarget};
use crate::target::TargetHandle;
use crate::tasks::{Observation, Scope};
use crate::tencent::model::{TaskQuery, sanitize};
use crate::tencent::paging::Pager;
use crate::tencent::{Client, Error};
use crate::window::{self, Range};
pub use plan::{QueryInputs, QueryMode, REPROBE_EVERY, plan_query};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A generous ceiling on the tasks one region starts in a day: 20 a second, all day. The
/// API's own rate limit (100 requests a second of 100 tasks) could list more, but no account
/// runs that many background tasks; a server that pages past it is broken or hostile.
pub const MAX_TASKS_PER_REGION_DAY: u64 = 2_000_000;

/// The most pages one query may take: the ceiling above over the lookback (at least a day), in
/// pages of 100. 20,000 for the default 24 h.
pub fn max_pages(lookback: Duration) -> u64 {
    let days = lookback.as_secs().div_ceil(86_400).max(1);
    days * MAX_TASKS_PER_REGION_DAY / 100
}

/// How long one poll may take before it fails with `PollDeadline`: ten intervals, and at least
/// 15 minutes, which a first ingest of a million tasks at 20 requests a second fits in.
pub fn poll_deadline(interval: Duration) -> Duration {
    (interval * 10).max(Duration::from_secs(900))
}

/// The most tasks the first poll reserves room for from a page's `TotalCount`.
const MAX_RESERVE: usize = 2_000_000;

/// Settings of a target's loop.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Time between polls.
    pub interval: Duration,
    /// `poll.lookback`.
    pub lookback: Duration,
    /// The instances this process owns (docs/configuration.md#sharding).
    pub shard: Shard,
    /// The most pages one query may take ([`max_pages`] of the lookback).
    pub max_pages: u64,
    /// How long one poll may take ([`poll_deadline`] of the interval).
    pub deadline: Duration,
    /// Log every observed status change (docs/semantics.md#task-events, `log.task_events`).
    pub task_events: bool,
}

impl PollSettings {
    /// Settings with the page ceiling and deadline derived from the interval and lookback.
    pub fn new(interval: Duration, lookback: Duration, shard: Shard) -> Self {
        PollSettings {
            interval,
            lookback,
            shard,
            max_pages: max_pages(lookback),
            deadline: poll_deadline(interval),
            task_events: false,
        }
    }
}

/// One target's poller and its task store.
#[derive(Debug)]
pub struct Target {
    /// Account and region.
    pub id: TargetId,
    /// Listed instances; empty means the whole region.
    pub instances: Vec<String>,
    client: Client,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    settings: PollSettings,
    /// Everything the exporter keeps about the target: store, series, status, instances.
    handle: Arc<TargetHandle>,
    first_poll: bool,
    /// Polls started, for spreading the look-ups of long-running tasks over polls.
    polls: u64,
    /// The look-up turns of old unfinished tasks, for a product without a status filter.
    turns: window::LookupTurns,
    mode: Option<QueryMode>,
    region_volume: Option<f64>,
    polls_since_probe: u32,
    last_failure: Option<String>,
    rng: fastrand::Rng,
    /// When the current poll must give up.
    deadline: tokio::time::Instant,
    /// What discovery listed at the last publication.
    last_discovered: Arc<Instances>,
    /// The state file's writer: a poll's changes reach the disk before `/metrics` shows them.
    persister: Option<Arc<Persister>>,
    /// The unknown task types admitted as label values of their own.
    types: crate::domain::TypeGate,
    /// The store's baseline cut-off is a start time on this host's clock (no poll has covered
    /// anything yet): moved by the API's clock offset once an answer tells it.
    baseline_on_local_clock: bool,
}

/// Everything a [`Target`] is made of.
#[derive(Debug)]
pub struct TargetParts {
    /// The target's handle: its store (fresh, restored or carried over), series, status row
    /// and instances.
    pub handle: Arc<TargetHandle>,
    /// Listed instances; empty means the whole region.
    pub instances: Vec<String>,
    /// The API client of this account and region.
    pub client: Client,
    /// The account's rate limit.
    pub limiter: Arc<RateLimiter>,
    /// Where the results go.
    pub metrics: Arc<Metrics>,
    /// Wall clock.
    pub clock: SharedClock,
    /// Interval, lookback, shard, limits.
    pub settings: PollSettings,
    /// The state file's writer, when there is a state file.
    pub persister: Option<Arc<Persister>>,
}

/// What a query's pages are read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// New tasks of the recent window: only their count is kept; with `may_skip` (region-wide),
    /// the pages after the first may be skipped (see `Target::can_skip_after_first_page`). The
    /// first poll's first page sizes the store.
    Recent {
        /// Whether pages may be skipped.
        may_skip: bool,
    },
    /// Tasks to follow up on (unfinished ones, final-state look-ups): the job ids seen are kept.
    Follow,
}

/// What the pages of a query brought.
#[derive(Debug, Default)]
struct Fetched {
    /// Job ids seen ([`Pass::Follow`] only).
    ids: Vec<i64>,
    /// `TotalCount` as the API said it.
    total: u64,
    /// When paging stopped early: the oldest start time on the pages read; known tasks that
    /// started at or before it were not re-read.
    skipped_below: Option<i64>,
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Requests sent (attempts, retries included).
    pub requests: u64,
    /// Of which for the recent window.
    pub requests_recent: u64,
    /// Of which for the older unfinished tasks.
    pub requests_unfinished: u64,
    /// Of which for final-state look-ups.
    pub requests_lookups: u64,
    /// Tasks returned (with duplicates).
    pub items: u64,
    /// Tasks counted as finished by this poll.
    pub finished: u64,
    /// The failure, if the poll did not complete.
    pub failure: Option<Error>,
    /// When the poll started (unix time, the clock's).
    pub started_at: i64,
    /// How it queried: `region-wide` or `per-instance`.
    pub mode: &'static str,
}

impl Target {
    /// A target with its state (fresh, or restored from a state file or an earlier config).
    pub fn new(parts: TargetParts) -> Self {
        let baseline_on_local_clock = {
            let mut st = parts.handle.state().lock().expect("lock");
            let lookback = parts.settings.lookback.as_secs() as i64;
            st.store.set_scope(scope_of(&parts.instances), lookback);
            st.store.set_shard(parts.settings.shard);
            st.covered_until.is_none()
        };
        // Jitter differs between targets but repeats between runs.
        let seed = parts
            .handle
            .id()
            .to_string()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        Target {
            id: parts.handle.id().clone(),
            instances: parts.instances,
            client: parts.client,
            limiter: parts.limiter,
            metrics: parts.metrics,
            clock: parts.clock,
            settings: parts.settings,
            handle: parts.handle,
            first_poll: true,
            polls: 0,
            turns: window::LookupTurns::default(),
            mode: None,
            region_volume: None,
            polls_since_probe: 0,
            last_failure: None,
            rng: fastrand::Rng::with_seed(seed),
            deadline: tokio::time::Instant::now(),
            last_discovered: Arc::default(),
            persister: parts.persister,
            baseline_on_local_clock,
            types: crate::domain::TypeGate::default(),
        }
    }

    /// The query mode chosen for the next poll, with the reason (for the debug log).
    fn choose_mode(&mut self) -> (QueryMode, String) {
        if self.instances.len() > 1 {
            self.polls_since_probe += 1;
        }
        plan_query(&QueryInputs {
            listed: self.instances.len(),
            region_volume: self.region_volume,
            current: self.mode,
            polls_since_probe: self.polls_since_probe,
        })
    }

    /// Chooses the mode, sets up the report, and lists the query units (one region-wide query,
    /// or one per listed instance).
    fn start_poll(&mut self, now: i64) -> (QueryMode, Vec<Option<String>>, PollReport) {
        let (mode, reason) = self.choose_mode();
        if self.mode != Some(mode) {
            tracing::debug!(target_id = %self.id, ?mode, %reason, "query plan");
        }
        self.mode = Some(mode);
        if mode == QueryMode::RegionWide {
            self.polls_since_probe = 0;
        }
        let units: Vec<Option<String>> = match mode {
            QueryMode::RegionWide => vec![None],
            QueryMode::PerInstance => self.instances.iter().cloned().map(Some).collect(),
        };
        let report = PollReport {
            started_at: now,
            mode: match mode {
                QueryMode::RegionWide => "region-wide",
                QueryMode::PerInstance => "per-instance",
            },
            ..PollReport::default()
        };
        (mode, units, report)
    }

    /// One poll: recent window, older unfinished tasks, final states; applied to the store page
    /// by page (a poll never holds more than one page of tasks) and published to the metrics at
    /// the end. Never panics on API input; a failure leaves the last good values.
    pub async fn poll(&mut self, cancel: &CancellationToken) -> PollReport {
        let started = tokio::time::Instant::now();
        self.deadline = tokio::time::Instant::now() + self.settings.deadline;
        // The API's clock (docs/semantics.md#clock-skew): windows and the covered time are on it.
        let local = self.clock.now();
        let now = local + self.client.clock_offset().unwrap_or(0);
        let lookback = self.settings.lookback.as_secs() as i64;
        let overlap = window::overlap_for(self.settings.interval.as_secs() as i64).min(lookback);
        let covered_until = self.lock().covered_until;
        let recent = window::recent_window(covered_until, now, lookback, overlap);
        let (mode, units, mut report) = self.start_poll(now);
        self.polls += 1;

        // 1. Tasks that started in the recent window. Region-wide, the pages after the first
        // are skipped when they can only hold tasks the store already knows (see
        // `Target::can_skip_after_first_page`).
        let may_skip = mode == QueryMode::RegionWide && self.instances.is_empty();
        let recent_seen = self
            .fetch_each(
                &units,
                recent,
                &[],
                Pass::Recent { may_skip },
                cancel,
                &mut report,
            )
            .await;
        report.requests_recent = report.requests;
        if report.failure.is_none() && mode == QueryMode::RegionWide && !self.first_poll {
            self.region_volume = Some(recent_seen.total as f64);
        }

        // 2. Older unfinished tasks (all of them on the first poll).
        let recent_begin = match recent_seen.skipped_below {
            Some(boundary) => boundary + 1,
            None => recent.begin.unwrap_or(now),
        };
        let old = self.lock().store.unfinished_before(recent_begin);
        let mut returned: HashSet<i64> = HashSet::new();
        // A product whose task list takes no status filter (PostgreSQL) would have to list
        // every task since the oldest unfinished one: its old unfinished tasks get the narrow
        // look-ups of step 3 instead (and tasks running since before the lookback at start-up
        // are not searched for).
        let statuses = self.client.product().filterable_unfinished();
        let filterable = (!statuses.is_empty()).then_some(statuses);
        if report.failure.is_none()
            && let Some(filterable) = filterable
            && let Some(range) = window::unfinished_range(
                self.first_poll,
                old.first().map(|t| t.start),
                recent_begin,
            )
        {
            let seen = self
                .fetch_each(&units, range, filterable, Pass::Follow, cancel, &mut report)
                .await;
            returned.extend(seen.ids);
        }
        report.requests_unfinished = report.requests - report.requests_recent;

        // 3. Final states of old unfinished tasks that left the unfinished set (or are WAITING).
        if report.failure.is_none() {
            let follow = (old, &returned, filterable.is_none());
            self.look_up_old(follow, (mode, now), cancel, &mut report)
                .await;
        }
        report.requests_lookups =
            report.requests - report.requests_recent - report.requests_unfinished;

        self.finish_poll(&report, (local, now), started).await;
        report
    }

    /// After a poll: a success moves the covered time and evicts; the state file is written
    /// (with a state file, the new counts reach the disk before a scrape can see them: see
    /// the crash windows in [`crate::state`]); the series are published either way.
    ///
    /// `(local, now)`: the poll's start on the local clock and on the API's clock as known
    /// then. The covered time is the earlier of that start and the same moment on the clock
    /// the poll has learnt since: a first poll that started ahead of the API never claims to
    /// have covered the API's future.
    async fn finish_poll(
        &mut self,
        report: &PollReport,
        (local, now): (i64, i64),
        started: tokio::time::Instant,
    ) {
        let ok = report.failure.is_none();
        let offset = self.client.clock_offset();
        if let Some(o) = offset {
            self.metrics.api_clock_skew(&self.id, o);
        }
        if ok {
            let covered = now.min(local + offset.unwrap_or(0));
            let mut st = self.lock();
            st.covered_until = Some(covered);
            st.store.evict(now);
            drop(st);
            self.first_poll = false;
        }
        if let Some(p) = &self.persister {
            p.durable().await;
        }
        // The poll's start as now known on the API's clock.
        let at = local + offset.unwrap_or(0);
        let (staged, tracked) = self.stage();
        // The snapshot is shown (its families deflated first, if a gzip scrape asks for them)
        // before the poll's success: a page that shows a poll's success shows its tasks.
        if self.metrics.deflates() {
            let (metrics, handle) = (self.metrics.clone(), self.handle.clone());
            let promoted =
                tokio::task::spawn_blocking(move || metrics.promote(handle.series(), staged));
            let _ = promoted.await;
        } else {
            self.metrics.promote(self.handle.series(), staged);
        }
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.poll_done(&self.id, ok, at, seconds, tracked);
        self.log_outcome(report);
    }

    /// Applies one page's observations to the store (observations are facts, even from a poll
    /// that fails later) and counts the tasks that just finished.
    fn apply(&mut self, observations: Vec<Observation>, report: &mut PollReport) {
        report.items += observations.len() as u64;
        if self.baseline_on_local_clock
            && let Some(offset) = self.client.clock_offset()
        {
            // A baseline cut-off taken from this host's clock, moved onto the API's (whose
            // times the tasks carry) before the first task is judged against it.
            self.baseline_on_local_clock = false;
            let mut st = self.lock();
            let cutoff = st.store.baseline_cutoff() + offset;
            st.store.set_baseline_cutoff(cutoff);
        }
        let mut folded = 0;
        let mut st = crate::state::lock_in_async(self.handle.state());
        for mut obs in observations {
            let (task_type, other) = self.types.admit(&obs.task.task_type);
            obs.task.task_type = task_type;
            folded += u64::from(other);
            // Only with task events on: the status before, and the task for the log line.
            let event = self
                .settings
                .task_events
                .then(|| (st.store.status_of(obs.task.job_id), obs.task.clone()));
            let finished = st.store.observe(obs);
            if let Some(f) = &finished {
                self.handle.series().task_finished(f);
                report.finished += 1;
            }
            if let Some((before, task)) = event {
                let after = st.store.status_of(task.job_id);
                // A task first seen already finished and not counted is history from before
                // the exporter started (the baseline): no event.
                let baseline = before.is_none() && task.status.is_terminal() && finished.is_none();
                if after.is_some() && after != before && !baseline {
                    log_task_event(&self.id, before, &task);
                }
            }
        }
        if folded > 0 {
            self.metrics.task_types_folded(&self.id, folded);
        }
    }

    /// Builds the task series after a poll; with how many tasks the store tracks.
    fn stage(&mut self) -> (Staged, usize) {
        let discovered = self.handle.instances();
        let last_discovered = std::mem::replace(&mut self.last_discovered, discovered.clone());
        let st = crate::state::lock_in_async(self.handle.state());
        let aggregates = st.store.aggregates();
        let present: HashSet<&str> = aggregates.tasks.iter().map(|(k, _)| k.1).collect();
        self.types.retain(|t| present.contains(t));
        let staged = if self.instances.is_empty() {
            // Region-wide: every instance with a task in the store, or listed by discovery, is
            // monitored.
            let mut seen: HashSet<&str> = aggregates.tasks.iter().map(|(k, _)| k.0).collect();
            // A discovered instance (or cluster) that left the list, with no task in the
            // window, is no longer monitored (docs/metrics.md#instance-metadata).
            let owners: HashSet<&str> = seen.iter().map(|u| owner(u)).collect();
            let gone: Vec<&str> = last_discovered
                .keys()
                .filter(|i| !discovered.contains_key(*i) && !owners.contains(i.as_str()))
                .map(String::as_str)
                .collect();
            if !gone.is_empty() {
                self.handle.series().forget_instances(gone);
            }
            seen.extend(discovered.keys().map(String::as_str));
            self.metrics.stage(
                &self.id,
                self.handle.series(),
                seen,
                &aggregates,
                st.store.last_finished(),
            )
        } else {
            let listed = self.instances.iter().map(String::as_str);
            self.metrics.stage(
                &self.id,
                self.handle.series(),
                listed,
                &aggregates,
                st.store.last_finished(),
            )
        };
        (staged, st.store.len())
    }

    /// The target's state. Held only between awaits, for in-memory work: the state writer
    /// and the task pages take the same lock on blocking threads; a poll waits for them
    /// without holding up the async workers (see [`crate::state::lock_in_async`]).
    fn lock(&self) -> std::sync::MutexGuard<'_, SavedTarget> {
        crate::state::lock_in_async(self.handle.state())
    }

    /// Logs a failure once per change of its kind, and the recovery.
    fn log_outcome(&mut self, report: &PollReport) {
        match (&report.failure, &self.last_failure) {
            // Stopped by a shutdown or a reload: nothing went wrong.
            (Some(Error::Cancelled), _) => {}
            (Some(e), prev) if prev.as_deref() != Some(e.as_label()) => {
                tracing::warn!(target_id = %self.id, error = %e, "poll failed; keeping the last good values");
                self.last_failure = Some(e.as_label().to_string());
            }
            (None, Some(_)) => {
                tracing::info!(target_id = %self.id, "poll recovered");
                self.last_failure = None;
            }
            _ => {}
        }
    }

    /// One query per unit over `range`, applied to the store; what the units that answered
    /// returned. A failure is recorded in `report` and the other units are still asked.
    async fn fetch_each(
        &mut self,
        units: &[Option<String>],
        range: Range,
        statuses: &[TaskStatus],
        pass: Pass,
        cancel: &CancellationToken,
        report: &mut PollReport,
    ) -> Fetched {
        let mut out = Fetched::default();
        for unit in units {
            let q = query(unit, range, statuses);
            match self.fetch_all(q, range, unit, pass, cancel, report).await {
                Ok(f) => {
                    out.ids.extend(f.ids);
                    out.total += f.total;
                    out.skipped_below = f.skipped_below;
                }
                Err(e) => report.failure = Some(e),
            }
        }
        out
    }

    /// Whether the pages after a query's first can be skipped: every task the API has in
    /// `range` (`total`) is already in the store, so those pages hold only known tasks, and none
    /// of the known tasks older than the first page (`oldest_on_page`) is unfinished, so none
    /// of them can change. (Following unfinished ones through the status-filtered query instead
    /// would cost look-ups when they end, which over a busy span page like the re-list itself.)
    /// Exact as long as the API does not drop a task from a range while adding another one.
    fn can_skip_after_first_page(&self, range: Range, total: u64, oldest_on_page: i64) -> bool {
        if self.first_poll {
            return false;
        }
        let (known, unfinished) =
            self.lock()
                .store
                .count_started_between(range.begin, range.end, oldest_on_page);
        known as u64 == total && unfinished == 0
    }

    /// Every page of one query over `range`, each applied to the store as it arrives. In a
    /// recent-window pass that may skip, paging ends after the first page when the rest holds
    /// only known tasks; `skipped_below` then says which start times were not re-read.
    async fn fetch_all(
        &mut self,
        mut q: TaskQuery,
        range: Range,
        unit: &Option<String>,
        pass: Pass,
        cancel: &CancellationToken,
        report: &mut PollReport,
    ) -> Result<Fetched, Error> {
        let mut pager = Pager::new(100);
        q.limit = pager.limit();
        let mut out = Fetched::default();
        let ceiling = self.settings.max_pages;
        let mut pages = 0;
        while let Some(offset) = pager.next_offset() {
            pages += 1;
            if pages > ceiling {
                let e = Error::PagingLimit(ceiling);
                self.metrics.api_errors(
                    &self.id,
                    self.client.product().task_action(),
                    e.as_label(),
                    1,
                );
                return Err(e);
            }
            q.offset = offset;
            let page = self.call(&q, cancel, report).await?;
            if self.first_poll && offset == 0 && matches!(pass, Pass::Recent { .. }) {
                // Size the store once for the first ingest, with room for the tasks that start
                // meanwhile: a vector that outgrows its reservation by one task doubles (at
                // 100k tasks, 5.6 MB more, and both copies at once while it moves). Bounded,
                // since the count is the network's word.
                let total = usize::try_from(page.total_count)
                    .unwrap_or(0)
                    .min(MAX_RESERVE);
                self.lock().store.reserve(total + total / 8);
            }
            pager.record(page.item_count, page.total_count);
            out.total = page.total_count;
            if pass == Pass::Follow {
                out.ids.extend(page.items.iter().map(|t| t.job_id));
            }
            let oldest_on_page = page.items.iter().map(|t| t.start_time).min();
            let clean = page.malformed.is_empty();
            let observations = page
                .items
                .into_iter()
                .map(|task| Observation {
                    task,
                    via_instance: unit.clone(),
                })
                .collect();
            self.apply(observations, report);
            if pass == (Pass::Recent { may_skip: true })
                && let Some(oldest) = oldest_on_page
                && offset == 0
                && clean
                && pager.next_offset().is_some()
                && self.can_skip_after_first_page(range, out.total, oldest)
            {
                out.skipped_below = Some(oldest);
                break;
            }
        }
        Ok(out)
    }

    /// One page, retried with backoff on retryable errors.
    async fn call(
        &mut self,
        q: &TaskQuery,
        cancel: &CancellationToken,
        report: &mut PollReport,
    ) -> Result<crate::tencent::model::TaskPage, Error> {
        let context = CallContext {
            id: &self.id,
            action: self.client.product().task_action(),
            limiter: &self.limiter,
            metrics: &self.metrics,
            cancel,
            deadline: Some(self.deadline),
        };
        let client = &self.client;
        let (result, attempts) =
            call_with_retry(&context, &mut self.rng, || client.describe_tasks(q)).await;
        report.requests += attempts;
        let page = result?;
        if !page.malformed.is_empty() {
            self.metrics.api_errors(
                &self.id,
                self.client.product().task_action(),
                "Decode",
                page.malformed.len() as u64,
            );
            tracing::debug!(target_id = %self.id, request_id = %page.request_id, skipped = ?page.malformed, "malformed items skipped");
        }
        Ok(page)
    }

    /// Polls every `interval` until `cancel` fires; each poll's outcome goes on the target's
    /// status row.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let report = self.poll(&cancel).await;
            if cancel.is_cancelled() && report.failure.is_some() {
                break;
            }
            let error = report.failure.as_ref().map(|e| {
                let message = sanitize(&e.to_string());
                (e.as_label().to_string(), message)
            });
            self.handle.record(report.started_at, report.mode, error);
        }
    }
}

fn scope_of(instances: &[String]) -> Scope {
    if instances.is_empty() {
        Scope::Region
    } else {
        Scope::Listed(instances.iter().cloned().collect())
    }
}

fn query(unit: &Option<String>, range: Range, statuses: &[TaskStatus]) -> TaskQuery {
    TaskQuery {
        instance_id: unit.clone(),
        task_status: statuses.to_vec(),
        start_time_begin: range.begin,
        start_time_end: Some(range.end),
        ..TaskQuery::default()
    }
}

/// One task event (docs/semantics.md#task-events): a status change, or a first sighting (no `from`). Strings
/// from the API have their control characters escaped, so a message cannot forge log lines.
///
/// The line has no text of its own: `message` is the task's message. Its log target,
/// `task_events`, tells it apart (and `RUST_LOG` can route or silence it).
fn log_task_event(id: &TargetId, from: Option<TaskStatus>, task: &Task) {
    let clusters = crate::product::has_clusters(id.product);
    let (cluster_id, instance_ids) = crate::domain::cluster_and_instances(
        task.instance_ids.iter().map(String::as_str),
        clusters,
    );
    tracing::info!(
        target: "task_events",
        job_id = task.job_id,
        account = %id.account,
        region = %id.region,
        product = id.product,
        cluster_id,
        instance_ids = %instance_ids.join(","),
        task_type = %task.task_type,
        from = from.map(TaskStatus::as_str),
        to = task.status.as_str(),
        code = task.code,
        message = %sanitize(&task.message),
    );
}
