//! Which `[StartTimeBegin, StartTimeEnd]` ranges to ask for next. Pure: `now` is a parameter.
//!
//! # Reasoning
//!
//! `DescribeTasks` filters on task *start* time only, so a poll has to find two kinds of change:
//! tasks that started since the last poll, and status changes of tasks that started earlier.
//! Re-listing the whole lookback every cycle finds both but costs one request per 100 tasks of
//! the window, every cycle. Instead each cycle asks for:
//!
//! 1. **The recent window**: tasks that started since the last successful poll, minus an overlap
//!    margin. The margin covers the boundary second (inclusivity of the bounds is undocumented),
//!    clock differences between this host and the API, and tasks that become visible a little
//!    after their start time. Tasks reported twice are harmless: the store dedupes by `JobId`.
//!    The upper bound sits a margin in the future, for the same clock reasons. The very first
//!    poll starts the window at `now - lookback`.
//! 2. **Older unfinished tasks**, only when the store tracks unfinished tasks that started before
//!    the recent window: one status-filtered query (`UNDEFINED`, `INITIAL`, `RUNNING`, `PAUSED`)
//!    bounded by the oldest of them and the start of the recent window. On the first poll it has
//!    no lower bound, to find tasks that have been running for longer than the lookback. Long
//!    tasks are followed this way without dragging the recent window back for everything else.
//! 3. **Final states**: a tracked old unfinished task missing from (2) has either ended or is
//!    `WAITING` (which has no filter code). A narrow query around its start second fetches its
//!    current state. Start seconds close together are merged into one range.
//!
//! In steady state, with no old unfinished task, a cycle is one request per target (plus one per
//! 100 new tasks); each old unfinished task adds at most one shared request.

/// The shortest overlap margin, whatever the interval.
pub const MIN_OVERLAP_SECS: i64 = 300;

/// How far a final-state look-up range may stretch to cover several tasks.
pub const LOOKUP_SPAN_SECS: i64 = 600;

/// The overlap margin for a poll interval: two intervals, at least five minutes.
pub fn overlap_for(interval_secs: i64) -> i64 {
    (2 * interval_secs).max(MIN_OVERLAP_SECS)
}

/// A closed range of task start times, unix seconds; `begin` `None` means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// `StartTimeBegin`
    pub begin: Option<i64>,
    /// `StartTimeEnd`
    pub end: i64,
}

/// The recent window: from the last covered time minus the overlap (never before
/// `now - lookback`) to `now` plus the overlap.
pub fn recent_window(covered_until: Option<i64>, now: i64, lookback: i64, overlap: i64) -> Range {
    let horizon = now - lookback;
    let begin = covered_until.map_or(horizon, |c| (c - overlap).max(horizon));
    Range {
        begin: Some(begin.min(now)),
        end: now + overlap,
    }
}

/// The status-filtered range for unfinished tasks older than the recent window, if one is
/// needed: always on the first poll (unbounded below), else from the oldest tracked unfinished
/// task that started before the window.
pub fn unfinished_range(
    first_poll: bool,
    oldest_old_unfinished: Option<i64>,
    window_begin: i64,
) -> Option<Range> {
    let end = window_begin - 1;
    if first_poll {
        return Some(Range { begin: None, end });
    }
    oldest_old_unfinished.filter(|s| *s <= end).map(|s| Range {
        begin: Some(s),
        end,
    })
}

/// Ranges of start seconds that cover `starts` (any order), each spanning at most `max_span`
/// seconds: one final-state look-up each.
pub fn lookup_ranges(starts: &[i64], max_span: i64) -> Vec<Range> {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<Range> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some(r) if s - r.begin.unwrap_or(s) <= max_span => r.end = s,
            _ => out.push(Range {
                begin: Some(s),
                end: s,
            }),
        }
    }
    out
}

/// Ranges of start seconds that cover `starts` (any order), each holding at most `per_page` of
/// the tasks the store knows (`known`, sorted), so that each costs about one page however far
/// it stretches: the look-ups of a product whose list takes no status filter, which looks up
/// every old unfinished task on every poll.
pub fn packed_lookup_ranges(starts: &[i64], known: &[i64], per_page: usize) -> Vec<Range> {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let known_between =
        |b: i64, e: i64| known.partition_point(|&k| k <= e) - known.partition_point(|&k| k < b);
    let mut out: Vec<Range> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some(r) if known_between(r.begin.unwrap_or(s), s) <= per_page => r.end = s,
            _ => out.push(Range {
                begin: Some(s),
                end: s,
            }),
        }
    }
    // Each range then reaches as far as its page allows, short of the next: the tasks it
    // takes in come at no extra request, and are read fresh.
    let begins: Vec<i64> = out.iter().filter_map(|r| r.begin).collect();
    for (i, r) in out.iter_mut().enumerate() {
        let begin = r.begin.unwrap_or(r.end);
        let first = known.partition_point(|&k| k < begin);
        let page_end = match known.get(first + per_page) {
            Some(&beyond) => beyond - 1,
            None => known.last().copied().unwrap_or(begin),
        };
        let before_next = begins.get(i + 1).map_or(i64::MAX, |n| n - 1);
        r.end = r.end.max(page_end.min(before_next));
    }
    out
}

/// The most polls between two look-ups of one long-running task of a product without a status
/// filter.
pub const MAX_LOOKUP_STRIDE: i64 = 30;

/// How many polls apart a long-running task of a product without a status filter, started at
/// `start`, is looked up: a tenth of its running time in intervals (every poll in its first ten
/// intervals), at most [`MAX_LOOKUP_STRIDE`], so that its end is seen within a tenth of how long
/// it ran. A task is due once `stride` polls have passed since it was last read, by its own
/// look-up or by one of a neighbour's that returned it too (see [`packed_lookup_ranges`]):
/// neighbours read together stay due together, and one look-up serves them.
pub fn lookup_stride(start: i64, now: i64, interval: i64) -> i64 {
    ((now - start) / (10 * interval.max(1))).clamp(1, MAX_LOOKUP_STRIDE)
}

/// The poll a task's turns count from when it is first seen unfinished before the recent
/// window: as if last read so that its first turn falls in a poll where `poll + block` is a
/// multiple of its stride (`block`, its start's [`lookup_span`]), spreading first turns over
/// polls by start time, neighbours together.
pub fn first_lookup_base(poll: i64, start: i64, stride: i64, span: i64) -> i64 {
    let turn = (poll + start.div_euclid(span.max(1))).rem_euclid(stride);
    poll + (stride - turn) % stride - stride
}

/// The look-up turns of the old unfinished tasks of one target whose product has no status
/// filter: when each was last read ([`lookup_stride`], [`first_lookup_base`]).
#[derive(Debug, Default)]
pub struct LookupTurns {
    span: Option<i64>,
    last_read: std::collections::HashMap<i64, i64>,
}

impl LookupTurns {
    /// Starts a poll: the tracked start times `known` (sorted) set the span, and only the tasks
    /// in `old` (still old and unfinished) keep their turns.
    pub fn start_poll(&mut self, known: &[i64], per_page: i64, old: &[i64]) {
        self.span = Some(lookup_span(self.span, known, per_page));
        let old: std::collections::HashSet<i64> = old.iter().copied().collect();
        self.last_read.retain(|job, _| old.contains(job));
    }

    /// Whether task `job`, started at `start`, is looked up in poll number `poll`.
    pub fn due(
        &mut self,
        poll: i64,
        (job, start): (i64, i64),
        (now, interval): (i64, i64),
    ) -> bool {
        let stride = lookup_stride(start, now, interval);
        let span = self.span.unwrap_or(1);
        let last = *self
            .last_read
            .entry(job)
            .or_insert_with(|| first_lookup_base(poll, start, stride, span));
        poll - last >= stride
    }

    /// The look-ups of poll `poll` read these tasks (asked for, or returned beside them).
    pub fn read(&mut self, poll: i64, jobs: impl IntoIterator<Item = i64>) {
        for job in jobs {
            if let Some(at) = self.last_read.get_mut(&job) {
                *at = poll;
            }
        }
    }
}

/// The span of start times for [`first_lookup_base`]: about `per_page` of the tracked start times
/// `known` (sorted) per span. `kept`, the span of the last poll, stays while the density is
/// within a factor of two of it, so that a task's turn does not move with every new task.
pub fn lookup_span(kept: Option<i64>, known: &[i64], per_page: i64) -> i64 {
    let (Some(first), Some(last)) = (known.first(), known.last()) else {
        return kept.unwrap_or(1);
    };
    let fresh = ((last - first) * per_page / known.len() as i64).max(1);
    match kept {
        Some(kept) if fresh < kept * 2 && fresh * 2 > kept => kept,
        _ => fresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_window_is_the_lookback() {
        let r = recent_window(None, 100_000, 86_400, 300);
        assert_eq!(
            r,
            Range {
                begin: Some(13_600),
                end: 100_300
            }
        );
    }

    #[test]
    fn later_windows_overlap_the_last_one() {
        let r = recent_window(Some(99_940), 100_000, 86_400, 300);
        assert_eq!(r.begin, Some(99_640));
        // A long outage never reaches back past the lookback.
        let r = recent_window(Some(1_000), 100_000, 86_400, 300);
        assert_eq!(r.begin, Some(13_600));
    }

    #[test]
    fn unfinished_range_only_when_needed() {
        assert_eq!(
            unfinished_range(true, None, 500),
            Some(Range {
                begin: None,
                end: 499
            })
        );
        assert_eq!(unfinished_range(false, None, 500), None);
        assert_eq!(unfinished_range(false, Some(600), 500), None);
        assert_eq!(
            unfinished_range(false, Some(10), 500),
            Some(Range {
                begin: Some(10),
                end: 499
            })
        );
    }

    #[test]
    fn lookups_merge_close_starts() {
        let r = lookup_ranges(&[1000, 10, 20, 10, 700], 600);
        assert_eq!(
            r,
            [
                Range {
                    begin: Some(10),
                    end: 20
                },
                Range {
                    begin: Some(700),
                    end: 1000
                }
            ]
        );
        assert!(lookup_ranges(&[], 600).is_empty());
    }

    #[test]
    fn packed_ranges_hold_a_page_each_however_far_they_stretch() {
        // Known tasks: one a minute for a day; unfinished ones at three places.
        let known: Vec<i64> = (0..1440).map(|m| m * 60).collect();
        let r = packed_lookup_ranges(&[0, 3000, 5940, 80_000], &known, 100);
        // 0..5940 holds 100 known starts: one range; 80,000 is far: its own. Each then reaches
        // as far as a page of known starts goes (the 101st starts at 6,000).
        assert_eq!(
            r,
            vec![
                Range {
                    begin: Some(0),
                    end: 5999
                },
                Range {
                    begin: Some(80_000),
                    end: 86_039
                }
            ]
        );
        let held = |r: &Range| {
            known
                .iter()
                .filter(|k| r.begin.is_some_and(|b| **k >= b) && **k <= r.end)
                .count()
        };
        assert_eq!(r.iter().map(held).collect::<Vec<_>>(), [100, 100]);
        // A range stops short of the next one.
        let close = packed_lookup_ranges(&[0, 5940 + 60], &known, 100);
        assert_eq!(close[0].end, 5999);
        assert_eq!(close[1].begin, Some(6000));
        // Sparse known tasks: hours apart, still one range.
        let sparse = [0, 40_000, 80_000];
        assert_eq!(packed_lookup_ranges(&sparse, &sparse, 100).len(), 1);
    }

    proptest! {
        /// Consecutive windows leave no gap: every second from the first horizon on is covered
        /// by some window, however the polls are spaced, as long as each poll succeeds.
        #[test]
        fn consecutive_windows_leave_no_gap(gaps in proptest::collection::vec(1i64..5_000, 1..30), overlap in 0i64..1_000) {
            let lookback = 86_400;
            let mut now = 1_000_000;
            let mut covered = None;
            let mut prev_end: Option<i64> = None;
            for g in gaps {
                let r = recent_window(covered, now, lookback, overlap);
                let begin = r.begin.unwrap();
                prop_assert!(begin <= now);
                prop_assert!(begin >= now - lookback);
                if let Some(pe) = prev_end {
                    // Either contiguous with the previous coverage or clipped by the lookback.
                    prop_assert!(begin <= pe || begin == now - lookback);
                }
                prev_end = Some(now);
                covered = Some(now);
                now += g;
            }
        }

        #[test]
        fn lookup_ranges_cover_every_start(starts in proptest::collection::vec(0i64..100_000, 0..50)) {
            let ranges = lookup_ranges(&starts, LOOKUP_SPAN_SECS);
            for s in &starts {
                prop_assert!(ranges.iter().any(|r| r.begin.unwrap() <= *s && *s <= r.end));
            }
            for r in &ranges {
                prop_assert!(r.end - r.begin.unwrap() <= LOOKUP_SPAN_SECS);
            }
        }
    }

    #[test]
    fn a_span_holds_about_a_page_and_stays_while_the_density_does() {
        // 1,000 starts 10 s apart: 100 of them per 1,000 s.
        let known: Vec<i64> = (0..1_000).map(|i| i * 10).collect();
        assert_eq!(lookup_span(None, &known, 100), 999);
        // Within a factor of two the kept span stays; beyond it, it follows.
        assert_eq!(lookup_span(Some(600), &known, 100), 600);
        assert_eq!(lookup_span(Some(1_900), &known, 100), 1_900);
        assert_eq!(lookup_span(Some(400), &known, 100), 999);
        assert_eq!(lookup_span(Some(2_100), &known, 100), 999);
        assert_eq!(lookup_span(Some(7), &[], 100), 7);
        assert_eq!(lookup_span(None, &[5], 100), 1);
    }

    /// 90 polls of look-ups for 400 long-running tasks among 20,000 tracked ones, none of them
    /// ending: every task is read at least once per stride, and the look-ups come down to
    /// about the fewest pages that hold them all, once per stride.
    #[test]
    fn neighbours_read_together_share_their_look_ups() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (now, interval) = (100_000, 2);
        let known: Vec<i64> = (0..20_000).map(|i| i * 4).collect();
        let mut open: Vec<(i64, i64)> = (0..400)
            .map(|job| (job, known[rng.usize(..18_000)]))
            .collect();
        open.sort_unstable_by_key(|t| t.1);
        let ids: Vec<i64> = open.iter().map(|t| t.0).collect();
        let mut turns = LookupTurns::default();
        let mut last_read: std::collections::HashMap<i64, i64> = Default::default();
        let mut per_poll = Vec::new();
        for poll in 0..90 {
            turns.start_poll(&known, 100, &ids);
            let due: Vec<(i64, i64)> = open
                .iter()
                .copied()
                .filter(|t| turns.due(poll, *t, (now, interval)))
                .collect();
            let starts: Vec<i64> = due.iter().map(|t| t.1).collect();
            let ranges = packed_lookup_ranges(&starts, &known, 100);
            // What the look-ups return: every open task in a range.
            let inside = |s: i64| {
                ranges
                    .iter()
                    .any(|r| r.begin.is_some_and(|b| s >= b) && s <= r.end)
            };
            let read: Vec<i64> = open.iter().filter(|t| inside(t.1)).map(|t| t.0).collect();
            assert!(due.iter().all(|t| read.contains(&t.0)));
            for job in &read {
                if let Some(at) = last_read.insert(*job, poll) {
                    assert!(
                        poll - at <= MAX_LOOKUP_STRIDE,
                        "job {job} waited {}",
                        poll - at
                    );
                }
            }
            turns.read(poll, read);
            per_poll.push(ranges.len());
        }
        // Every task was read, and within the last stride.
        assert_eq!(last_read.len(), open.len());
        assert!(last_read.values().all(|at| *at >= 90 - MAX_LOOKUP_STRIDE));
        // The fewest pages of 100 tracked tasks that hold every one of them.
        let (mut cover, mut until) = (0, i64::MIN);
        for t in &open {
            if t.1 > until {
                cover += 1;
                until = known[(known.partition_point(|k| *k < t.1) + 99).min(known.len() - 1)];
            }
        }
        // The last stride, once turns have settled: within 10% of the cover.
        let settled: usize = per_poll[60..].iter().sum();
        assert!(
            settled * 10 <= cover * 11,
            "{settled} look-ups against a cover of {cover}"
        );
        // First turns are spread over polls by start time: no poll takes them all.
        assert!(
            per_poll[..30].iter().all(|n| *n * 4 < cover),
            "{per_poll:?}"
        );
    }

    proptest! {
        #[test]
        fn a_first_turn_comes_within_a_stride_and_neighbours_share_it(
            start in -10_000_000i64..0,
            span in 1i64..100_000,
            poll in 0i64..10_000,
            stride in 1i64..=MAX_LOOKUP_STRIDE,
        ) {
            let base = first_lookup_base(poll, start, stride, span);
            // Due at its first sight at the earliest, a stride later at the latest.
            prop_assert!(base + stride >= poll && base < poll);
            // A task of the same span gets the same turn.
            let other = start.div_euclid(span) * span;
            prop_assert_eq!(first_lookup_base(poll, other, stride, span), base);
        }
    }
}
