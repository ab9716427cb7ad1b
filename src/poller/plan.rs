//! The query plan of a target that lists instances: one region-wide query filtered locally, or
//! one query per instance, whichever the observed task volume makes cheaper. Pure.

/// How often (in polls) a target that chose per-instance queries re-measures the region volume.
pub const REPROBE_EVERY: u32 = 60;

/// How a target asks for its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    /// One query per region (no `InstanceId`); with listed instances, filtered locally.
    RegionWide,
    /// One query per listed instance.
    PerInstance,
}

/// What the query plan depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryInputs {
    /// Instances listed in the config (0: the whole region).
    pub listed: usize,
    /// Tasks a region-wide recent query returned last time, once measured.
    pub region_volume: Option<f64>,
    /// The mode in use.
    pub current: Option<QueryMode>,
    /// Polls since the region volume was last measured.
    pub polls_since_probe: u32,
}

/// The query mode for the next poll, and why. Pure. Region-wide costs one request per 100
/// tasks of the region; per-instance one request per listed instance (most return one page):
/// the cheaper wins, measured by a region-wide poll first and re-measured every
/// [`REPROBE_EVERY`] polls while per-instance.
pub fn plan_query(q: &QueryInputs) -> (QueryMode, String) {
    let n = q.listed;
    if n == 0 {
        return (QueryMode::RegionWide, "no instances listed".into());
    }
    if n == 1 {
        return (QueryMode::PerInstance, "one instance listed".into());
    }
    match q.region_volume {
        None => (
            QueryMode::RegionWide,
            format!("{n} instances listed, region volume not measured yet"),
        ),
        Some(_)
            if q.current == Some(QueryMode::PerInstance)
                && q.polls_since_probe >= REPROBE_EVERY =>
        {
            (
                QueryMode::RegionWide,
                "re-measuring the region volume".into(),
            )
        }
        Some(v) => {
            let region_cost = (v / 100.0).ceil().max(1.0);
            let per_instance_cost = n as f64;
            let reason = format!(
                "region-wide ~{v:.0} tasks per poll = {region_cost} request(s) vs {per_instance_cost} per-instance request(s)"
            );
            if region_cost < per_instance_cost {
                (QueryMode::RegionWide, reason)
            } else {
                (QueryMode::PerInstance, reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_plan_picks_the_cheaper_mode() {
        let q = |listed, region_volume, current, polls_since_probe| {
            plan_query(&QueryInputs {
                listed,
                region_volume,
                current,
                polls_since_probe,
            })
            .0
        };
        use QueryMode::{PerInstance, RegionWide};
        assert_eq!(q(0, None, None, 0), RegionWide, "the whole region");
        assert_eq!(
            q(1, None, None, 0),
            PerInstance,
            "one instance: its own query"
        );
        assert_eq!(q(5, None, None, 0), RegionWide, "measure the region first");
        // 350 tasks region-wide = 4 requests: cheaper than 5 instances, dearer than 3.
        assert_eq!(q(5, Some(350.0), Some(RegionWide), 0), RegionWide);
        assert_eq!(q(3, Some(350.0), Some(RegionWide), 0), PerInstance);
        assert_eq!(
            q(4, Some(350.0), Some(RegionWide), 0),
            PerInstance,
            "a tie goes per-instance"
        );
        assert_eq!(
            q(2, Some(0.0), Some(PerInstance), 0),
            RegionWide,
            "an idle region: one request"
        );
        // Per-instance re-measures the region every REPROBE_EVERY polls.
        assert_eq!(
            q(3, Some(350.0), Some(PerInstance), REPROBE_EVERY - 1),
            PerInstance
        );
        assert_eq!(
            q(3, Some(350.0), Some(PerInstance), REPROBE_EVERY),
            RegionWide
        );
    }
}
