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
}
