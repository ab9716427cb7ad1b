//! CDB for MySQL (`cdb`, API version 2017-03-20): `DescribeTasks` and `DescribeDBInstances`.
//!
//! Two item shapes decode into one [`Task`]: the current `TaskDetail` (string `TaskStatus` /
//! `TaskType`, `InstanceIds`) and the old documented one (integer `Status` / `Type`,
//! `Data[].InstanceId`). Items are decoded one by one, so a malformed item is skipped and
//! reported without losing the rest of the page.

use super::{InfoFamily, Product};
use crate::domain::{Instance, Task, TaskStatus, task_type_from_code, task_type_from_wire};
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::{
    DecodeError, Envelope, InstancePage, MAX_MESSAGE_CHARS, MAX_REQUEST_ID_CHARS, TaskPage,
    TaskQuery, cut, decode_with, int_of, is_plausible_instance_id, sanitize,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CDB for MySQL.
#[derive(Debug, Clone, Copy)]
pub struct Cdb;

/// The label values of the 12 documented task types.
const KNOWN_TYPES: [&str; 12] = {
    let mut out = [""; 12];
    let mut i = 0;
    while i < 12 {
        out[i] = crate::domain::TASK_TYPES[i].2;
        i += 1;
    }
    out
};

/// The task list action.
pub const DESCRIBE_TASKS: &str = "DescribeTasks";
/// The instance listing action.
pub const DESCRIBE_DB_INSTANCES: &str = "DescribeDBInstances";

impl Product for Cdb {
    fn name(&self) -> &'static str {
        "cdb"
    }

    fn service(&self) -> &'static str {
        "cdb"
    }

    fn version(&self) -> &'static str {
        "2017-03-20"
    }

    fn task_action(&self) -> &'static str {
        DESCRIBE_TASKS
    }

    fn listing_action(&self) -> &'static str {
        DESCRIBE_DB_INSTANCES
    }

    fn task_page_limit(&self) -> u64 {
        100
    }

    fn listing_page_limit(&self) -> u64 {
        2000
    }

    fn task_request(&self, query: &TaskQuery, zone: ApiZone) -> Vec<u8> {
        serde_json::to_vec(&request(query, zone)).expect("a request serializes")
    }

    fn decode_tasks(&self, body: &[u8], zone: ApiZone) -> Result<Envelope<TaskPage>, DecodeError> {
        decode_response(body, zone)
    }

    fn listing_request(&self, offset: u64, limit: u64) -> Vec<u8> {
        serde_json::json!({"Offset": offset, "Limit": limit})
            .to_string()
            .into_bytes()
    }

    fn decode_listing(&self, body: &[u8]) -> Result<Envelope<InstancePage>, DecodeError> {
        decode_instances(body)
    }

    fn filterable_unfinished(&self) -> &'static [TaskStatus] {
        // `WAITING` has no code the filter takes.
        &[
            TaskStatus::Undefined,
            TaskStatus::Initial,
            TaskStatus::Running,
            TaskStatus::Paused,
        ]
    }

    fn id_example(&self) -> &'static str {
        "cdb-xxxxxxxx"
    }

    fn known_task_types(&self) -> &'static [&'static str] {
        &KNOWN_TYPES
    }

    fn info_family(&self) -> InfoFamily {
        InfoFamily {
            name: "tencentcloud_cdb_instance_info",
            help: "Always 1: an instance as DescribeDBInstances lists it, with its name, type, engine version, zone and configured tags, for joins.",
            id: "instance_id",
            name_label: "instance_name",
            version: "engine_version",
            instance_type: true,
        }
    }

    fn valid_id(&self, id: &str) -> bool {
        // `cdb-c1nl9rpv`
        super::id_with_prefix(id, "cdb-")
    }
}

/// The instance ids of an item, from `InstanceIds` (current shape), `InstanceId`, or
/// `Data[].InstanceId` (the old documented shape): trimmed, empty ones and repeats dropped.
/// `None` when one is not a plausible id.
fn instance_ids_of(obj: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
    let mut found: Vec<&str> = Vec::new();
    match obj.get("InstanceIds") {
        Some(Value::Array(ids)) => found.extend(ids.iter().filter_map(Value::as_str)),
        Some(Value::String(id)) => found.push(id),
        _ => {}
    }
    if let Some(Value::String(id)) = obj.get("InstanceId") {
        found.push(id);
    }
    match obj.get("Data") {
        Some(Value::Array(data)) => found.extend(
            data.iter()
                .filter_map(|d| d.get("InstanceId").and_then(Value::as_str)),
        ),
        Some(d @ Value::Object(_)) => found.extend(d.get("InstanceId").and_then(Value::as_str)),
        _ => {}
    }
    let mut ids: Vec<String> = Vec::new();
    for id in found.into_iter().map(str::trim).filter(|id| !id.is_empty()) {
        if !is_plausible_instance_id(id) {
            return None;
        }
        if !ids.iter().any(|x| x == id) {
            if ids.len() == MAX_INSTANCES_PER_TASK {
                return None;
            }
            ids.push(id.to_string());
        }
    }
    Some(ids)
}

/// The most instance ids one task may name: a task naming more is skipped and counted as
/// `Decode` (each id would be a series of its own; real tasks name one or a few).
pub const MAX_INSTANCES_PER_TASK: usize = 64;
/// The JSON body of a `DescribeTasks` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeTasksRequest {
    /// `InstanceId`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `AsyncRequestId`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_request_id: Option<String>,
    /// `TaskTypes`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_types: Option<Vec<i64>>,
    /// `TaskStatus`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_status: Option<Vec<i64>>,
    /// `StartTimeBegin`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time_begin: Option<String>,
    /// `StartTimeEnd`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time_end: Option<String>,
    /// `Offset`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// `Limit`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// The wire body of `query`, times written in `zone`.
pub fn request(query: &TaskQuery, zone: ApiZone) -> DescribeTasksRequest {
    let non_empty = |v: &Vec<i64>| (!v.is_empty()).then(|| v.clone());
    let codes: Vec<i64> = query.task_status.iter().filter_map(|s| s.code()).collect();
    DescribeTasksRequest {
        instance_id: query.instance_id.clone(),
        async_request_id: query.async_request_id.clone(),
        task_types: non_empty(&query.task_types),
        task_status: non_empty(&codes),
        start_time_begin: query.start_time_begin.map(|t| zone.format(t)),
        start_time_end: query.start_time_end.map(|t| zone.format(t)),
        offset: Some(query.offset as i64),
        limit: Some(query.limit.min(100) as i64),
    }
}

/// Decodes a response body. `Err` only when the body as a whole is unusable (not JSON, no
/// `Response`, no usable `Items`); a bad item is reported in [`crate::tencent::model::Page::malformed`].
pub fn decode_response(body: &[u8], zone: ApiZone) -> Result<Envelope, DecodeError> {
    decode_with(body, |item| decode_item(item, zone))
}

/// Decodes a `DescribeDBInstances` body, like [`decode_response`].
pub fn decode_instances(body: &[u8]) -> Result<Envelope<InstancePage>, DecodeError> {
    decode_with(body, decode_instance)
}

/// Longest instance name, zone, version or tag kept.
const MAX_INSTANCE_FIELD: usize = 256;

fn short_string(item: &Value, key: &str) -> String {
    item.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(MAX_INSTANCE_FIELD)
        .collect()
}

/// One `InstanceInfo` item.
pub fn decode_instance(item: &Value) -> Result<Instance, DecodeError> {
    let id = item
        .get("InstanceId")
        .and_then(Value::as_str)
        .ok_or("no InstanceId")?;
    if !is_plausible_instance_id(id) {
        return Err(format!("implausible InstanceId {:?}", sanitize(id)).into());
    }
    let instance_type = match item.get("InstanceType").and_then(int_of) {
        Some(1) => "master",
        Some(2) => "dr",
        Some(3) => "ro",
        _ => "unknown",
    };
    let tags = super::open::tags_of(item.get("TagList"));
    Ok(Instance {
        instance_id: id.to_string(),
        name: short_string(item, "InstanceName"),
        instance_type,
        engine_version: short_string(item, "EngineVersion"),
        zone: short_string(item, "Zone"),
        tags,
    })
}

/// Decodes one item of either shape.
pub fn decode_item(item: &Value, zone: ApiZone) -> Result<Task, DecodeError> {
    let obj = item.as_object().ok_or("not an object")?;
    let job_id = obj.get("JobId").and_then(int_of).ok_or("no JobId")?;
    let status = match (obj.get("TaskStatus"), obj.get("Status")) {
        (Some(Value::String(s)), _) => TaskStatus::from_wire(s),
        (Some(v @ Value::Number(_)), _) | (None | Some(Value::Null), Some(v)) => {
            TaskStatus::from_code(int_of(v).ok_or("Status is not an integer")?)
        }
        _ => return Err(format!("JobId {job_id}: no TaskStatus").into()),
    };
    let task_type = match (obj.get("TaskType"), obj.get("Type")) {
        (Some(Value::String(s)), _) => task_type_from_wire(s),
        (Some(Value::Number(n)), _) => task_type_from_code(n.as_i64().unwrap_or(-1)).to_string(),
        (None | Some(Value::Null), Some(v)) => {
            task_type_from_code(int_of(v).unwrap_or(-1)).to_string()
        }
        _ => "unknown".to_string(),
    };
    let start_time = obj
        .get("StartTime")
        .and_then(Value::as_str)
        .and_then(|s| zone.parse(s))
        .ok_or_else(|| format!("JobId {job_id}: no usable StartTime"))?;
    let end_time = obj
        .get("EndTime")
        .and_then(Value::as_str)
        .and_then(|s| zone.parse(s));
    let progress = obj.get("Progress").and_then(int_of).unwrap_or(0);
    let instance_ids = instance_ids_of(obj).ok_or_else(|| {
        // It would become an instance_id label: the item is skipped and counted as Decode.
        format!(
            "JobId {job_id}: an instance id is not [a-z0-9-]{{1,64}}, or more than {MAX_INSTANCES_PER_TASK} are named"
        )
    })?;
    let text =
        |k: &str, max: usize| cut(obj.get(k).and_then(Value::as_str).unwrap_or_default(), max);
    Ok(Task {
        job_id,
        task_type,
        status,
        start_time,
        end_time,
        progress: progress.clamp(0, 100),
        instance_ids,
        async_request_id: text("AsyncRequestId", MAX_REQUEST_ID_CHARS),
        code: obj.get("Code").and_then(int_of),
        message: text("Message", MAX_MESSAGE_CHARS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TASK_TYPES, task_type_wire};
    use crate::tencent::model::MAX_LOGGED_CHARS;

    #[test]
    fn the_unfinished_filter_is_written_as_the_api_codes() {
        // `WAITING` has no code the filter takes; the other unfinished statuses do.
        let q = TaskQuery {
            task_status: Cdb.filterable_unfinished().to_vec(),
            ..TaskQuery::default()
        };
        let r = request(&q, ApiZone::beijing());
        assert_eq!(r.task_status, Some(vec![-1, 0, 1, 6]));
        assert_eq!(r.limit, Some(0));
        assert!(Cdb.valid_id("cdb-c1nl9rpv") && !Cdb.valid_id("cdb-") && !Cdb.valid_id("pg-1"));
    }

    #[test]
    fn task_strings_are_cut_and_instance_ids_bounded() {
        let long = "x".repeat(150_000);
        let item = serde_json::json!({"JobId": 1, "TaskStatus": "FAILED", "TaskType": "IMPORT DATA",
            "StartTime": "2026-12-01 10:00:00", "Message": long, "AsyncRequestId": long,
            "InstanceIds": ["cdb-aaaa1111"]});
        let t = decode_item(&item, ApiZone::beijing()).unwrap();
        assert_eq!(t.message.chars().count(), MAX_MESSAGE_CHARS + 3);
        assert!(t.message.ends_with("..."));
        assert_eq!(t.async_request_id.len(), MAX_REQUEST_ID_CHARS + 3);
        assert_eq!(cut("é短い", 2), "é短...");
        assert_eq!(cut("short", 5), "short");
        let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("cdb-{i:08}")).collect() };
        let mut item = item;
        item["InstanceIds"] = serde_json::json!(ids(MAX_INSTANCES_PER_TASK));
        assert_eq!(
            decode_item(&item, ApiZone::beijing())
                .unwrap()
                .instance_ids
                .len(),
            MAX_INSTANCES_PER_TASK
        );
        item["InstanceIds"] = serde_json::json!(ids(20_000));
        assert!(decode_item(&item, ApiZone::beijing()).is_err());
    }

    #[test]
    fn statuses_map_both_ways() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::from_wire(s.wire()), s);
            assert_eq!(TaskStatus::from_label(s.as_str()), Some(s));
            if let Some(c) = s.code() {
                assert_eq!(TaskStatus::from_code(c), s);
            }
        }
        assert_eq!(TaskStatus::from_code(7), TaskStatus::Unknown);
        assert_eq!(TaskStatus::from_wire("running"), TaskStatus::Running);
        assert_eq!(TaskStatus::from_wire("SUCCESS"), TaskStatus::Unknown);
        assert_eq!(TaskStatus::Waiting.code(), None);
    }

    #[test]
    fn task_types_map_and_unknowns_are_slugged() {
        for (code, wire, label) in TASK_TYPES {
            assert_eq!(task_type_from_wire(wire), label);
            assert_eq!(task_type_from_code(code), label);
            assert_eq!(task_type_wire(label), Some((code, wire)));
        }
        assert_eq!(task_type_from_code(4), "unknown");
        assert_eq!(task_type_from_code(99), "unknown");
        assert_eq!(task_type_from_wire("Create Backup!"), "create_backup");
        assert_eq!(task_type_from_wire("  "), "unknown");
        assert_eq!(task_type_from_wire(&"X".repeat(100)).len(), 40);
    }

    #[test]
    fn request_omits_unset_filters() {
        let q = TaskQuery {
            instance_id: Some("cdb-abc".into()),
            start_time_begin: Some(1_718_000_000),
            limit: 500,
            ..Default::default()
        };
        let body = serde_json::to_string(&request(&q, ApiZone::beijing())).unwrap();
        assert_eq!(
            body,
            r#"{"InstanceId":"cdb-abc","StartTimeBegin":"2024-06-10 14:13:20","Offset":0,"Limit":100}"#
        );
    }

    #[test]
    fn malformed_items_are_skipped_not_fatal() {
        let body = br#"{"Response":{"TotalCount":3,"RequestId":"r","Items":[
            {"JobId":1,"TaskStatus":"RUNNING","TaskType":"REBOOT","StartTime":"2024-06-10 14:13:20","EndTime":"","InstanceIds":null},
            {"JobId":"x","TaskStatus":"RUNNING"},
            {"JobId":3,"TaskStatus":"FAILED","TaskType":"REBOOT","StartTime":"not a time"},
            42]}}"#;
        let Envelope::Page(page) = decode_response(body, ApiZone::beijing()).unwrap() else {
            panic!("expected a page")
        };
        assert_eq!(page.item_count, 4);
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].end_time, None);
        assert!(page.items[0].instance_ids.is_empty());
        assert_eq!(page.malformed.len(), 3);
    }

    #[test]
    fn api_strings_cannot_forge_log_lines() {
        let body = "{\"Response\":{\"Error\":{\"Code\":\"FailedOperation\\n2026 ERROR forged\",\
            \"Message\":\"one\\n\\u001b[31mtwo\"},\"RequestId\":\"r\\r\\n\"}}";
        let Envelope::Error {
            code,
            message,
            request_id,
        } = decode_response(body.as_bytes(), ApiZone::beijing()).unwrap()
        else {
            panic!("expected an error")
        };
        for s in [&code, &message, &request_id] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
        assert_eq!(code, "FailedOperation\\n2026 ERROR forged");
        assert_eq!(message, "one\\n\\u{1b}[31mtwo");
        assert_eq!(sanitize(&"x".repeat(2_000)).len(), MAX_LOGGED_CHARS + 3);
    }

    #[test]
    fn instance_ids_are_checked() {
        assert!(is_plausible_instance_id("cdb-c1nl9rpv"));
        assert!(!is_plausible_instance_id(&"a".repeat(65)));
        assert!(!is_plausible_instance_id("cdb-ABC"));
        assert!(!is_plausible_instance_id("cdb-a\"b"));
        let item = serde_json::json!({"JobId": 1, "TaskStatus": "RUNNING", "TaskType": "REBOOT",
            "StartTime": "2024-06-10 14:13:20", "InstanceIds": ["cdb-ok", "cdb-\nbad"]});
        assert!(decode_item(&item, ApiZone::beijing()).is_err());
    }

    #[test]
    fn error_envelope_is_recognised() {
        let body = br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"slow down"},"RequestId":"abc"}}"#;
        assert_eq!(
            decode_response(body, ApiZone::beijing()).unwrap(),
            Envelope::Error {
                code: "RequestLimitExceeded".into(),
                message: "slow down".into(),
                request_id: "abc".into()
            }
        );
        assert!(decode_response(b"<html>", ApiZone::beijing()).is_err());
        assert!(decode_response(b"{\"Response\":{\"Items\":{}}}", ApiZone::beijing()).is_err());
    }
}
