//! What the products with open vocabularies share (TDSQL-C, PostgreSQL): one task item read
//! through a table of its field names, camelCase task types, statuses mapped by a product's
//! table with everything else kept as its slug, and one listing item.
//!
//! Only the fields named here are read from an item. The payloads beside them (`Input`,
//! `Output`, `TaskDetail`, which can hold passwords) are never copied anywhere.

use crate::domain::{Instance, Task, TaskStatus, camel_task_type};
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::{
    DecodeError, MAX_MESSAGE_CHARS, cut, int_of, is_plausible_instance_id, sanitize,
};
use serde_json::{Map, Value};

/// The field names of one product's task item.
pub(super) struct TaskFields {
    /// The task id (`ID`, `TaskId`).
    pub(super) id: &'static str,
    /// Progress 0-100 (`Process`, `Progress`).
    pub(super) progress: &'static str,
    /// The failure text, when the item has one at its top level (`ErrMsg`).
    pub(super) message: Option<&'static str>,
    /// The product's status table: raw value (compared case-insensitively) to status.
    pub(super) statuses: &'static [(&'static str, TaskStatus)],
    /// The series unit of an item (instance id, or `cluster/instance`); `None` when an id is
    /// not plausible.
    pub(super) unit: fn(&Map<String, Value>) -> Option<String>,
}

/// A raw status through a product's table; a value outside it is kept as its slug and is
/// not terminal.
pub(super) fn status(raw: &str, table: &[(&str, TaskStatus)]) -> TaskStatus {
    let raw = raw.trim();
    table
        .iter()
        .find(|(wire, _)| wire.eq_ignore_ascii_case(raw))
        .map_or_else(|| TaskStatus::open(raw), |(_, st)| *st)
}

/// A string field of an item (`""` when absent or not a string).
pub(super) fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
}

/// An id field that may become a label value: empty, or plausible (`None` otherwise).
pub(super) fn id_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    let id = str_of(obj, key);
    (id.is_empty() || is_plausible_instance_id(id)).then_some(id)
}

/// One task item, read through `fields`.
pub(super) fn decode_task(
    item: &Value,
    zone: ApiZone,
    fields: &TaskFields,
) -> Result<Task, DecodeError> {
    let obj = item.as_object().ok_or("not an object")?;
    let id = fields.id;
    let job_id = obj
        .get(id)
        .and_then(int_of)
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("no {id}"))?;
    let status = match obj.get("Status") {
        Some(Value::String(s)) => status(s, fields.statuses),
        _ => return Err(format!("{id} {job_id}: no Status").into()),
    };
    let task_type = match obj.get("TaskType") {
        Some(Value::String(s)) => camel_task_type(s),
        _ => "unknown".to_string(),
    };
    let start_time = zone
        .parse(str_of(obj, "StartTime"))
        .ok_or_else(|| format!("{id} {job_id}: no usable StartTime"))?;
    // PostgreSQL's is `""` while the task runs.
    let end_time = zone.parse(str_of(obj, "EndTime"));
    // An id becomes a label value: an implausible one skips the item (counted as `Decode`).
    let unit = (fields.unit)(obj).ok_or_else(|| {
        format!("{id} {job_id}: an instance or cluster id is not [a-z0-9-]{{1,64}}")
    })?;
    Ok(Task {
        job_id,
        task_type,
        status,
        start_time,
        end_time,
        progress: obj
            .get(fields.progress)
            .and_then(int_of)
            .unwrap_or(0)
            .clamp(0, 100),
        instance_ids: if unit.is_empty() {
            Vec::new()
        } else {
            vec![unit]
        },
        async_request_id: String::new(),
        code: None,
        message: fields
            .message
            .map(|k| cut(str_of(obj, k), MAX_MESSAGE_CHARS))
            .unwrap_or_default(),
    })
}

/// The field names of one product's listing item.
pub(super) struct ListingFields {
    pub(super) id: &'static str,
    pub(super) name: &'static str,
    pub(super) version: &'static str,
    pub(super) tags: &'static str,
}

/// Longest name, zone, version or tag kept from a listing.
const MAX_LISTED_FIELD: usize = 256;

/// A listing's tags (`[{"TagKey", "TagValue"}]`, as every product writes them), keys and
/// values cut to [`MAX_LISTED_FIELD`]; tags without a key are dropped.
pub(super) fn tags_of(list: Option<&Value>) -> Vec<(String, String)> {
    let short = |t: &Map<String, Value>, k: &str| {
        str_of(t, k)
            .chars()
            .take(MAX_LISTED_FIELD)
            .collect::<String>()
    };
    match list {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|t| {
                let key = short(t, "TagKey");
                (!key.is_empty()).then(|| (key, short(t, "TagValue")))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One listing item, read through `fields`.
pub(super) fn decode_listed(item: &Value, fields: &ListingFields) -> Result<Instance, DecodeError> {
    let obj = item.as_object().ok_or("not an object")?;
    let id = str_of(obj, fields.id);
    if !is_plausible_instance_id(id) {
        return Err(format!("implausible {} {:?}", fields.id, sanitize(id)).into());
    }
    let short = |o: &Map<String, Value>, k: &str| {
        str_of(o, k)
            .chars()
            .take(MAX_LISTED_FIELD)
            .collect::<String>()
    };
    let tags = tags_of(obj.get(fields.tags));
    Ok(Instance {
        instance_id: id.to_string(),
        name: short(obj, fields.name),
        instance_type: "",
        engine_version: short(obj, fields.version),
        zone: short(obj, "Zone"),
        tags,
    })
}
