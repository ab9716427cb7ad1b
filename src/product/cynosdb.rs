//! TDSQL-C for MySQL (`cynosdb`, API version 2019-01-07): `DescribeTasks` and
//! `DescribeClusters`.
//!
//! Facts (docs/products.md has them with their sources): the task list is region-wide, filtered
//! on task start time (`StartTimeBegin`/`StartTimeEnd`) and by `Filters` (`ClusterId`), paged by
//! `Offset`/`Limit` with `TotalCount`; items are `TaskList[]` with `ID`, `ClusterId`,
//! `InstanceId`, `TaskType`, `Status`, `Process`, `StartTime`, `EndTime`, `ErrMsg`. Neither
//! `Status` nor `TaskType` is enumerated by the API: statuses go through the table below and
//! any other value is kept as its slug; task types are open.

use super::open::{self, ListingFields, TaskFields};
use super::{InfoFamily, Product};
use crate::domain::TaskStatus;
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::{
    DecodeError, Envelope, InstancePage, TaskPage, TaskQuery, decode_list,
};
use serde_json::{Map, Value, json};

/// TDSQL-C for MySQL.
#[derive(Debug, Clone, Copy)]
pub struct Cynosdb;

/// The statuses seen or plausible, compared case-insensitively (docs/metrics.md).
const STATUSES: &[(&str, TaskStatus)] = &[
    ("success", TaskStatus::Succeed),
    ("succeed", TaskStatus::Succeed),
    ("succeeded", TaskStatus::Succeed),
    ("running", TaskStatus::Running),
    ("processing", TaskStatus::Running),
    ("fail", TaskStatus::Failed),
    ("failed", TaskStatus::Failed),
    ("error", TaskStatus::Failed),
    ("pause", TaskStatus::Paused),
    ("paused", TaskStatus::Paused),
    ("wait", TaskStatus::Waiting),
    ("waiting", TaskStatus::Waiting),
    ("pending", TaskStatus::Waiting),
    ("cancel", TaskStatus::Killed),
    ("cancelled", TaskStatus::Killed),
    ("canceled", TaskStatus::Killed),
    ("killed", TaskStatus::Killed),
];

/// `cluster/instance` (`cluster/` for a cluster-level task); `""` without a cluster.
fn unit(obj: &Map<String, Value>) -> Option<String> {
    let cluster = open::id_of(obj, "ClusterId")?;
    let instance = open::id_of(obj, "InstanceId")?;
    Some(if cluster.is_empty() {
        String::new()
    } else {
        format!("{cluster}/{instance}")
    })
}

const TASK: TaskFields = TaskFields {
    id: "ID",
    progress: "Process",
    message: Some("ErrMsg"),
    statuses: STATUSES,
    unit,
};

const LISTING: ListingFields = ListingFields {
    id: "ClusterId",
    name: "ClusterName",
    version: "DbVersion",
    tags: "ResourceTags",
};

impl Product for Cynosdb {
    fn name(&self) -> &'static str {
        "cynosdb"
    }

    fn service(&self) -> &'static str {
        "cynosdb"
    }

    fn version(&self) -> &'static str {
        "2019-01-07"
    }

    fn task_action(&self) -> &'static str {
        "DescribeTasks"
    }

    fn listing_action(&self) -> &'static str {
        "DescribeClusters"
    }

    fn task_page_limit(&self) -> u64 {
        // No maximum is documented; CDB's is kept.
        100
    }

    fn listing_page_limit(&self) -> u64 {
        100
    }

    fn task_request(&self, query: &TaskQuery, zone: ApiZone) -> Vec<u8> {
        let mut body = Map::new();
        if let Some(t) = query.start_time_begin {
            body.insert("StartTimeBegin".into(), zone.format(t).into());
        }
        if let Some(t) = query.start_time_end {
            body.insert("StartTimeEnd".into(), zone.format(t).into());
        }
        let mut filters = Vec::new();
        if let Some(cluster) = &query.instance_id {
            filters.push(json!({"Names": ["ClusterId"], "Values": [cluster], "ExactMatch": true}));
        }
        // The spellings of the asked statuses the table knows: a task in a spelling it does not
        // know is not returned, and gets the narrow look-up of a task that left the set.
        let spellings: Vec<&str> = STATUSES
            .iter()
            .filter(|(_, st)| query.task_status.contains(st))
            .map(|(wire, _)| *wire)
            .collect();
        if !spellings.is_empty() {
            filters.push(json!({"Names": ["Status"], "Values": spellings, "ExactMatch": true}));
        }
        if !filters.is_empty() {
            body.insert("Filters".into(), filters.into());
        }
        body.insert("Offset".into(), query.offset.into());
        body.insert("Limit".into(), query.limit.min(100).into());
        serde_json::to_vec(&body).expect("a request serializes")
    }

    fn decode_tasks(&self, body: &[u8], zone: ApiZone) -> Result<Envelope<TaskPage>, DecodeError> {
        decode_list(body, "TaskList", |item| {
            open::decode_task(item, zone, &TASK)
        })
    }

    fn listing_request(&self, offset: u64, limit: u64) -> Vec<u8> {
        json!({"Offset": offset, "Limit": limit, "DbType": "MYSQL"})
            .to_string()
            .into_bytes()
    }

    fn decode_listing(&self, body: &[u8]) -> Result<Envelope<InstancePage>, DecodeError> {
        decode_list(body, "ClusterSet", |item| {
            open::decode_listed(item, &LISTING)
        })
    }

    fn filterable_unfinished(&self) -> &'static [TaskStatus] {
        // `Status` is one of the documented filter fields; its values are not documented, so
        // the filter names the spellings of the table. A task still unfinished in another
        // spelling is not returned, and is looked up narrowly like one that finished.
        &[TaskStatus::Running, TaskStatus::Waiting, TaskStatus::Paused]
    }

    fn valid_id(&self, id: &str) -> bool {
        super::id_with_prefix(id, "cynosdbmysql-")
    }

    fn id_example(&self) -> &'static str {
        "cynosdbmysql-xxxxxxxx"
    }

    fn list_key(&self) -> &'static str {
        "clusters"
    }

    fn has_clusters(&self) -> bool {
        true
    }

    fn info_family(&self) -> InfoFamily {
        InfoFamily {
            name: "tencentcloud_cynosdb_cluster_info",
            help: "Always 1: a TDSQL-C cluster as DescribeClusters lists it, with its name, database version, zone and configured tags, for joins.",
            id: "cluster_id",
            name_label: "cluster_name",
            version: "db_version",
            instance_type: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::model::Page;

    /// An answer in the documented shape of `DescribeTasks` (Go SDK `BizTaskInfo`; the
    /// tencentcloud-cli example `examples.json` `DescribeTasks`): its `Status` `success`,
    /// `TaskType` `taskCreateCluster`, `StartTime` `2024-06-27 16:18:07`, `Process` 100 and the
    /// admin password its `Input` carries are the example's; the ids, the end time and the
    /// payloads' other contents are ours.
    pub(crate) const DOC_EXAMPLE: &str = r#"{"Response": {"TotalCount": 1, "RequestId": "3c140219-cfe9-470e-b241-907877d6fb03",
      "TaskList": [{"ID": 1001, "AppId": 1251000000, "ClusterId": "cynosdbmysql-bzxxrmtq",
        "InstanceGroupId": "", "InstanceId": "", "ClusterName": "test", "InstanceName": "",
        "CreateTime": "2024-06-27 16:18:07", "DelayTime": "", "StartTime": "2024-06-27 16:18:07",
        "EndTime": "2024-06-27 16:24:12", "ErrMsg": "", "FlowId": 5678, "Input": "{\"adminPassword\":\"Abcde@123\"}",
        "ObjectId": "cynosdbmysql-bzxxrmtq", "ObjectType": "cluster", "Operator": "100000000",
        "Output": "{}", "Region": "ap-guangzhou", "Status": "success", "TaskType": "taskCreateCluster",
        "TriggerTaskId": 0, "UpdateTime": "2024-06-27 16:24:12", "Process": 100}]}}"#;

    fn page(body: &str) -> Page<crate::domain::Task> {
        match Cynosdb
            .decode_tasks(body.as_bytes(), ApiZone::beijing())
            .unwrap()
        {
            Envelope::Page(p) => p,
            e @ Envelope::Error { .. } => panic!("{e:?}"),
        }
    }

    #[test]
    fn the_documented_example_decodes_without_its_payloads() {
        let p = page(DOC_EXAMPLE);
        assert_eq!((p.total_count, p.items.len()), (1, 1));
        let t = &p.items[0];
        assert_eq!(t.job_id, 1001);
        assert_eq!(t.task_type, "task_create_cluster");
        assert_eq!(t.status, TaskStatus::Succeed);
        assert_eq!(t.instance_ids, ["cynosdbmysql-bzxxrmtq/"]);
        assert_eq!(t.progress, 100);
        assert_eq!(t.end_time.unwrap() - t.start_time, 6 * 60 + 5);
        let kept = format!("{t:?}");
        assert!(!kept.contains("Abcde@123"), "{kept}");
    }

    #[test]
    fn statuses_follow_the_table_and_others_keep_their_slug() {
        for (raw, st) in [
            ("SUCCESS", TaskStatus::Succeed),
            ("Processing", TaskStatus::Running),
            ("error", TaskStatus::Failed),
            ("pending", TaskStatus::Waiting),
            ("canceled", TaskStatus::Killed),
            ("pause", TaskStatus::Paused),
        ] {
            assert_eq!(open::status(raw, STATUSES), st, "{raw}");
        }
        let odd = open::status("RollingBack", STATUSES);
        assert_eq!(odd.as_str(), "rollingback");
        assert!(!odd.is_terminal());
        assert_eq!(TaskStatus::from_label("rollingback"), Some(odd));
    }

    #[test]
    fn a_cluster_filter_and_the_window_are_written_in_its_names() {
        let q = TaskQuery {
            instance_id: Some("cynosdbmysql-abcd1234".into()),
            start_time_begin: Some(0),
            start_time_end: Some(3600),
            offset: 200,
            limit: 500,
            ..TaskQuery::default()
        };
        let v: Value = serde_json::from_slice(&Cynosdb.task_request(&q, ApiZone::utc())).unwrap();
        assert_eq!(v["StartTimeBegin"], "1970-01-01 00:00:00");
        assert_eq!(v["StartTimeEnd"], "1970-01-01 01:00:00");
        assert_eq!(v["Filters"][0]["Names"][0], "ClusterId");
        assert_eq!(v["Filters"][0]["Values"][0], "cynosdbmysql-abcd1234");
        assert_eq!(
            v["Filters"].as_array().unwrap().len(),
            1,
            "no status filter asked"
        );
        let unfinished = TaskQuery {
            task_status: Cynosdb.filterable_unfinished().to_vec(),
            ..q
        };
        let v: Value =
            serde_json::from_slice(&Cynosdb.task_request(&unfinished, ApiZone::utc())).unwrap();
        let status = &v["Filters"][1];
        assert_eq!(status["Names"][0], "Status");
        let values: Vec<&str> = status["Values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        for spelling in ["running", "processing", "pending", "paused"] {
            assert!(values.contains(&spelling), "{values:?}");
        }
        assert!(!values.contains(&"success"));
        assert_eq!(
            (v["Offset"].as_u64(), v["Limit"].as_u64()),
            (Some(200), Some(100))
        );
    }

    #[test]
    fn an_implausible_cluster_id_skips_the_item_and_keeps_the_page() {
        let body = r#"{"Response": {"TotalCount": 2, "RequestId": "r", "TaskList": [
            {"ID": 1, "ClusterId": "cynosdbmysql-x\n{evil}", "Status": "running", "TaskType": "t", "StartTime": "2024-01-01 00:00:00"},
            {"ID": 2, "ClusterId": "cynosdbmysql-ok", "InstanceId": "cynosdbmysql-ins-1", "Status": "running", "TaskType": "taskUpgrade", "StartTime": "2024-01-01 00:00:00", "EndTime": ""}]}}"#;
        let p = page(body);
        assert_eq!(p.malformed.len(), 1);
        assert_eq!(
            p.items[0].instance_ids,
            ["cynosdbmysql-ok/cynosdbmysql-ins-1"]
        );
        assert_eq!(p.items[0].end_time, None);
    }

    #[test]
    fn clusters_list_with_name_version_zone_and_tags() {
        let body = r#"{"Response": {"TotalCount": 1, "RequestId": "r", "ClusterSet": [
            {"ClusterId": "cynosdbmysql-abcd1234", "ClusterName": "orders", "DbVersion": "8.0",
             "Zone": "ap-guangzhou-4", "ResourceTags": [{"TagKey": "team", "TagValue": "pay"}]}]}}"#;
        let Envelope::Page(p) = Cynosdb.decode_listing(body.as_bytes()).unwrap() else {
            panic!()
        };
        let c = &p.items[0];
        assert_eq!(
            (
                c.instance_id.as_str(),
                c.name.as_str(),
                c.engine_version.as_str(),
                c.zone.as_str()
            ),
            ("cynosdbmysql-abcd1234", "orders", "8.0", "ap-guangzhou-4")
        );
        assert_eq!(c.tags, [("team".to_string(), "pay".to_string())]);
    }
}
