//! TencentDB for PostgreSQL (`postgres`, API version 2017-03-12): `DescribeTasks` and
//! `DescribeDBInstances`.
//!
//! Facts (docs/products.md has them with their sources): the task list is region-wide,
//! filtered on task start time (`MinStartTime`/`MaxStartTime`, 180 days by default) and by
//! `DBInstanceId`, paged by `Offset`/`Limit` (1-100) with `TotalCount`, sorted by `OrderBy`;
//! items are `TaskSet[]` with `TaskId`, `DBInstanceId`, `TaskType`, `Status` (`Running`,
//! `Success`, `WaitSwitch`, `Fail`, `Pause`), `Progress`, `StartTime`, `EndTime` (`""` while
//! running) and `TaskDetail`, which is never read.

use super::open::{self, ListingFields, TaskFields};
use super::{InfoFamily, Product};
use crate::domain::TaskStatus;
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::{
    DecodeError, Envelope, InstancePage, TaskPage, TaskQuery, decode_list,
};
use serde_json::{Map, Value, json};

/// TencentDB for PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

/// The documented statuses (docs/metrics.md).
const STATUSES: &[(&str, TaskStatus)] = &[
    ("Running", TaskStatus::Running),
    ("Success", TaskStatus::Succeed),
    ("WaitSwitch", TaskStatus::Waiting),
    ("Fail", TaskStatus::Failed),
    ("Pause", TaskStatus::Paused),
];

fn unit(obj: &Map<String, Value>) -> Option<String> {
    open::id_of(obj, "DBInstanceId").map(str::to_string)
}

const TASK: TaskFields = TaskFields {
    id: "TaskId",
    progress: "Progress",
    // Its only message is inside `TaskDetail`, beside the payloads: not read.
    message: None,
    statuses: STATUSES,
    unit,
};

const LISTING: ListingFields = ListingFields {
    id: "DBInstanceId",
    name: "DBInstanceName",
    version: "DBVersion",
    tags: "TagList",
};

impl Product for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn service(&self) -> &'static str {
        "postgres"
    }

    fn version(&self) -> &'static str {
        "2017-03-12"
    }

    fn task_action(&self) -> &'static str {
        "DescribeTasks"
    }

    fn listing_action(&self) -> &'static str {
        "DescribeDBInstances"
    }

    fn task_page_limit(&self) -> u64 {
        100
    }

    fn listing_page_limit(&self) -> u64 {
        100
    }

    fn task_request(&self, query: &TaskQuery, zone: ApiZone) -> Vec<u8> {
        let mut body = Map::new();
        if let Some(t) = query.start_time_begin {
            body.insert("MinStartTime".into(), zone.format(t).into());
        }
        if let Some(t) = query.start_time_end {
            body.insert("MaxStartTime".into(), zone.format(t).into());
        }
        if let Some(id) = &query.instance_id {
            body.insert("DBInstanceId".into(), id.clone().into());
        }
        body.insert("Offset".into(), query.offset.into());
        body.insert("Limit".into(), query.limit.clamp(1, 100).into());
        // Newest first, as CDB lists: the order the recent window's paging relies on.
        body.insert("OrderBy".into(), "StartTime".into());
        body.insert("OrderByType".into(), "desc".into());
        serde_json::to_vec(&body).expect("a request serializes")
    }

    fn decode_tasks(&self, body: &[u8], zone: ApiZone) -> Result<Envelope<TaskPage>, DecodeError> {
        decode_list(body, "TaskSet", |item| open::decode_task(item, zone, &TASK))
    }

    fn listing_request(&self, offset: u64, limit: u64) -> Vec<u8> {
        json!({"Offset": offset, "Limit": limit})
            .to_string()
            .into_bytes()
    }

    fn decode_listing(&self, body: &[u8]) -> Result<Envelope<InstancePage>, DecodeError> {
        decode_list(body, "DBInstanceSet", |item| {
            open::decode_listed(item, &LISTING)
        })
    }

    fn filterable_unfinished(&self) -> &'static [TaskStatus] {
        // The task list takes no status filter.
        &[]
    }

    fn valid_id(&self, id: &str) -> bool {
        super::id_with_prefix(id, "postgres-")
    }

    fn id_example(&self) -> &'static str {
        "postgres-xxxxxxxx"
    }

    fn info_family(&self) -> InfoFamily {
        InfoFamily {
            name: "tencentcloud_postgres_instance_info",
            help: "Always 1: a PostgreSQL instance as DescribeDBInstances lists it, with its name, database version, zone and configured tags, for joins.",
            id: "instance_id",
            name_label: "instance_name",
            version: "db_version",
            instance_type: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented examples of `DescribeTasks` (tencentcloud-cli
    /// `tccli/examples/postgres/v20170312/DescribeTasks.md`, examples 1 and 2, the second cut
    /// to its first item; its `TaskDetail` shortened).
    pub(crate) const DOC_EXAMPLE: &str = r#"{"Response": {"RequestId": "53872de1-b750-4aa4-b660-5a3627a44d34",
      "TaskSet": [
        {"DBInstanceId": "postgres-0e3hth5b", "EndTime": "", "Progress": 0, "StartTime": "2024-09-27 16:06:02",
         "Status": "Running", "TaskDetail": {"AllSteps": "", "Input": "", "Output": ""}, "TaskId": 120321, "TaskType": "DestroyInstance"},
        {"DBInstanceId": "postgres-q6fj84vb", "EndTime": "2024-09-27 13:18:11", "Progress": 100, "StartTime": "2024-09-27 13:14:11",
         "Status": "Success", "TaskDetail": {"CurrentStep": "Task Complete",
           "Input": "{\"RestoreObjects\":[\"postgres\"],\"RestoreType\":\"specifyBackupSet\",\"BackupSetTime\":\"2024-09-26 19:11:45\"}",
           "Output": "{\"Message\":\"success\"}"}, "TaskId": 120006, "TaskType": "RestoreDatabase"}],
      "TotalCount": 6}}"#;

    #[test]
    fn the_documented_examples_decode() {
        let Envelope::Page(p) = Postgres
            .decode_tasks(DOC_EXAMPLE.as_bytes(), ApiZone::beijing())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!((p.total_count, p.items.len(), p.malformed.len()), (6, 2, 0));
        let (running, done) = (&p.items[0], &p.items[1]);
        assert_eq!(
            (running.job_id, running.status),
            (120321, TaskStatus::Running)
        );
        assert_eq!(running.task_type, "destroy_instance");
        assert_eq!(running.end_time, None, "EndTime is \"\" while running");
        assert_eq!(running.instance_ids, ["postgres-0e3hth5b"]);
        assert_eq!(
            (done.task_type.as_str(), done.status),
            ("restore_database", TaskStatus::Succeed)
        );
        assert_eq!(done.end_time.unwrap() - done.start_time, 240);
        assert_eq!(done.progress, 100);
        assert!(!format!("{done:?}").contains("specifyBackupSet"));
    }

    #[test]
    fn the_five_statuses_map_and_others_keep_their_slug() {
        for (raw, st) in [
            ("Running", TaskStatus::Running),
            ("Success", TaskStatus::Succeed),
            ("WaitSwitch", TaskStatus::Waiting),
            ("Fail", TaskStatus::Failed),
            ("Pause", TaskStatus::Paused),
        ] {
            assert_eq!(open::status(raw, STATUSES), st);
        }
        assert_eq!(open::status("Isolating", STATUSES).as_str(), "isolating");
    }

    #[test]
    fn the_window_is_written_as_min_and_max_start_time() {
        let q = TaskQuery {
            instance_id: Some("postgres-abcd1234".into()),
            start_time_begin: Some(0),
            start_time_end: Some(60),
            limit: 0,
            ..TaskQuery::default()
        };
        let v: Value = serde_json::from_slice(&Postgres.task_request(&q, ApiZone::utc())).unwrap();
        assert_eq!(v["MinStartTime"], "1970-01-01 00:00:00");
        assert_eq!(v["MaxStartTime"], "1970-01-01 00:01:00");
        assert_eq!(v["DBInstanceId"], "postgres-abcd1234");
        assert_eq!(v["Limit"], 1, "the API takes 1 to 100");
        assert!(v.get("StartTimeBegin").is_none());
    }
}
