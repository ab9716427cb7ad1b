//! The simulated PostgreSQL API (`postgres` 2017-03-12): `DescribeTasks` with its field names
//! (`TaskSet`, `TaskId`, `DBInstanceId`, `MinStartTime`/`MaxStartTime`), its five statuses,
//! `EndTime` `""` while a task runs, a `TaskDetail` whose `Input` holds a password, and
//! `DescribeDBInstances`.

use super::cdb::{Refused, Wire, invalid_action, tag_list};
use super::cynosdb::PAYLOAD_SECRET;
use super::{DescribeTasksRequest, RecordedRequest, SimTask, Simulator, TaskState};
use crate::domain::TaskStatus;
use crate::http::HttpResponse;
use serde_json::{Map, Value, json};
use std::time::Duration;

impl Simulator {
    /// Answers one PostgreSQL action.
    pub(super) fn answer_postgres(
        &self,
        record: &mut RecordedRequest,
        body: &[u8],
        seq: u64,
    ) -> (HttpResponse, Option<Duration>) {
        match record.action.as_str() {
            "DescribeTasks" => self.answer_task_list(record, body, seq, &WIRE),
            "DescribeDBInstances" => (
                self.answer_listing(
                    (record, body, seq),
                    ("postgres", "DBInstanceSet", 100),
                    |i| {
                        json!({
                            "DBInstanceId": i.id,
                            "DBInstanceName": i.name,
                            "Region": i.region,
                            "Zone": i.zone,
                            "DBVersion": i.engine_version,
                            "DBMajorVersion": i.engine_version.split('.').next().unwrap_or(""),
                            "DBInstanceStatus": "running",
                            "TagList": tag_list(i),
                        })
                    },
                ),
                None,
            ),
            _ => invalid_action(record, seq),
        }
    }
}

/// The documented parameters; `Limit` must be 1 to 100 and the order `StartTime`, as the
/// exporter asks (the simulator lists newest first).
fn parse(body: &[u8]) -> Result<DescribeTasksRequest, Refused> {
    let obj: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ("InvalidParameter", format!("bad request body: {e}")))?;
    let mut req = DescribeTasksRequest::default();
    for (k, v) in &obj {
        let text = || v.as_str().map(str::to_string);
        match k.as_str() {
            "MinStartTime" => req.start_time_begin = text(),
            "MaxStartTime" => req.start_time_end = text(),
            "DBInstanceId" => req.instance_id = text(),
            "Offset" => req.offset = v.as_i64(),
            "Limit" => req.limit = v.as_i64(),
            "OrderBy" if v == "StartTime" => {}
            "OrderByType" if v == "desc" => {}
            "TaskId" => {}
            other => {
                return Err((
                    "InvalidParameterValue",
                    format!("parameter {other:?} with value {v} is not supported"),
                ));
            }
        }
    }
    Ok(req)
}

/// The five documented statuses; a status outside them is written capitalised.
fn status_wire(st: TaskStatus) -> String {
    match st {
        TaskStatus::Running => "Running".into(),
        TaskStatus::Succeed => "Success".into(),
        TaskStatus::Waiting => "WaitSwitch".into(),
        TaskStatus::Failed => "Fail".into(),
        TaskStatus::Paused => "Pause".into(),
        other => pascal(other.as_str()),
    }
}

/// `restore_database` -> `RestoreDatabase`.
fn pascal(label: &str) -> String {
    label
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase())
                .into_iter()
                .chain(c)
                .collect::<String>()
        })
        .collect()
}

fn render(sim: &Simulator, t: &SimTask, (status, progress, end): TaskState) -> Value {
    let zone = sim.inner.zone;
    let failed = status == TaskStatus::Failed;
    json!({
        "TaskId": t.job_id,
        "TaskType": pascal(&t.task_type),
        "DBInstanceId": t.instances.first().map_or("", String::as_str),
        "StartTime": zone.format(sim.started() + t.start),
        // `""` while the task runs, as the API answers.
        "EndTime": end.map_or_else(String::new, |e| zone.format(sim.started() + e)),
        "Status": status_wire(status),
        "Progress": progress,
        "TaskDetail": {
            "CurrentStep": if end.is_some() { "Task Complete" } else { "Running" },
            "AllSteps": "[]",
            "Input": format!("{{\"AdminName\":\"dbadmin\",\"Password\":\"{PAYLOAD_SECRET}\"}}"),
            "Output": "",
            "SwitchTag": 0,
            "SwitchTime": "",
            "Message": if failed { t.message.as_deref().unwrap_or("task failed (simulated)") } else { "" },
        },
    })
}

const WIRE: Wire = Wire {
    product: "postgres",
    parse,
    list: "TaskSet",
    render,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_statuses_are_written_as_the_api_writes_them() {
        assert_eq!(pascal("restore_database"), "RestoreDatabase");
        assert_eq!(
            crate::domain::camel_task_type(&pascal("restore_database")),
            "restore_database"
        );
        assert_eq!(status_wire(TaskStatus::Waiting), "WaitSwitch");
        assert_eq!(status_wire(TaskStatus::Killed), "Killed");
    }
}
