//! The simulated CDB API: `DescribeTasks` in both item shapes, with its filters, paging and
//! bounds, and `DescribeDBInstances`, answered as the real API does.

use super::{
    DescribeTasksRequest, Fault, InvalidParameter, Matches, RecordedRequest, Shape, SimInstance,
    SimTask, Simulator, TaskState, error_response, real_now, request_id,
};
use crate::clock::Clock;
use crate::domain::{TaskStatus, owner, task_type_wire};
use crate::http::{HttpResponse, respond};
pub(super) use crate::product::cdb::{DESCRIBE_DB_INSTANCES, DESCRIBE_TASKS};
use crate::tencent::apitime::ApiZone;
use hyper::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Simulator {
    /// A listing action (`DescribeDBInstances`, `DescribeClusters`): the product's instances
    /// of the request's region, by id, paged by `Offset` and `Limit` (default 20, at most
    /// `max`), each written by `item`.
    pub(super) fn answer_listing(
        &self,
        (record, body, seq): (&mut RecordedRequest, &[u8], u64),
        (product, list, max): (&str, &str, u64),
        item: fn(&SimInstance) -> Value,
    ) -> HttpResponse {
        if let Some(code) = self.inner.instances_error.lock().expect("lock").clone() {
            record.outcome.clone_from(&code);
            let msg = format!(
                "you are not authorized to perform operation ({product}:{})",
                record.action
            );
            return error_response(&code, &msg, seq);
        }
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let offset = req.get("Offset").and_then(Value::as_u64).unwrap_or(0) as usize;
        let limit = req.get("Limit").and_then(Value::as_u64).unwrap_or(20);
        if !(1..=max).contains(&limit) {
            record.outcome = "InvalidParameter".into();
            return error_response(
                "InvalidParameter",
                &format!("Limit {limit} is out of range [1, {max}]"),
                seq,
            );
        }
        let mut all: Vec<SimInstance> = self
            .inner
            .instances
            .read()
            .expect("lock")
            .iter()
            .filter(|i| i.region == record.region && i.product == product)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let items: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(limit as usize)
            .map(item)
            .collect();
        let body = json!({"Response": {"TotalCount": all.len(), list: items, "RequestId": request_id(seq)}});
        respond(StatusCode::OK, "application/json", body.to_string())
    }

    /// Answers one CDB action.
    pub(super) fn answer_cdb(
        &self,
        record: &mut RecordedRequest,
        body: &[u8],
        seq: u64,
    ) -> (HttpResponse, Option<Duration>) {
        match record.action.as_str() {
            DESCRIBE_DB_INSTANCES => (
                self.answer_listing((record, body, seq), ("cdb", "Items", 2000), |i| {
                    json!({
                        "InstanceId": i.id,
                        "InstanceName": i.name,
                        "Region": i.region,
                        "Zone": i.zone,
                        "InstanceType": i.instance_type,
                        "EngineVersion": i.engine_version,
                        "Status": 1,
                        "TaskStatus": 0,
                        "TagList": tag_list(i),
                    })
                }),
                None,
            ),
            DESCRIBE_TASKS => self.answer_task_list(record, body, seq, &CDB_WIRE),
            _ => invalid_action(record, seq),
        }
    }

    /// Answers one task-list request of any product: faults first, then the product's request
    /// read into the common query, then the page in the product's item shape.
    pub(super) fn answer_task_list(
        &self,
        record: &mut RecordedRequest,
        body: &[u8],
        seq: u64,
        wire: &Wire,
    ) -> (HttpResponse, Option<Duration>) {
        let number = self.inner.tasks_served.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = self.draw_fault(number);
        // Faults that replace the answer: the outcome recorded, and the response.
        let replaced = self.fault_response(fault, body, seq);
        if let Some((outcome, response)) = replaced {
            record.outcome = outcome.into();
            return (response, None);
        }
        let delay = (fault == Some(Fault::Slow))
            .then(|| self.inner.faults.lock().expect("lock").slow_delay);
        let request = match (wire.parse)(body) {
            Ok(r) => r,
            Err((code, msg)) => {
                record.outcome = code.into();
                return (error_response(code, &msg, seq), None);
            }
        };
        record.request = Some(request.clone());
        if record.region.is_empty() {
            record.outcome = "MissingParameter".into();
            return (
                error_response("MissingParameter", "the Region parameter is required", seq),
                None,
            );
        }
        let bad_item = fault == Some(Fault::BadItem);
        match self.page(&request, &record.region, wire, bad_item) {
            Ok(response) => {
                let body = json!({"Response": {
                    "TotalCount": response.0,
                    wire.list: response.1,
                    "RequestId": request_id(seq),
                }});
                (
                    respond(StatusCode::OK, "application/json", body.to_string()),
                    delay,
                )
            }
            Err(msg) => {
                record.outcome = "InvalidParameter".into();
                (error_response("InvalidParameter", &msg.0, seq), None)
            }
        }
    }

    /// The filtered, ordered page: total count and items.
    fn page(
        &self,
        req: &DescribeTasksRequest,
        region: &str,
        wire: &Wire,
        bad_item: bool,
    ) -> Result<(usize, Vec<Value>), InvalidParameter> {
        let zone = self.inner.zone;
        let limit = match req.limit {
            None | Some(0) => 20,
            Some(l) if (1..=100).contains(&l) => l as usize,
            Some(l) => {
                return Err(InvalidParameter(format!(
                    "Limit {l} is out of range [1, 100]"
                )));
            }
        };
        let offset = match req.offset {
            None => 0,
            Some(o) if o >= 0 => o as usize,
            Some(o) => return Err(InvalidParameter(format!("Offset {o} is negative"))),
        };
        let time = |v: &Option<String>, name: &str| -> Result<Option<i64>, InvalidParameter> {
            match v {
                None => Ok(None),
                Some(s) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                    .ok()
                    .and_then(|_| zone.parse(s))
                    .map(Some)
                    .ok_or_else(|| {
                        InvalidParameter(format!(
                            "{name} {s:?} is not a time of the form YYYY-MM-DD HH:MM:SS"
                        ))
                    }),
            }
        };
        let begin = time(&req.start_time_begin, "StartTimeBegin")?;
        let end = time(&req.start_time_end, "StartTimeEnd")?;
        let now = self.inner.clock.now() - self.inner.started;
        let tasks = self.inner.tasks.read().expect("lock");
        let hits = self.matches(&tasks, req, (wire.product, region), now, (begin, end));
        let total = hits.len();
        let mut items: Vec<Value> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|&(i, state)| (wire.render)(self, &tasks[i], state))
            .collect();
        if bad_item {
            // An extra item on a short page; on a full page it takes the place of the last one,
            // so offsets stay those of the API.
            let bad = json!({"JobId": "not-a-number", "TaskStatus": 17});
            if items.len() < limit {
                items.push(bad);
            } else if let Some(last) = items.last_mut() {
                *last = bad;
            }
        }
        Ok((total, items))
    }

    /// The tasks a query matches now, newest first. Only tasks that started inside the query's
    /// time bounds are looked at (a binary search on the sorted list), and the result is kept
    /// for the next page of the same query in the same second, so paging through a million
    /// tasks costs one scan, not one per page.
    fn matches(
        &self,
        tasks: &[SimTask],
        req: &DescribeTasksRequest,
        (product, region): (&str, &str),
        now: i64,
        (begin, end): (Option<i64>, Option<i64>),
    ) -> Arc<Vec<(usize, TaskState)>> {
        let unpaged = DescribeTasksRequest {
            offset: None,
            limit: None,
            ..req.clone()
        };
        let key = format!("{product}|{region}|{now}|{unpaged:?}");
        let mut cache = self.inner.matches.lock().expect("lock");
        if let Some(m) = cache.as_ref().filter(|m| m.key == key) {
            return m.hits.clone();
        }
        // The query's bounds are on the API's clock.
        let started = self.started();
        // Tasks that have not started yet are invisible.
        let newest = end.map_or(now, |e| (e - started).min(now));
        let lo = tasks.partition_point(|t| t.start > newest);
        let hi = begin.map_or(tasks.len(), |b| {
            tasks.partition_point(|t| t.start >= b - started)
        });
        let hits: Vec<(usize, TaskState)> = (lo..hi.max(lo))
            .filter_map(|i| {
                let t = &tasks[i];
                let state = t.state_at(now)?;
                let status = state.0;
                // A TDSQL-C unit (`cluster/instance`) is found by its cluster.
                let keep = t.region == region
                    && t.product == product
                    && req
                        .instance_id
                        .as_ref()
                        .is_none_or(|id| t.instances.iter().any(|u| owner(u) == id))
                    && req
                        .async_request_id
                        .as_ref()
                        .is_none_or(|id| *id == t.async_request_id())
                    && req.task_types.as_ref().is_none_or(|codes| {
                        task_type_wire(&t.task_type).is_some_and(|(c, _)| codes.contains(&c))
                    })
                    && req
                        .task_status
                        .as_ref()
                        .is_none_or(|codes| status.code().is_some_and(|c| codes.contains(&c)));
                keep.then_some((i, state))
            })
            .collect();
        let hits = Arc::new(hits);
        *cache = Some(Matches {
            key,
            hits: hits.clone(),
        });
        hits
    }

    /// A task as CDB lists it, in the scenario's item shape.
    fn render(&self, t: &SimTask, (status, progress, end): TaskState) -> Value {
        let zone = self.inner.zone;
        let start = zone.format(self.started() + t.start);
        let (type_code, type_wire) = task_type_wire(&t.task_type)
            .map(|(c, w)| (c, w.to_string()))
            .unwrap_or((0, t.task_type.to_ascii_uppercase().replace('_', " ")));
        let code = if status == TaskStatus::Failed { -1 } else { 0 };
        match self.inner.shape {
            Shape::Current => json!({
                "Code": code,
                "Message": if status == TaskStatus::Failed { t.message.as_deref().unwrap_or("task failed (simulated)") } else { "" },
                "JobId": t.job_id,
                "Progress": progress,
                "TaskStatus": status.wire(),
                "TaskType": type_wire,
                "StartTime": start,
                "EndTime": end.map_or_else(|| "0000-00-00 00:00:00".to_string(), |e| zone.format(self.started() + e)),
                "InstanceIds": t.instances,
                "AsyncRequestId": t.async_request_id(),
                "TaskAttachInfo": [],
            }),
            Shape::Documented => {
                let data: Vec<Value> = if t.instances.is_empty() {
                    vec![json!({"InstanceId": ""})]
                } else {
                    t.instances
                        .iter()
                        .map(|i| json!({"InstanceId": i}))
                        .collect()
                };
                json!({
                    // WAITING has no integer code; the old shape predates it and shows INITIAL.
                    "Status": status.code().unwrap_or(0),
                    "Code": code,
                    "Data": data,
                    "JobId": t.job_id,
                    "StartTime": start,
                    "Progress": progress,
                    "Message": "",
                    "EndTime": end.map_or_else(|| "0000-00-00 00:00:00".to_string(), |e| zone.format(self.started() + e)),
                    "Type": type_code,
                })
            }
        }
    }
}

/// An error code and message the API would answer a request with.
pub(super) type Refused = (&'static str, String);

/// One product's task list on the wire: how its request reads into the common query, the
/// name of its item array, and how it writes an item.
pub(super) struct Wire {
    /// The product's name: only its tasks are listed.
    pub(super) product: &'static str,
    /// The request body as a query, or the error code and message the API would answer.
    pub(super) parse: fn(&[u8]) -> Result<DescribeTasksRequest, Refused>,
    /// `Items`, `TaskList`, `TaskSet`.
    pub(super) list: &'static str,
    /// One item.
    pub(super) render: fn(&Simulator, &SimTask, TaskState) -> Value,
}

const CDB_WIRE: Wire = Wire {
    product: "cdb",
    parse: |body| {
        serde_json::from_slice(body).map_err(|e| {
            let code = if e.to_string().contains("unknown field") {
                "UnknownParameter"
            } else {
                "InvalidParameter"
            };
            (code, format!("bad request body: {e}"))
        })
    },
    list: "Items",
    render: Simulator::render,
};

/// An instance's tags as the APIs list them: `[{"TagKey", "TagValue"}]`.
pub(super) fn tag_list(i: &SimInstance) -> Vec<Value> {
    i.tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect()
}

/// The answer to an action the product does not have.
pub(super) fn invalid_action(
    record: &mut RecordedRequest,
    seq: u64,
) -> (HttpResponse, Option<Duration>) {
    record.outcome = "InvalidAction".into();
    let msg = format!("action {:?} is not supported", record.action);
    (error_response("InvalidAction", &msg, seq), None)
}

/// A full page of made-up running tasks at the requested offset, with a `TotalCount` that
/// always promises one more page.
pub(super) fn endless_page(body: &[u8], seq: u64) -> HttpResponse {
    let req: DescribeTasksRequest = serde_json::from_slice(body).unwrap_or_default();
    let offset = req.offset.unwrap_or(0).max(0);
    let limit = req.limit.unwrap_or(20).clamp(1, 100);
    let zone = ApiZone::beijing();
    let now = real_now();
    let items: Vec<Value> = (offset..offset + limit)
        .map(|n| {
            json!({"JobId": 7_000_000 + n, "TaskStatus": "RUNNING", "TaskType": "REBOOT",
                   "StartTime": zone.format(now - n), "EndTime": "", "Progress": 1,
                   "InstanceIds": ["cdb-endless1"], "Code": 0, "Message": ""})
        })
        .collect();
    let body = json!({"Response": {"TotalCount": offset + 2 * limit, "Items": items,
                      "RequestId": request_id(seq)}});
    respond(StatusCode::OK, "application/json", body.to_string())
}
