//! Instance metadata (docs/metrics.md#instance-metadata): each target lists its region's instances with
//! `DescribeDBInstances` every `discovery.interval`, on its own task, so a slow or forbidden
//! listing never delays a task poll. It shares the account's rate limit and the retry policy
//! with the poller.
//!
//! A listing feeds three things: `tencentcloud_cdb_instance_info`, the instance names on the
//! task pages, and (region-wide) the set of monitored instances, whose counters then exist with
//! zeros before their first task. A failed listing keeps the last good one; its error is
//! counted under `action="DescribeDBInstances"` and logged when it changes.

use crate::call::{CallContext, RateLimiter, call_with_retry};
use crate::domain::{Instance, Instances};
use crate::metrics::Metrics;
use crate::target::TargetHandle;
use crate::tencent::paging::Pager;
use crate::tencent::{Client, Error};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pages one listing may take (200,000 instances): a server that never ends paging is broken.
pub const MAX_PAGES: u64 = 100;

/// What one target's discovery needs.
#[derive(Debug)]
pub struct Discovery {
    /// The target: its listing goes there, for the task pages, the info family and the
    /// poller.
    pub handle: Arc<TargetHandle>,
    /// The account's client for this region.
    pub client: Client,
    /// The account's rate limit.
    pub limiter: Arc<RateLimiter>,
    /// Where API requests and errors are counted.
    pub metrics: Arc<Metrics>,
    /// Time between listings.
    pub interval: Duration,
    /// Tag keys copied into labels.
    pub tags: Vec<String>,
    /// The target's listed instances; empty means the whole region.
    pub listed: Vec<String>,
}

impl Discovery {
    /// Which listed instances this target exports: its listed ones (or all) of this shard.
    fn keep(&self, instances: Vec<Instance>) -> Vec<Instance> {
        let listed: HashSet<&str> = self.listed.iter().map(String::as_str).collect();
        instances
            .into_iter()
            .filter(|i| self.handle.shard().owns(&i.instance_id))
            .filter(|i| listed.is_empty() || listed.contains(i.instance_id.as_str()))
            .collect()
    }

    /// Lists every page once.
    async fn list(
        &self,
        rng: &mut fastrand::Rng,
        cancel: &CancellationToken,
    ) -> Result<Vec<Instance>, Error> {
        let cx = CallContext {
            id: self.handle.id(),
            action: self.client.product().listing_action(),
            limiter: &self.limiter,
            metrics: &self.metrics,
            cancel,
            deadline: None,
        };
        let mut out = Vec::new();
        let limit = self.client.product().listing_page_limit();
        let mut pager = Pager::with_max(limit, limit);
        for _ in 0..MAX_PAGES {
            let Some(offset) = pager.next_offset() else {
                return Ok(out);
            };
            let client = &self.client;
            let limit = pager.limit();
            let (page, _) =
                call_with_retry(&cx, rng, || client.describe_db_instances(offset, limit)).await;
            let page = page?;
            if !page.malformed.is_empty() {
                self.metrics.api_errors(
                    self.handle.id(),
                    self.client.product().listing_action(),
                    "Decode",
                    page.malformed.len() as u64,
                );
            }
            pager.record(page.item_count, page.total_count);
            // Only what is exported is kept: this shard's (listed) instances, with the
            // configured tag keys (a listing may carry many more tags than anyone asked for).
            out.extend(self.keep(page.items).into_iter().map(|mut i| {
                i.tags.retain(|(k, _)| self.tags.contains(k));
                i
            }));
        }
        if pager.next_offset().is_none() {
            return Ok(out);
        }
        Err(Error::PagingLimit(MAX_PAGES))
    }

    /// Publishes a good listing on the target's handle: one map, shared by the task pages, the
    /// instance info metric and the poller.
    fn publish(&self, instances: Vec<Instance>) {
        let by_id: Arc<Instances> = Arc::new(
            instances
                .into_iter()
                .map(|i| (i.instance_id.clone(), i))
                .collect(),
        );
        self.handle.set_instances(&self.tags, by_id);
    }

    /// Lists now and then every `interval` until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut rng = fastrand::Rng::new();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            match self.list(&mut rng, &cancel).await {
                Ok(instances) => {
                    if last_error.take().is_some() {
                        tracing::info!(target_id = %self.handle.id(), "DescribeDBInstances works again");
                    }
                    tracing::debug!(target_id = %self.handle.id(), instances = instances.len(), "instances listed");
                    self.publish(instances);
                }
                Err(Error::Cancelled) => break,
                Err(e) => {
                    // Logged once per kind of failure: a key without the permission would
                    // otherwise repeat the same warning every interval.
                    let label = e.as_label().to_string();
                    if last_error.as_deref() != Some(label.as_str()) {
                        tracing::warn!(target_id = %self.handle.id(), error = %e, "cannot list instances (DescribeDBInstances); keeping the last list. Task polling is not affected; grant cdb:DescribeDBInstances or turn discovery.instance_info off");
                    }
                    last_error = Some(label);
                }
            }
        }
    }
}
