//! The product seam: everything that differs between the database products whose tasks the
//! exporter reads, behind one trait, one module per product, registered in [`PRODUCTS`].
//!
//! A product says which service and API version it speaks, which actions list its tasks and
//! its instances, how a task query is written on the wire and how an answer's page decodes
//! into the common [`Task`](crate::domain::Task) model, which statuses it can filter on and what
//! its instance ids look like. The client, the poller, discovery, the config and the simulator
//! ask it; none of them names a wire field. (The metric families and the table of known task
//! types are still CDB's alone, in `metrics` and `domain`: they join the seam with the second
//! product, when something reads them.)
//!
//! Adding a product: its module here (the trait), its line in [`PRODUCTS`], its simulator
//! module under `sim/`, its docs and tests.

pub mod cdb;
pub mod cynosdb;
mod open;
pub mod postgres;

use crate::domain::TaskStatus;
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::{DecodeError, Envelope, InstancePage, TaskPage, TaskQuery};

/// One database product's task API, as the exporter uses it.
pub trait Product: Send + Sync + std::fmt::Debug {
    /// The product's name: the config value and the `product` label (`cdb`).
    fn name(&self) -> &'static str;
    /// The TC3 service: the credential scope and the host's first label.
    fn service(&self) -> &'static str;
    /// The API version of its actions.
    fn version(&self) -> &'static str;
    /// The action that lists tasks.
    fn task_action(&self) -> &'static str;
    /// The action that lists instances (for names, tags and zero series).
    fn listing_action(&self) -> &'static str;
    /// The largest page the task action returns.
    fn task_page_limit(&self) -> u64;
    /// The largest page the listing action returns.
    fn listing_page_limit(&self) -> u64;
    /// The JSON body of one task query, times written in `zone`.
    fn task_request(&self, query: &TaskQuery, zone: ApiZone) -> Vec<u8>;
    /// One answer of the task action, decoded into the common model; a malformed item is
    /// reported in the page, not fatal.
    fn decode_tasks(&self, body: &[u8], zone: ApiZone) -> Result<Envelope<TaskPage>, DecodeError>;
    /// The JSON body of one listing page.
    fn listing_request(&self, offset: u64, limit: u64) -> Vec<u8>;
    /// One answer of the listing action.
    fn decode_listing(&self, body: &[u8]) -> Result<Envelope<InstancePage>, DecodeError>;
    /// The unfinished statuses its task action can filter on (the follow-up of old unfinished
    /// tasks asks for these).
    fn filterable_unfinished(&self) -> &'static [TaskStatus];
    /// Whether `id` is one of the ids its config list key names.
    fn valid_id(&self, id: &str) -> bool;
    /// What such an id looks like, for error messages (`cdb-xxxxxxxx`).
    fn id_example(&self) -> &'static str;
    /// The config key listing what a target watches: `instances`, or `clusters`.
    fn list_key(&self) -> &'static str {
        "instances"
    }
    /// Whether its tasks belong to clusters, so that its series carry `cluster_id` beside
    /// `instance_id` and shards split it by cluster.
    fn has_clusters(&self) -> bool {
        false
    }
    /// The label values of the task types it documents, whose finished counters exist at 0
    /// from an instance's first poll; the products that document none have theirs appear at
    /// first sight of each type.
    fn known_task_types(&self) -> &'static [&'static str] {
        &[]
    }
    /// The info family of its listing (docs/metrics.md#instance-metadata).
    fn info_family(&self) -> InfoFamily;

    /// The prefix of its task families: `tencentcloud_<name>`.
    fn metric_prefix(&self) -> String {
        format!("tencentcloud_{}", self.name())
    }

    /// The API host for `region`: `<service>.tencentcloudapi.com`, or in a finance region
    /// (`*-fsi`), which only answers on its own host, `<service>.<region>.tencentcloudapi.com`.
    fn host(&self, region: &str) -> String {
        if region.ends_with("-fsi") {
            format!("{}.{region}.tencentcloudapi.com", self.service())
        } else {
            format!("{}.tencentcloudapi.com", self.service())
        }
    }
}

/// The names of an info family and its labels (the listing's id, name and version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoFamily {
    /// The family, e.g. `tencentcloud_cdb_instance_info`.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// The id label: `instance_id` or `cluster_id`.
    pub id: &'static str,
    /// The name label: `instance_name` or `cluster_name`.
    pub name_label: &'static str,
    /// The version label: `engine_version` or `db_version`.
    pub version: &'static str,
    /// Whether the `instance_type` label is written (CDB's).
    pub instance_type: bool,
}

impl PartialEq for dyn Product {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for dyn Product {}

/// Every product the exporter knows, by name.
pub static PRODUCTS: &[&dyn Product] = &[&cdb::Cdb, &cynosdb::Cynosdb, &postgres::Postgres];

/// Whether `id` is `prefix` and 4 to 32 lower-case letters and digits.
pub(crate) fn id_with_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        (4..=32).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// The product called `name`.
pub fn named(name: &str) -> Option<&'static dyn Product> {
    PRODUCTS.iter().copied().find(|p| p.name() == name)
}

/// Whether the product called `name` has clusters (TDSQL-C).
pub fn has_clusters(name: &str) -> bool {
    named(name).is_some_and(Product::has_clusters)
}

/// The default product of a region entry.
pub fn default_product() -> &'static dyn Product {
    &cdb::Cdb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_found_by_name_and_hosts_follow_the_finance_rule() {
        let cdb = named("cdb").expect("cdb is registered");
        assert_eq!(cdb.service(), "cdb");
        assert_eq!(cdb.version(), "2017-03-20");
        assert_eq!(cdb.host("ap-guangzhou"), "cdb.tencentcloudapi.com");
        assert_eq!(
            cdb.host("ap-shanghai-fsi"),
            "cdb.ap-shanghai-fsi.tencentcloudapi.com"
        );
        assert!(named("oracle").is_none());
        let names: Vec<&str> = PRODUCTS.iter().map(|p| p.name()).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique, "one entry per product");
    }
}
