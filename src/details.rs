//! Task details for responders (docs/http.md#task-details): the query of `/api/v1/tasks` and `/tasks`, the
//! selection over the in-memory stores, and the JSON and HTML renderings. The cloud API is never
//! called here.
//!
//! Selection keeps at most `limit` tasks while it scans (a heap ordered by the output order), so
//! an unfiltered query over a million tasks costs the scan and `limit` materialised tasks, not a
//! copy of the store.

pub use crate::domain::Instances;
use crate::domain::{TargetId, Task, TaskStatus};
use crate::state::SharedTarget;
use crate::tasks::TaskView;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::sync::Arc;

/// One target's store and instances.
#[derive(Debug, Clone)]
pub struct Source {
    /// The target.
    pub id: TargetId,
    /// Its task store.
    pub state: SharedTarget,
    /// Its instances, for names.
    pub instances: Arc<Instances>,
}

/// Default `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// The most distinct values of one filter name (`instance_id`, ...) a query may give.
pub const MAX_VALUES: usize = 100;

/// The filters of a task query; lists are OR-ed within a name, names AND-ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `product`
    pub products: Vec<String>,
    /// `job_id`
    pub job_ids: Vec<i64>,
    /// `region`
    pub regions: Vec<String>,
    /// `instance_id`
    pub instance_ids: Vec<String>,
    /// `task_type` (label slugs)
    pub task_types: Vec<String>,
    /// `status`
    pub statuses: Vec<TaskStatus>,
    /// `since`, unix seconds: tasks that started or ended at or after it.
    pub since: Option<i64>,
    /// `since` as given, to show it back in the form.
    pub since_text: String,
    /// `limit`
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            products: Vec::new(),
            job_ids: Vec::new(),
            regions: Vec::new(),
            instance_ids: Vec::new(),
            task_types: Vec::new(),
            statuses: Vec::new(),
            since: None,
            since_text: String::new(),
            limit: DEFAULT_LIMIT,
        }
    }
}

/// A parameter the query cannot use: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{name}`: {message}")]
pub struct BadParam {
    /// The parameter's name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

fn is_slug(v: &str, extra: &[u8], max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// `since` as unix seconds: an integer, or RFC 3339 with an offset.
fn parse_since(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    // A `+` sent unencoded arrives as a space (form encoding): read it back as the offset.
    chrono::DateTime::parse_from_rfc3339(v)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(&v.replace(' ', "+")))
        .ok()
        .map(|d| d.timestamp())
}

impl Filter {
    /// Parses a query string. Empty values count as absent (an empty form field); an unknown
    /// name or a bad value is a [`BadParam`]. Pure.
    pub fn parse(query: Option<&str>) -> Result<Filter, BadParam> {
        let mut f = Filter::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if value.is_empty() {
                continue;
            }
            let bad = |message: String| BadParam {
                name: name.to_string(),
                message,
            };
            let v = value.as_ref();
            // A value given twice is one value; more than MAX_VALUES of a name is refused, so
            // a query's cost stays bounded whatever its length.
            // (values so far, whether this one is among them)
            let seen = f.count_of(&name, v);
            match seen {
                Some((_, true)) => continue,
                Some((n, false)) if n >= MAX_VALUES => {
                    return Err(bad(format!("more than {MAX_VALUES} values")));
                }
                _ => {}
            }
            match name.as_ref() {
                "product" => {
                    let known: Vec<&str> =
                        crate::product::PRODUCTS.iter().map(|p| p.name()).collect();
                    if !known.contains(&v) {
                        return Err(bad(format!(
                            "unknown product {v:?} (expected one of {})",
                            known.join(", ")
                        )));
                    }
                    f.products.push(v.to_string());
                }
                "job_id" => f.job_ids.push(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| bad(format!("{v:?} is not a job id")))?,
                ),
                "region" if is_slug(v, b"-", 64) => f.regions.push(v.to_string()),
                "instance_id" if is_slug(v, b"-", 64) => f.instance_ids.push(v.to_string()),
                "task_type" if is_slug(v, b"_", 40) => f.task_types.push(v.to_string()),
                "status" => f.statuses.push(TaskStatus::from_label(v).ok_or_else(|| {
                    bad(format!(
                        "unknown status {v:?} (expected one of {})",
                        TaskStatus::ALL.map(TaskStatus::as_str).join(", ")
                    ))
                })?),
                "since" => {
                    f.since_text = v.to_string();
                    f.since = Some(parse_since(v).ok_or_else(|| {
                        bad(format!(
                            "{v:?} is neither unix seconds nor an RFC 3339 time"
                        ))
                    })?);
                }
                "limit" => {
                    f.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(format!("{v:?} is not a number from 1 to {MAX_LIMIT}"))
                        })?;
                }
                "region" | "instance_id" | "task_type" => {
                    return Err(bad(format!("{v:?} is not a valid value")));
                }
                _ => return Err(bad("unknown parameter".into())),
            }
        }
        Ok(f)
    }

    /// For a repeatable name: how many values it has so far, and whether `v` is among them.
    fn count_of(&self, name: &str, v: &str) -> Option<(usize, bool)> {
        fn of<T>(list: &[T], same: impl Fn(&T) -> bool) -> (usize, bool) {
            (list.len(), list.iter().any(same))
        }
        Some(match name {
            "product" => of(&self.products, |x| x == v),
            "job_id" => of(&self.job_ids, |x| v.parse() == Ok(*x)),
            "region" => of(&self.regions, |x| x == v),
            "instance_id" => of(&self.instance_ids, |x| x == v),
            "task_type" => of(&self.task_types, |x| x == v),
            "status" => of(&self.statuses, |x| x.as_str() == v),
            _ => return None,
        })
    }

    fn keeps(&self, t: &TaskView<'_>) -> bool {
        // A TDSQL-C unit (`cluster/instance`) matches its cluster id or its instance id.
        let unit_matches = |unit: &str, x: &str| {
            unit == x || unit.split_once('/').is_some_and(|(c, i)| c == x || i == x)
        };
        (self.job_ids.is_empty() || self.job_ids.contains(&t.job_id()))
            && (self.statuses.is_empty() || self.statuses.contains(&t.status()))
            && (self.task_types.is_empty() || self.task_types.iter().any(|x| x == t.task_type()))
            && (self.instance_ids.is_empty()
                || t.instance_ids()
                    .any(|i| self.instance_ids.iter().any(|x| unit_matches(i, x))))
            && self
                .since
                .is_none_or(|s| t.start() >= s || t.end().is_some_and(|e| e >= s))
    }
}

/// One selected task with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Account name.
    pub account: String,
    /// Region.
    pub region: String,
    /// The product (`cdb`, `cynosdb`, `postgres`).
    pub product: &'static str,
    /// The TDSQL-C cluster; `""` for the other products.
    pub cluster_id: String,
    /// The cluster's name, when listed; `""` otherwise.
    pub cluster_name: String,
    /// The task, its `instance_ids` as responders see them (no cluster in them).
    pub task: Task,
    /// Instance names, in the order of `task.instance_ids`; `""` where unknown.
    pub instance_names: Vec<String>,
    /// Progress 0-100, when the API sent one.
    pub progress: Option<u8>,
}

/// The selected tasks, in output order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// At most `limit` rows: newest start first, then job id, then account.
    pub rows: Vec<Row>,
    /// Whether more tasks matched than were returned.
    pub truncated: bool,
}

/// Output order: newest start first, then job id, then the source's position.
type Key = (Reverse<i64>, i64, usize);

struct Candidate {
    key: Key,
    row: Row,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// The tasks of `sources` that `filter` keeps. Locks each store while it scans it.
pub fn select(sources: &[Source], filter: &Filter) -> Selection {
    // A max-heap on the output order: its top is the row that would be shown last, dropped
    // first when more than `limit` match.
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(filter.limit + 1);
    let mut matched = 0usize;
    for (index, source) in sources.iter().enumerate() {
        if !filter.regions.is_empty() && !filter.regions.iter().any(|r| source.id.region == *r) {
            continue;
        }
        if !filter.products.is_empty() && !filter.products.iter().any(|p| p == source.id.product) {
            continue;
        }
        let clusters = crate::product::has_clusters(source.id.product);
        let state = source.state.lock().expect("lock");
        for view in state.store.views() {
            if !filter.keeps(&view) {
                continue;
            }
            matched += 1;
            let key = (Reverse(view.start()), view.job_id(), index);
            if heap.len() >= filter.limit && heap.peek().is_some_and(|worst| key >= worst.key) {
                continue;
            }
            let mut task = view.task();
            let (cluster_id, instance_ids) = crate::domain::cluster_and_instances(
                task.instance_ids.iter().map(String::as_str),
                clusters,
            );
            let (cluster_id, instance_ids): (String, Vec<String>) = (
                cluster_id.to_string(),
                instance_ids.into_iter().map(str::to_string).collect(),
            );
            task.instance_ids = instance_ids;
            let name_of = |id: &str| {
                source
                    .instances
                    .get(id)
                    .map_or_else(String::new, |x| x.name.clone())
            };
            let instance_names = task.instance_ids.iter().map(|i| name_of(i)).collect();
            heap.push(Candidate {
                key,
                row: Row {
                    account: source.id.account.to_string(),
                    region: source.id.region.to_string(),
                    product: source.id.product,
                    cluster_name: name_of(&cluster_id),
                    cluster_id,
                    task,
                    instance_names,
                    progress: view.progress(),
                },
            });
            if heap.len() > filter.limit {
                heap.pop();
            }
        }
    }
    Selection {
        truncated: matched > heap.len(),
        rows: heap.into_sorted_vec().into_iter().map(|c| c.row).collect(),
    }
}

/// A unix time as RFC 3339 with its offset (UTC).
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(
        || t.to_string(),
        |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
    )
}

#[derive(Serialize)]
struct JsonTask<'a> {
    job_id: i64,
    async_request_id: &'a str,
    account: &'a str,
    region: &'a str,
    product: &'a str,
    cluster_id: &'a str,
    instance_ids: &'a [String],
    instance_names: &'a [String],
    task_type: &'a str,
    status: &'static str,
    start_time: String,
    end_time: Option<String>,
    duration_seconds: Option<i64>,
    progress: Option<u8>,
    code: Option<i64>,
    message: &'a str,
}

#[derive(Serialize)]
struct JsonPage<'a> {
    tasks: Vec<JsonTask<'a>>,
    truncated: bool,
}

/// `/api/v1/tasks`: `{"tasks": [...], "truncated": bool}`.
pub fn to_json(selection: &Selection) -> String {
    let tasks = selection
        .rows
        .iter()
        .map(|r| JsonTask {
            job_id: r.task.job_id,
            async_request_id: &r.task.async_request_id,
            account: &r.account,
            region: &r.region,
            product: r.product,
            cluster_id: &r.cluster_id,
            instance_ids: &r.task.instance_ids,
            instance_names: &r.instance_names,
            task_type: &r.task.task_type,
            status: r.task.status.as_str(),
            start_time: rfc3339(r.task.start_time),
            end_time: r.task.end_time.map(rfc3339),
            duration_seconds: r.task.end_time.map(|e| (e - r.task.start_time).max(0)),
            progress: r.progress,
            code: r.task.code,
            message: &r.task.message,
        })
        .collect();
    let page = JsonPage {
        tasks,
        truncated: selection.truncated,
    };
    serde_json::to_string(&page).expect("plain data serializes") + "\n"
}

/// The JSON body of a 400.
pub fn json_error(e: &BadParam) -> String {
    serde_json::json!({"error": e.to_string(), "parameter": e.name}).to_string() + "\n"
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "3 min ago" and the like, for a time `now - t` seconds back.
pub fn ago(now: i64, t: i64) -> String {
    let d = now - t;
    match d {
        i64::MIN..=-1 => "in the future".into(),
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h {} min ago", d / 3600, d % 3600 / 60),
        _ => format!("{} d {} h ago", d / 86_400, d % 86_400 / 3600),
    }
}

/// A duration in seconds, as `1 h 2 min 3 s`.
pub fn span(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) => format!("{m} min {s} s"),
        _ => format!("{h} h {m} min"),
    }
}

/// The page's style sheet; the page's `Content-Security-Policy` allows this text only (by
/// its hash), no script at all.
pub const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:4px 6px;\
text-align:left;vertical-align:top}th{background:#f4f4f4;position:sticky;top:0}\
td.msg{white-space:pre-wrap;word-break:break-word;max-width:40em}\
.failed,.killed{color:#b00020;font-weight:600}.running,.initial,.waiting,.paused{color:#8a5a00}\
.succeed{color:#1b6e20}.removed,.undefined,.unknown{color:#666}\
form{margin:1em 0;display:flex;gap:.6em;flex-wrap:wrap;align-items:end}\
label{display:flex;flex-direction:column;font-size:12px}small{color:#666}";

/// `Content-Security-Policy` of the task page: nothing but its own style sheet and forms to
/// itself.
pub fn content_security_policy() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

fn field(out: &mut String, label: &str, name: &str, value: &str, hint: &str) {
    let _ = write!(
        out,
        "<label>{label}<input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>",
        escape(value)
    );
}

fn choice(out: &mut String, label: &str, name: &str, chosen: &[String], options: &[&str]) {
    let _ = write!(
        out,
        "<label>{label}<select name=\"{name}\"><option value=\"\">any</option>"
    );
    for o in options {
        let selected = if chosen.iter().any(|c| c == o) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{o}</option>");
    }
    out.push_str("</select></label>");
}

fn form(out: &mut String, filter: &Filter) {
    out.push_str("<form method=\"get\" action=\"/tasks\">");
    let products: Vec<&str> = crate::product::PRODUCTS.iter().map(|p| p.name()).collect();
    choice(out, "product", "product", &filter.products, &products);
    let jobs: Vec<String> = filter.job_ids.iter().map(i64::to_string).collect();
    field(out, "job id", "job_id", &jobs.join(" "), "1234");
    field(
        out,
        "region",
        "region",
        &filter.regions.join(" "),
        "ap-guangzhou",
    );
    field(
        out,
        "instance id",
        "instance_id",
        &filter.instance_ids.join(" "),
        "cdb-...",
    );
    let types: Vec<&str> = crate::tencent::model::known_task_type_labels().collect();
    choice(out, "task type", "task_type", &filter.task_types, &types);
    let statuses: Vec<String> = filter
        .statuses
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    choice(
        out,
        "status",
        "status",
        &statuses,
        &TaskStatus::ALL.map(TaskStatus::as_str),
    );
    field(
        out,
        "since",
        "since",
        &filter.since_text,
        "2026-01-01T00:00:00+08:00",
    );
    let _ = write!(
        out,
        "<label>limit<input name=\"limit\" type=\"number\" min=\"1\" max=\"{MAX_LIMIT}\" value=\"{}\"></label>",
        filter.limit
    );
    out.push_str("<button type=\"submit\">Filter</button> <a href=\"/tasks\">clear</a></form>");
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
<h1>{title}</h1><p><a href=\"/\">exporter</a> &middot; <a href=\"/metrics\">metrics</a></p>{body}</body></html>\n"
    )
}

fn row_html(out: &mut String, r: &Row, now: i64) {
    let t = &r.task;
    let mut instances: String = if t.instance_ids.is_empty() {
        if r.cluster_id.is_empty() {
            "<small>none</small>".into()
        } else {
            String::new()
        }
    } else {
        t.instance_ids
            .iter()
            .zip(&r.instance_names)
            .map(|(id, name)| {
                if name.is_empty() {
                    escape(id)
                } else {
                    format!("{}<br><small>{}</small>", escape(id), escape(name))
                }
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    if !r.cluster_id.is_empty() {
        let name = if r.cluster_name.is_empty() {
            String::new()
        } else {
            format!("<br><small>{}</small>", escape(&r.cluster_name))
        };
        let sep = if instances.is_empty() { "" } else { "<br>" };
        instances = format!(
            "<small>cluster</small> {}{name}{sep}{instances}",
            escape(&r.cluster_id)
        );
    }
    let time = |x: i64| format!("<span title=\"{}\">{}</span>", rfc3339(x), ago(now, x));
    let status = t.status.as_str();
    let _ = write!(
        out,
        "<tr><td>{}<br><small>{} {} {}</small></td><td>{instances}</td><td>{}</td><td class=\"{status}\">{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"msg\">{}</td></tr>",
        t.job_id,
        r.product,
        escape(&r.account),
        escape(&r.region),
        escape(&t.task_type),
        time(t.start_time),
        t.end_time
            .map_or_else(|| "<small>running</small>".into(), time),
        t.end_time.map_or_else(
            || format!("<small>{}</small>", span((now - t.start_time).max(0))),
            |e| span((e - t.start_time).max(0))
        ),
        r.progress.map_or_else(String::new, |p| format!("{p}%")),
        t.code.map_or_else(String::new, |c| c.to_string()),
        escape(&t.message),
    );
}

/// `/tasks`: the filter form and the table. Every string from the API is escaped.
pub fn to_html(selection: &Selection, filter: &Filter, now: i64) -> String {
    let mut body = String::new();
    form(&mut body, filter);
    let _ = write!(
        body,
        "<p>{} task{}{}, newest first. <a href=\"/api/v1/tasks\">JSON</a></p>",
        selection.rows.len(),
        if selection.rows.len() == 1 { "" } else { "s" },
        if selection.truncated {
            " (more matched: raise the limit or narrow the filter)"
        } else {
            ""
        }
    );
    body.push_str("<table><thead><tr><th>job id</th><th>cluster / instance</th><th>type</th><th>status</th><th>start</th><th>end</th><th>duration</th><th>progress</th><th>code</th><th>message</th></tr></thead><tbody>");
    for r in &selection.rows {
        row_html(&mut body, r, now);
    }
    body.push_str("</tbody></table>");
    page("Database tasks", &body)
}

/// `/tasks` answering a bad query: the message and a fresh form.
pub fn html_error(e: &BadParam) -> String {
    let mut body = format!("<p class=\"failed\">{}</p>", escape(&e.to_string()));
    form(&mut body, &Filter::default());
    page("Database tasks", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_count_once_and_values_are_bounded() {
        let repeated = vec!["instance_id=cdb-aaaa1111"; 2_400].join("&");
        let f = Filter::parse(Some(&repeated)).unwrap();
        assert_eq!(f.instance_ids, ["cdb-aaaa1111"]);
        let f = Filter::parse(Some("status=failed&status=failed&status=running")).unwrap();
        assert_eq!(f.statuses.len(), 2);
        let many: Vec<String> = (0..=MAX_VALUES)
            .map(|i| format!("instance_id=cdb-{i:08}"))
            .collect();
        let e = Filter::parse(Some(&many.join("&"))).unwrap_err();
        assert_eq!(e.name, "instance_id");
        assert!(e.message.contains("more than 100 values"), "{e}");
        assert!(Filter::parse(Some(&many[..MAX_VALUES].join("&"))).is_ok());
    }

    #[test]
    fn a_query_parses_into_filters_and_bad_ones_name_their_parameter() {
        let f = Filter::parse(Some(
            "region=ap-guangzhou&status=failed&status=running&task_type=import_data&since=1700000000&limit=5&instance_id=",
        ))
        .unwrap();
        assert_eq!(f.regions, ["ap-guangzhou"]);
        assert_eq!(f.statuses, [TaskStatus::Failed, TaskStatus::Running]);
        assert_eq!(f.task_types, ["import_data"]);
        assert_eq!(f.since, Some(1_700_000_000));
        assert_eq!(f.limit, 5);
        assert!(f.instance_ids.is_empty());
        let since = Filter::parse(Some("since=2023-11-14T22:13:20%2B00:00")).unwrap();
        assert_eq!(since.since, Some(1_700_000_000));
        for raw in ["2023-11-15T06:13:20+08:00", "2023-11-14T22:13:20Z"] {
            let f = Filter::parse(Some(&format!("since={raw}"))).unwrap();
            assert_eq!(f.since, Some(1_700_000_000), "{raw}");
        }
        assert_eq!(Filter::parse(None).unwrap(), Filter::default());
        for (q, name) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("status=done", "status"),
            ("since=yesterday", "since"),
            ("task_type=Import%20Data", "task_type"),
            ("instance_id=%3Cscript%3E", "instance_id"),
            ("colour=red", "colour"),
        ] {
            assert_eq!(Filter::parse(Some(q)).unwrap_err().name, name, "{q}");
        }
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn the_policy_allows_exactly_the_style_sheet() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let csp = content_security_policy();
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
        assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
        assert!(csp.starts_with("default-src 'none'"));
        assert!(!csp.contains("script-src"));
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(ago(1000, 990), "10 s ago");
        assert_eq!(ago(10_000, 10_000 - 125), "2 min ago");
        assert_eq!(ago(100_000, 100_000 - 7_260), "2 h 1 min ago");
        assert_eq!(ago(1_000_000, 1_000_000 - 90_000), "1 d 1 h ago");
        assert_eq!(span(3_725), "1 h 2 min");
        assert_eq!(span(65), "1 min 5 s");
    }
}
