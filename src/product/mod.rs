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
    /// Whether `id` is one of its instance ids, as a config lists them.
    fn valid_id(&self, id: &str) -> bool;

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

/// Every product the exporter knows, by name.
pub static PRODUCTS: &[&dyn Product] = &[&cdb::Cdb];

/// The product called `name`.
pub fn named(name: &str) -> Option<&'static dyn Product> {
    PRODUCTS.iter().copied().find(|p| p.name() == name)
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
