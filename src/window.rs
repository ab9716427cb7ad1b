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
    out
}

/// The most polls between two look-ups of one long-running task of a product without a status
/// filter.
pub const MAX_LOOKUP_STRIDE: i64 = 30;

/// Whether a long-running task of a product without a status filter, started at `start`, is
/// looked up in poll number `poll`: at least every tenth of its running time (every poll in its
/// first ten intervals, at most every [`MAX_LOOKUP_STRIDE`] polls), so that its end is seen
/// within a tenth of how long it ran. The turns of tasks running for hours are spread over
/// polls by the `span` of start times they fall in: tasks that one look-up page can return
/// together are due together.
pub fn lookup_due(poll: u64, start: i64, now: i64, (interval, span): (i64, i64)) -> bool {
    let stride = ((now - start) / (10 * interval.max(1))).clamp(1, MAX_LOOKUP_STRIDE) as u64;
    (poll + start.div_euclid(span.max(1)).unsigned_abs()) % stride == 0
}

/// The span of start times for [`lookup_due`]: about `per_page` of the tracked start times
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
        // 0..5940 holds 100 known starts: one range; 80,000 is far: its own.
        assert_eq!(
            r,
            vec![
                Range {
                    begin: Some(0),
                    end: 5940
                },
                Range {
                    begin: Some(80_000),
                    end: 80_000
                }
            ]
        );
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

    /// Look-ups over 30 polls for 400 long-running tasks among 20,000 tracked ones: tasks of one
    /// span take their turn together, so a packed look-up serves several; the count stays near
    /// the fewest pages that hold them all, and well under turns spread by job id.
    #[test]
    fn long_running_tasks_of_one_span_share_their_look_up() {
        let mut rng = fastrand::Rng::with_seed(7);
        let now = 100_000;
        let known: Vec<i64> = (0..20_000).map(|i| i * 4).collect();
        let mut open: Vec<(i64, i64)> = (0..400)
            .map(|job| (job, known[rng.usize(..18_000)]))
            .collect();
        open.sort_unstable_by_key(|t| t.1);
        let span = lookup_span(None, &known, 100);
        let cost = |due: &dyn Fn(u64, &(i64, i64)) -> bool| -> usize {
            (0..30u64)
                .map(|poll| {
                    let starts: Vec<i64> =
                        open.iter().filter(|t| due(poll, t)).map(|t| t.1).collect();
                    packed_lookup_ranges(&starts, &known, 100).len()
                })
                .sum()
        };
        let aligned = cost(&|poll, t| lookup_due(poll, t.1, now, (2, span)));
        let by_job = cost(&|poll, t| (poll + t.0.unsigned_abs()) % 30 == 0);
        // The fewest pages of 100 tracked tasks that hold every one of them.
        let (mut cover, mut until) = (0, i64::MIN);
        for t in &open {
            if t.1 > until {
                cover += 1;
                until = known[(known.partition_point(|k| *k < t.1) + 99).min(known.len() - 1)];
            }
        }
        // Every task was looked up exactly once in the 30 polls.
        for t in &open {
            assert_eq!(
                (0..30)
                    .filter(|p| lookup_due(*p, t.1, now, (2, span)))
                    .count(),
                1
            );
        }
        assert!(aligned * 10 <= by_job * 7, "{aligned} against {by_job}");
        // Spans are cut by time, not at the cover's pages: a few more.
        assert!(
            aligned * 10 <= cover * 14,
            "{aligned} against a cover of {cover}"
        );
    }

    proptest! {
        #[test]
        fn every_long_running_task_takes_a_turn_within_its_stride(
            start in -10_000_000i64..0,
            span in 1i64..100_000,
            first in 0u64..10_000,
            interval in 1i64..600,
        ) {
            let stride = (-start / (10 * interval)).clamp(1, MAX_LOOKUP_STRIDE) as u64;
            let turns = (first..first + stride)
                .filter(|p| lookup_due(*p, start, 0, (interval, span)))
                .count();
            prop_assert_eq!(turns, 1);
            // Another task of the same span and stride takes the same turns.
            let other = start.div_euclid(span) * span;
            prop_assume!((-other / (10 * interval)).clamp(1, MAX_LOOKUP_STRIDE) as u64 == stride);
            for p in first..first + stride {
                prop_assert_eq!(
                    lookup_due(p, start, 0, (interval, span)),
                    lookup_due(p, other, 0, (interval, span))
                );
            }
        }
    }
}
