//! Wire types of `DescribeTasks` and the enum mappings to the exporter's label values.
//!
//! Two item shapes are decoded into one [`Task`]: the current `TaskDetail` (string `TaskStatus` /
//! `TaskType`, `InstanceIds`) and the old documented one (integer `Status` / `Type`,
//! `Data[].InstanceId`). Items are decoded one by one, so a malformed item is skipped and reported
//! without losing the rest of the page.

use serde_json::Value;

pub use crate::domain::{
    Instance, TASK_TYPES, Task, TaskStatus, known_task_type_labels, task_type_from_code,
    task_type_from_wire, task_type_wire,
};

/// A task's `Message` is kept up to this many characters (a longer one ends in `...`).
pub const MAX_MESSAGE_CHARS: usize = 2048;
/// A task's `AsyncRequestId` is kept up to this many characters (the API's are UUIDs).
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// `s` cut to `max` characters, marked with `...` when it was longer.
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}...", &s[..end]),
    }
}

/// What makes a body or an item unusable, in words (it goes to a debug log line and the `Decode` count).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl From<String> for DecodeError {
    fn from(s: String) -> Self {
        DecodeError(s)
    }
}

impl From<&str> for DecodeError {
    fn from(s: &str) -> Self {
        DecodeError(s.to_string())
    }
}

/// A task query, whatever the product: the start-time window, paging, and the filters the
/// products document. Times are unix seconds; each product writes them on the wire in the
/// configured zone ([`crate::product::Product::task_request`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// `InstanceId`
    pub instance_id: Option<String>,
    /// `AsyncRequestId`
    pub async_request_id: Option<String>,
    /// `TaskTypes` codes
    pub task_types: Vec<i64>,
    /// Only tasks in these statuses
    pub task_status: Vec<TaskStatus>,
    /// `StartTimeBegin`
    pub start_time_begin: Option<i64>,
    /// `StartTimeEnd`
    pub start_time_end: Option<i64>,
    /// `Offset`
    pub offset: u64,
    /// `Limit` (at most 100)
    pub limit: u64,
}

// The CDB decoders, where the first releases had them.
pub use crate::product::cdb::{
    DescribeTasksRequest, decode_instances, decode_item, decode_response,
};

/// One page of an answer: the items that decoded, and a description of each that did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// `TotalCount` as the API says it.
    pub total_count: u64,
    /// Items on this page, well-formed and malformed alike (paging counts both).
    pub item_count: usize,
    /// The well-formed items.
    pub items: Vec<T>,
    /// One description per malformed item that was skipped.
    pub malformed: Vec<String>,
    /// `RequestId`.
    pub request_id: String,
}

/// One page of a `DescribeTasks` answer.
pub type TaskPage = Page<Task>;

/// One page of a `DescribeDBInstances` answer.
pub type InstancePage = Page<Instance>;

/// What the `Response` object held: a page, or an API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<P = TaskPage> {
    /// A successful answer.
    Page(P),
    /// `Response.Error`.
    Error {
        /// `Error.Code`
        code: String,
        /// `Error.Message`
        message: String,
        /// `RequestId`
        request_id: String,
    },
}

/// Opens a body and decodes each item of `Items` with `decode`.
pub(crate) fn decode_with<T>(
    body: &[u8],
    decode: impl Fn(&Value) -> Result<T, DecodeError>,
) -> Result<Envelope<Page<T>>, DecodeError> {
    decode_list(body, "Items", decode)
}

/// Opens a body and decodes each item of the array `list` (`Items`, `TaskList`, `TaskSet`,
/// ...) with `decode`.
pub(crate) fn decode_list<T>(
    body: &[u8],
    list: &str,
    decode: impl Fn(&Value) -> Result<T, DecodeError>,
) -> Result<Envelope<Page<T>>, DecodeError> {
    let root = parse_body(body)?;
    let opened = match open_response(&root, list)? {
        Ok(opened) => opened,
        Err(api_error) => return Ok(api_error),
    };
    let mut page = Page {
        total_count: opened.total_count,
        item_count: opened.items.len(),
        items: Vec::with_capacity(opened.items.len()),
        malformed: Vec::new(),
        request_id: opened.request_id,
    };
    for (i, item) in opened.items.iter().enumerate() {
        match decode(item) {
            Ok(v) => page.items.push(v),
            Err(e) => page.malformed.push(format!("item {i}: {e}")),
        }
    }
    Ok(Envelope::Page(page))
}

/// A successful response opened: its items and count.
struct Opened<'a> {
    items: &'a [Value],
    total_count: u64,
    request_id: String,
}

fn parse_body(body: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}").into())
}

/// Reads `Response.<list>` and `TotalCount`, or `Response.Error` (the inner `Err`); the outer
/// `Err` says the body is unusable.
fn open_response<'a, P>(
    root: &'a Value,
    list: &str,
) -> Result<Result<Opened<'a>, Envelope<P>>, DecodeError> {
    let response = root
        .get("Response")
        .and_then(Value::as_object)
        .ok_or("body has no Response object")?;
    let request_id = sanitize(
        response
            .get("RequestId")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    if let Some(error) = response.get("Error") {
        // These end up in log lines: no control characters, bounded length.
        let field = |k: &str| sanitize(error.get(k).and_then(Value::as_str).unwrap_or_default());
        return Ok(Err(Envelope::Error {
            code: field("Code"),
            message: field("Message"),
            request_id,
        }));
    }
    let items = match response.get(list) {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return Err(format!("Response.{list} is not an array").into()),
    };
    let total_count = match response.get("TotalCount") {
        Some(v) => int_of(v)
            .filter(|n| *n >= 0)
            .ok_or("Response.TotalCount is not a count")? as u64,
        None => items.len() as u64,
    };
    Ok(Ok(Opened {
        items,
        total_count,
        request_id,
    }))
}

/// The longest API string [`sanitize`] keeps.
pub const MAX_LOGGED_CHARS: usize = 512;

/// An API-supplied string made safe for a text log line: control characters (newlines, ANSI
/// escapes) written as escapes, at most [`MAX_LOGGED_CHARS`] characters. JSON logs escape on
/// their own; text logs would otherwise let a server forge lines or recolour the terminal.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_LOGGED_CHARS));
    for (n, c) in s.chars().enumerate() {
        if n == MAX_LOGGED_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest instance id accepted from the API.
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// Whether an instance id from the API may become a label value: 1 to
/// [`MAX_INSTANCE_ID_LEN`] characters of `[a-z0-9-]` (ids look like `cdb-c1nl9rpv`).
pub fn is_plausible_instance_id(id: &str) -> bool {
    (1..=MAX_INSTANCE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An integer given as a JSON number or a numeric string.
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
