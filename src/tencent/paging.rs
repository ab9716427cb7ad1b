//! When to stop paging (docs/semantics.md#paging): at `TotalCount`, at an empty page, or at a short page,
//! whichever comes first. Pure, so the rule is tested on its own.

/// The largest `Limit` the API accepts.
pub const MAX_LIMIT: u64 = 100;

/// Tracks the offset of the next page of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    limit: u64,
    offset: u64,
    done: bool,
}

impl Pager {
    /// A pager asking for `limit` items a page (capped at [`MAX_LIMIT`], at least 1).
    pub fn new(limit: u64) -> Self {
        Pager::with_max(limit, MAX_LIMIT)
    }

    /// A pager for an action whose pages may hold up to `max` items (`DescribeDBInstances`
    /// allows 2,000).
    pub fn with_max(limit: u64, max: u64) -> Self {
        Pager {
            limit: limit.clamp(1, max.max(1)),
            offset: 0,
            done: false,
        }
    }

    /// The `Limit` to send.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The `Offset` of the next page, or `None` when paging is over.
    pub fn next_offset(&self) -> Option<u64> {
        (!self.done).then_some(self.offset)
    }

    /// Records a page that held `item_count` items (malformed ones included) and claimed
    /// `total_count` in all.
    pub fn record(&mut self, item_count: usize, total_count: u64) {
        let n = item_count as u64;
        self.offset += n;
        if n == 0 || n < self.limit || self.offset >= total_count {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(limit: u64, total: u64, served: impl Fn(u64) -> usize) -> Vec<u64> {
        let mut p = Pager::new(limit);
        let mut offsets = vec![];
        while let Some(off) = p.next_offset() {
            offsets.push(off);
            assert!(offsets.len() < 100, "pager loops");
            p.record(served(off), total);
        }
        offsets
    }

    #[test]
    fn stops_at_total_count() {
        assert_eq!(
            pages(100, 250, |o| (250 - o).min(100) as usize),
            [0, 100, 200]
        );
        assert_eq!(pages(100, 200, |o| (200 - o).min(100) as usize), [0, 100]);
    }

    #[test]
    fn documented_example_does_not_loop() {
        // TotalCount 13, but only 10 items come back whatever the offset.
        assert_eq!(pages(100, 13, |_| 10), [0]);
        assert_eq!(pages(10, 13, |o| if o == 0 { 10 } else { 0 }), [0, 10]);
    }

    #[test]
    fn stops_at_empty_and_short_pages() {
        assert_eq!(pages(100, 1000, |_| 0), [0]);
        assert_eq!(pages(100, 1000, |o| if o == 0 { 100 } else { 7 }), [0, 100]);
        assert_eq!(Pager::new(500).limit(), 100);
        assert_eq!(Pager::new(0).limit(), 1);
    }
}
