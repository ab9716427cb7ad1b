//! The simulated TDSQL-C API (`cynosdb` 2019-01-07): `DescribeTasks` with its field names
//! (`TaskList`, `ID`, `Process`, `ErrMsg`), its undocumented status strings (several spellings,
//! and whatever a scenario gives), payloads that carry a password as the documented example
//! does, and `DescribeClusters`.

use super::cdb::{Refused, Wire, invalid_action, tag_list};
use super::{DescribeTasksRequest, RecordedRequest, SimTask, Simulator, TaskState};
use crate::domain::TaskStatus;
use crate::http::HttpResponse;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The secret a simulated task's `Input` carries, as TDSQL-C's documented example carries an
/// admin password: the exporter must never repeat it.
pub const PAYLOAD_SECRET: &str = "Sim-Admin-Passw0rd";

impl Simulator {
    /// Answers one TDSQL-C action.
    pub(super) fn answer_cynosdb(
        &self,
        record: &mut RecordedRequest,
        body: &[u8],
        seq: u64,
    ) -> (HttpResponse, Option<Duration>) {
        match record.action.as_str() {
            "DescribeTasks" => self.answer_task_list(record, body, seq, &WIRE),
            "DescribeClusters" => (
                self.answer_listing((record, body, seq), ("cynosdb", "ClusterSet", 100), |c| {
                    json!({
                        "ClusterId": c.id,
                        "ClusterName": c.name,
                        "Region": c.region,
                        "Zone": c.zone,
                        "DbVersion": c.engine_version,
                        "DbType": "MYSQL",
                        "Status": "running",
                        "InstanceNum": 2,
                        "ResourceTags": tag_list(c),
                    })
                }),
                None,
            ),
            _ => invalid_action(record, seq),
        }
    }
}

/// `StartTimeBegin`, `StartTimeEnd`, `Filters` (the `ClusterId` filter is applied, others are
/// accepted), `Offset`, `Limit`; any other key is `UnknownParameter`.
fn parse(body: &[u8]) -> Result<DescribeTasksRequest, Refused> {
    let obj: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ("InvalidParameter", format!("bad request body: {e}")))?;
    let mut req = DescribeTasksRequest::default();
    for (k, v) in &obj {
        let text = || v.as_str().map(str::to_string);
        match k.as_str() {
            "StartTimeBegin" => req.start_time_begin = text(),
            "StartTimeEnd" => req.start_time_end = text(),
            "Offset" => req.offset = v.as_i64(),
            "Limit" => req.limit = v.as_i64(),
            "Filters" => {
                req.instance_id = filter_values(v, "ClusterId").and_then(|c| c.first().cloned());
                req.task_status = filter_values(v, "Status").map(|wanted| status_codes(&wanted));
            }
            other => {
                return Err(("UnknownParameter", format!("unknown parameter {other:?}")));
            }
        }
    }
    Ok(req)
}

/// The values of the filter on `name`, if the filters hold one.
fn filter_values(filters: &Value, name: &str) -> Option<Vec<String>> {
    filters.as_array()?.iter().find_map(|f| {
        let names = f.get("Names").and_then(Value::as_array);
        let named = names.is_some_and(|n| n.iter().any(|x| x == name))
            || f.get("Name").is_some_and(|n| n == name);
        let values = f.get("Values")?.as_array()?;
        named.then(|| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    })
}

/// A `Status` filter as the common query's status codes: the statuses whose spelling (as
/// this simulator writes them) is among `wanted`.
fn status_codes(wanted: &[String]) -> Vec<i64> {
    [
        TaskStatus::Running,
        TaskStatus::Waiting,
        TaskStatus::Paused,
        TaskStatus::Succeed,
        TaskStatus::Failed,
        TaskStatus::Killed,
    ]
    .into_iter()
    .filter(|st| {
        [0, 1]
            .iter()
            .any(|parity| wanted.iter().any(|w| *w == status_wire(*st, *parity)))
    })
    .map(|st| st.code().unwrap_or(-2))
    .collect()
}

/// A status as TDSQL-C might write it: the API documents none, so the spellings vary by task.
fn status_wire(st: TaskStatus, job_id: i64) -> String {
    let odd = job_id % 2 == 1;
    match st {
        TaskStatus::Succeed => "success",
        TaskStatus::Running if odd => "processing",
        TaskStatus::Running => "running",
        TaskStatus::Failed if odd => "error",
        TaskStatus::Failed => "failed",
        TaskStatus::Killed => "cancelled",
        TaskStatus::Paused => "paused",
        TaskStatus::Waiting => "pending",
        other => return other.as_str().to_string(),
    }
    .to_string()
}

/// A label (`create_cluster`) as TDSQL-C's camelCase type (`taskCreateCluster`, given as is
/// when it already starts with `task`).
fn type_wire(label: &str) -> String {
    let mut out = String::new();
    let words = label.split('_').filter(|w| !w.is_empty());
    let words: Vec<&str> = if label.starts_with("task_") {
        words.collect()
    } else {
        std::iter::once("task").chain(words).collect()
    };
    for (n, w) in words.iter().enumerate() {
        if n == 0 {
            out.push_str(w);
        } else {
            let mut c = w.chars();
            out.extend(c.next().map(|f| f.to_ascii_uppercase()));
            out.push_str(c.as_str());
        }
    }
    out
}

fn render(sim: &Simulator, t: &SimTask, (status, progress, end): TaskState) -> Value {
    let zone = sim.inner.zone;
    let start = zone.format(sim.started() + t.start);
    let unit = t.instances.first().map_or("", String::as_str);
    let (cluster, instance) = unit.split_once('/').unwrap_or((unit, ""));
    let failed = status == TaskStatus::Failed;
    json!({
        "ID": t.job_id,
        "AppId": 1_250_000_000,
        "ClusterId": cluster,
        "ClusterName": "",
        "InstanceId": instance,
        "InstanceName": "",
        "InstanceGroupId": "",
        "Region": t.region,
        "CreateTime": start,
        "DelayTime": "",
        "StartTime": start,
        "EndTime": end.map_or_else(String::new, |e| zone.format(sim.started() + e)),
        "UpdateTime": start,
        "ErrMsg": if failed { t.message.as_deref().unwrap_or("task failed (simulated)") } else { "" },
        "FlowId": 900_000 + t.job_id,
        "Input": format!("{{\"clusterId\":\"{cluster}\",\"adminPassword\":\"{PAYLOAD_SECRET}\"}}"),
        "Output": "{}",
        "ObjectId": if instance.is_empty() { cluster } else { instance },
        "ObjectType": if instance.is_empty() { "cluster" } else { "instance" },
        "Operator": "100000000001",
        "Status": status_wire(status, t.job_id),
        "TaskType": type_wire(&t.task_type),
        "TriggerTaskId": 0,
        "Process": progress,
        "TaskProgressInfo": {"CurrentStep": "", "CurrentStepProgress": progress, "CurrentStepRemainingTime": ""},
    })
}

const WIRE: Wire = Wire {
    product: "cynosdb",
    parse,
    list: "TaskList",
    render,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_written_in_camel_case_and_read_back_to_their_label() {
        for label in ["task_create_cluster", "upgrade_proxy", "auto_backup"] {
            let wire = type_wire(label);
            assert!(wire.starts_with("task"), "{wire}");
            let back = crate::domain::camel_task_type(&wire);
            assert!(
                back.ends_with(label.trim_start_matches("task_")),
                "{wire} {back}"
            );
        }
        assert_eq!(type_wire("create_cluster"), "taskCreateCluster");
    }
}
