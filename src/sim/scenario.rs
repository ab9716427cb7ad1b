//! Scenarios of the simulated API: tasks whose status changes over time, the item shape to answer
//! in, and faults to inject. Read from TOML (format in the README) or built in code by tests.

use crate::domain::{TASK_TYPES, TaskStatus, task_type_from_code, task_type_from_wire};
use crate::tencent::apitime::ApiZone;
use serde::Deserialize;
use std::time::Duration;

/// Which item shape the simulator answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// `TaskDetail`: string `TaskStatus`/`TaskType`, `InstanceIds` (what the API returns today).
    #[default]
    Current,
    /// The old documented example: integer `Status`/`Type`, `Data[].InstanceId`.
    Documented,
}

/// A task's state at some moment: status, progress, and end offset once terminal.
pub type TaskState = (TaskStatus, i64, Option<i64>);

/// One point of a task's timeline: from `after` seconds past its start on, it has this status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Seconds after the task's start.
    pub after: i64,
    /// Status from then on.
    pub status: TaskStatus,
    /// Progress from then on; `None` lets the simulator derive it.
    pub progress: Option<i64>,
}

/// A simulated task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTask {
    /// The product whose API lists it (`cdb`, `cynosdb`, `postgres`).
    pub product: String,
    /// `JobId` (`ID`, `TaskId`)
    pub job_id: i64,
    /// Task type label (`import_data`, ...); unknown labels are answered as their upper-case form.
    pub task_type: String,
    /// `InstanceIds`; a TDSQL-C task's one unit is `cluster/instance` (`cluster/` for a
    /// cluster-level task).
    pub instances: Vec<String>,
    /// Region the task lives in.
    pub region: String,
    /// Start, in seconds relative to the simulator's start (negative: before it).
    pub start: i64,
    /// Status changes, sorted by `after`; the first applies from the start.
    pub timeline: Vec<Step>,
    /// `Message` once it has failed; a generic one when `None`.
    pub message: Option<String>,
}

impl SimTask {
    /// A task that runs from `start` for `duration` seconds, then ends in `status`; with a
    /// non-terminal `status` it keeps that status for ever.
    pub fn simple(
        job_id: i64,
        task_type: &str,
        instances: &[&str],
        start: i64,
        duration: i64,
        status: TaskStatus,
    ) -> SimTask {
        let timeline = if status.is_terminal() {
            vec![
                Step {
                    after: 0,
                    status: TaskStatus::Running,
                    progress: None,
                },
                Step {
                    after: duration.max(0),
                    status,
                    progress: None,
                },
            ]
        } else {
            vec![Step {
                after: 0,
                status,
                progress: None,
            }]
        };
        SimTask {
            product: "cdb".to_string(),
            job_id,
            task_type: task_type.to_string(),
            instances: instances
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            region: DEFAULT_REGION.to_string(),
            start,
            timeline,
            message: None,
        }
    }

    /// The same task, listed by `product`'s API.
    pub fn of_product(mut self, product: &str) -> SimTask {
        self.product = product.to_string();
        self
    }

    /// The same task with this failure message.
    pub fn with_message(mut self, message: &str) -> SimTask {
        self.message = Some(message.to_string());
        self
    }

    /// The same task with an explicit timeline: `(seconds after start, status, progress)`.
    pub fn with_timeline(mut self, steps: &[(i64, TaskStatus, Option<i64>)]) -> SimTask {
        self.timeline = steps
            .iter()
            .map(|&(after, status, progress)| Step {
                after,
                status,
                progress,
            })
            .collect();
        self
    }

    /// The same task in another region.
    pub fn in_region(mut self, region: &str) -> SimTask {
        self.region = region.to_string();
        self
    }

    /// What the task looks like `t` seconds after the simulator's start: `None` before it starts;
    /// else status, progress and (once terminal) the end offset.
    pub fn state_at(&self, t: i64) -> Option<TaskState> {
        if t < self.start {
            return None;
        }
        let elapsed = t - self.start;
        let idx = self
            .timeline
            .iter()
            .rposition(|s| s.after <= elapsed)
            .unwrap_or(0);
        let step = self.timeline.get(idx)?;
        let end = self
            .timeline
            .iter()
            .find(|s| s.status.is_terminal() && s.after <= elapsed)
            .map(|s| self.start + s.after);
        let progress = step.progress.unwrap_or_else(|| match step.status {
            TaskStatus::Succeed => 100,
            s if s.is_terminal() => 0,
            TaskStatus::Running => {
                // Linear towards the next terminal step, if there is one.
                match self.timeline.iter().find(|s| s.status.is_terminal()) {
                    Some(fin) if fin.after > 0 => (elapsed * 100 / fin.after).clamp(0, 99),
                    _ => 50,
                }
            }
            _ => 0,
        });
        Some((step.status, progress, end))
    }

    /// The `AsyncRequestId` the simulator reports for this task.
    pub fn async_request_id(&self) -> String {
        let h = (self.job_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:08x}-{:08x}-{:08x}",
            h >> 32,
            h & 0xffff_ffff,
            h.rotate_left(16) >> 32,
            h.rotate_left(48) & 0xffff_ffff
        )
    }
}

/// A fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `RequestLimitExceeded`
    RateLimit,
    /// `InternalError`
    InternalError,
    /// HTTP 502 with an HTML body
    #[serde(rename = "http_502")]
    Http502,
    /// A body that is not valid JSON
    Malformed,
    /// A good page that carries one malformed item (added to a short page, in place of the
    /// last item of a full one, so offsets stay those of the API)
    BadItem,
    /// An answer delayed by `slow_delay`
    Slow,
    /// A full page of made-up running tasks whose `TotalCount` always promises more (a server
    /// that never lets paging end)
    EndlessPages,
    /// HTTP 307 to `redirect_to` (the API never redirects)
    Redirect,
    /// An API error whose code and message carry newlines and terminal escapes
    ControlChars,
}

/// Faults on demand: shares of requests, and a schedule by request number.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// Seed of the fault dice.
    pub seed: u64,
    /// Share of requests answered `RequestLimitExceeded`.
    pub rate_limit: f64,
    /// Share answered `InternalError`.
    pub internal_error: f64,
    /// Share answered HTTP 502.
    pub http_502: f64,
    /// Share answered with a body that is not JSON.
    pub malformed: f64,
    /// Share of pages carrying one malformed item.
    pub bad_item: f64,
    /// Share of answers delayed by `slow_delay`.
    pub slow: f64,
    /// Delay of slow answers.
    pub slow_delay: Duration,
    /// Faults by 1-based `DescribeTasks` request number.
    pub schedule: Vec<(u64, Fault)>,
    /// A fault for every request (after the schedule), e.g. [`Fault::EndlessPages`].
    pub always: Option<Fault>,
    /// Where [`Fault::Redirect`] points.
    pub redirect_to: String,
}

/// A simulated instance, as `DescribeDBInstances` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimInstance {
    /// The product whose listing has it (`cdb`; `cynosdb` lists clusters).
    #[serde(default = "cdb")]
    pub product: String,
    /// `InstanceId` (`ClusterId`, `DBInstanceId`)
    pub id: String,
    /// `InstanceName`
    #[serde(default)]
    pub name: String,
    /// Region it lives in.
    #[serde(default = "default_region")]
    pub region: String,
    /// `InstanceType`: 1 primary, 2 DR, 3 read-only.
    #[serde(default = "primary", rename = "type")]
    pub instance_type: i64,
    /// `EngineVersion`
    #[serde(default)]
    pub engine_version: String,
    /// `Zone`
    #[serde(default)]
    pub zone: String,
    /// `TagList` as key -> value.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

fn cdb() -> String {
    "cdb".to_string()
}

fn default_region() -> String {
    DEFAULT_REGION.to_string()
}

fn primary() -> i64 {
    1
}

impl SimInstance {
    /// A primary instance in the default region, MySQL 8.0, in zone 3, without tags.
    pub fn new(id: &str, name: &str) -> SimInstance {
        SimInstance {
            product: cdb(),
            id: id.to_string(),
            name: name.to_string(),
            region: DEFAULT_REGION.to_string(),
            instance_type: 1,
            engine_version: "8.0".into(),
            zone: format!("{DEFAULT_REGION}-3"),
            tags: Default::default(),
        }
    }

    /// The same instance with this tag.
    pub fn tag(mut self, key: &str, value: &str) -> SimInstance {
        self.tags.insert(key.to_string(), value.to_string());
        self
    }
}

/// What is wrong with a scenario file, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

impl From<String> for ScenarioError {
    fn from(s: String) -> Self {
        ScenarioError(s)
    }
}

impl From<&str> for ScenarioError {
    fn from(s: &str) -> Self {
        ScenarioError(s.to_string())
    }
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scenario {
    /// Item shape of answers.
    pub shape: Shape,
    /// Zone of the naive times in requests and answers.
    pub zone: Option<ApiZone>,
    /// Tasks.
    pub tasks: Vec<SimTask>,
    /// Faults.
    pub faults: Faults,
    /// What `DescribeDBInstances` lists (nothing when empty).
    pub instances: Vec<SimInstance>,
    /// An error code `DescribeDBInstances` answers with instead (e.g.
    /// `UnauthorizedOperation`, as for a key without that permission).
    pub instances_error: Option<String>,
}

/// Region of tasks that do not name one.
pub const DEFAULT_REGION: &str = "ap-guangzhou";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    shape: Shape,
    zone: Option<String>,
    region: Option<String>,
    #[serde(default)]
    tasks: Vec<RawTask>,
    faults: Option<RawFaults>,
    #[serde(default)]
    instances: Vec<SimInstance>,
    instances_error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    product: Option<String>,
    job_id: Option<i64>,
    #[serde(rename = "type")]
    task_type: toml::Value,
    #[serde(default)]
    instances: Vec<String>,
    region: Option<String>,
    start: String,
    status: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    timeline: Vec<RawStep>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    after: String,
    status: String,
    progress: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    rate_limit: f64,
    #[serde(default)]
    internal_error: f64,
    #[serde(default)]
    http_502: f64,
    #[serde(default)]
    malformed: f64,
    #[serde(default)]
    bad_item: f64,
    #[serde(default)]
    slow: f64,
    slow_delay: Option<String>,
    #[serde(default)]
    schedule: Vec<RawScheduled>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduled {
    request: u64,
    fault: Fault,
}

impl RawFaults {
    fn into_faults(self) -> Result<Faults, ScenarioError> {
        let f = self;
        Ok(Faults {
            seed: f.seed,
            rate_limit: f.rate_limit,
            internal_error: f.internal_error,
            http_502: f.http_502,
            malformed: f.malformed,
            bad_item: f.bad_item,
            slow: f.slow,
            slow_delay: match f.slow_delay {
                Some(d) => humantime::parse_duration(&d).map_err(|e| format!("slow_delay: {e}"))?,
                None => Duration::from_secs(2),
            },
            schedule: f
                .schedule
                .into_iter()
                .map(|s| (s.request, s.fault))
                .collect(),
            always: None,
            redirect_to: String::new(),
        })
    }
}

/// A signed duration: `"-2h"`, `"+30s"`, `"0s"`.
fn signed_seconds(s: &str) -> Result<i64, ScenarioError> {
    let s = s.trim();
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let d = humantime::parse_duration(rest.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    let secs = d.as_secs() as i64;
    Ok(if neg { -secs } else { secs })
}

/// A status by its CDB name or label; for the products whose statuses are open (`open`), any
/// other value is kept as its slug, as the exporter keeps it.
fn parse_status(s: &str, open: bool) -> Result<TaskStatus, ScenarioError> {
    let st = TaskStatus::from_wire(s);
    let st = if st == TaskStatus::Unknown {
        TaskStatus::from_label(&s.to_ascii_lowercase()).unwrap_or(TaskStatus::Unknown)
    } else {
        st
    };
    match st {
        TaskStatus::Unknown if open => Ok(TaskStatus::open(s)),
        TaskStatus::Unknown => Err(format!("unknown status {s:?}").into()),
        st => Ok(st),
    }
}

impl Scenario {
    /// Parses a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let zone = raw.zone.map(|z| z.parse::<ApiZone>()).transpose()?;
        let default_region = raw.region.unwrap_or_else(|| DEFAULT_REGION.to_string());
        let mut tasks = Vec::new();
        for (i, t) in raw.tasks.into_iter().enumerate() {
            let ctx = |e: ScenarioError| ScenarioError(format!("tasks[{i}]: {}", e.0));
            let product = t.product.unwrap_or_else(cdb);
            if crate::product::named(&product).is_none() {
                return Err(ctx(format!("unknown product {product:?}").into()));
            }
            let task_type = match &t.task_type {
                toml::Value::Integer(code) => task_type_from_code(*code).to_string(),
                toml::Value::String(s) if product != "cdb" => crate::domain::camel_task_type(s),
                toml::Value::String(s) => task_type_from_wire(s),
                other => {
                    return Err(ctx(
                        format!("type must be a string or code, not {other}").into()
                    ));
                }
            };
            let start = signed_seconds(&t.start).map_err(|e| ctx(format!("start {e}").into()))?;
            let timeline = if t.timeline.is_empty() {
                let status =
                    parse_status(t.status.as_deref().unwrap_or("SUCCEED"), product != "cdb")
                        .map_err(ctx)?;
                let duration = signed_seconds(t.duration.as_deref().unwrap_or("60s"))
                    .map_err(|e| ctx(format!("duration {e}").into()))?;
                SimTask::simple(0, "", &[], 0, duration, status).timeline
            } else {
                if t.status.is_some() || t.duration.is_some() {
                    return Err(ctx("give either status/duration or a timeline".into()));
                }
                let mut steps = Vec::new();
                for s in &t.timeline {
                    steps.push(Step {
                        after: signed_seconds(&s.after)
                            .map_err(|e| ctx(format!("after {e}").into()))?,
                        status: parse_status(&s.status, product != "cdb").map_err(ctx)?,
                        progress: s.progress,
                    });
                }
                steps.sort_by_key(|s| s.after);
                steps
            };
            tasks.push(SimTask {
                product,
                job_id: t.job_id.unwrap_or(1000 + i as i64),
                task_type,
                instances: t.instances,
                region: t.region.unwrap_or_else(|| default_region.clone()),
                start,
                timeline,
                message: t.message,
            });
        }
        let faults = raw
            .faults
            .map(RawFaults::into_faults)
            .transpose()?
            .unwrap_or_default();
        Ok(Scenario {
            shape: raw.shape,
            zone,
            tasks,
            instances: raw.instances,
            instances_error: raw.instances_error,
            faults,
        })
    }

    /// The built-in scenario of the demo: four instances in ap-guangzhou, a task every minute or
    /// two from a day before the simulator started to a day after, every task type, mostly
    /// successes with some failures and kills, long upgrades and imports, and a DR switch over two
    /// instances now and then.
    pub fn demo() -> Scenario {
        let instances = [
            "cdb-demo0001",
            "cdb-demo0002",
            "cdb-demo0003",
            "cdb-demo0004",
        ];
        let mut rng = fastrand::Rng::with_seed(20_171_227);
        let mut tasks = demo_cdb_tasks(&instances, &mut rng);
        tasks.extend(demo_open_tasks(
            "cynosdb",
            &[
                "cynosdbmysql-demo0001/cynosdbmysql-ins-demo01",
                "cynosdbmysql-demo0001/",
                "cynosdbmysql-demo0002/cynosdbmysql-ins-demo02",
            ],
            &[
                "task_create_cluster",
                "task_auto_backup",
                "task_modify_instance_param",
                "task_upgrade_cynos_version",
                "task_modify_proxy_rw_split",
            ],
            500_000,
            &mut rng,
        ));
        tasks.extend(demo_open_tasks(
            "postgres",
            &["postgres-demo0001", "postgres-demo0002"],
            &[
                "restore_database",
                "restart_instance",
                "modify_parameters",
                "upgrade_db_kernel_version",
            ],
            700_000,
            &mut rng,
        ));
        sort_by_start(&mut tasks);
        let mut sim_instances = demo_instances(&instances);
        sim_instances.extend(demo_open_instances());
        Scenario {
            shape: Shape::Current,
            zone: None,
            tasks,
            instances: sim_instances,
            instances_error: None,
            faults: Faults {
                seed: 7,
                rate_limit: 0.02,
                ..Faults::default()
            },
        }
    }
}

/// The demo's CDB tasks: every type, every minute or two over two days, on `instances`.
fn demo_cdb_tasks(instances: &[&str; 4], rng: &mut fastrand::Rng) -> Vec<SimTask> {
    let mut tasks = Vec::new();
    let mut t = -86_400;
    let mut job_id = 300_000;
    while t < 86_400 {
        t += rng.i64(30..150);
        job_id += rng.i64(1..4);
        let (code, _, label) = TASK_TYPES[rng.usize(..TASK_TYPES.len())];
        let duration = match code {
            3 => rng.i64(60..1800),       // imports
            9 | 11 => rng.i64(600..7200), // upgrades
            1 | 10 => rng.i64(120..1200), // rollbacks
            _ => rng.i64(5..180),
        };
        let roll = rng.f64();
        let status = match roll {
            r if r < 0.80 => TaskStatus::Succeed,
            r if r < 0.90 => TaskStatus::Failed,
            r if r < 0.95 => TaskStatus::Killed,
            r if r < 0.97 => TaskStatus::Removed,
            _ => TaskStatus::Running, // never ends: long-running stragglers
        };
        let inst = instances[rng.usize(..instances.len())];
        let mut task = if code == 13 {
            let other = instances
                [(rng.usize(..3) + 1 + instances.iter().position(|i| *i == inst).unwrap_or(0)) % 4];
            SimTask::simple(job_id, label, &[inst, other], t, duration, status)
        } else {
            SimTask::simple(job_id, label, &[inst], t, duration, status)
        };
        if rng.f64() < 0.1 {
            // Some tasks queue first.
            let wait = rng.i64(5..60);
            for s in &mut task.timeline {
                s.after += wait;
            }
            task.timeline.insert(
                0,
                Step {
                    after: 0,
                    status: TaskStatus::Waiting,
                    progress: Some(0),
                },
            );
        }
        tasks.push(task);
    }
    tasks
}

/// Tasks of a product whose statuses are open (TDSQL-C, PostgreSQL): one every 5 to 25
/// minutes over the demo's two days, on `units`, mostly successes, some failures and waits,
/// and for TDSQL-C now and then a status the mapping does not know.
fn demo_open_tasks(
    product: &str,
    units: &[&str],
    types: &[&str],
    first_job: i64,
    rng: &mut fastrand::Rng,
) -> Vec<SimTask> {
    let mut tasks = Vec::new();
    let (mut t, mut job_id) = (-86_400, first_job);
    while t < 86_400 {
        t += rng.i64(300..1500);
        job_id += rng.i64(1..4);
        let status = match rng.f64() {
            r if r < 0.84 => TaskStatus::Succeed,
            r if r < 0.94 => TaskStatus::Failed,
            r if r < 0.97 => TaskStatus::Running,
            _ if product == "cynosdb" => TaskStatus::open("isolating"),
            _ => TaskStatus::Paused,
        };
        let unit = units[rng.usize(..units.len())];
        let ty = types[rng.usize(..types.len())];
        let task = SimTask::simple(job_id, ty, &[unit], t, rng.i64(30..1800), status);
        tasks.push(task.of_product(product));
    }
    tasks
}

/// The demo's TDSQL-C clusters and PostgreSQL instances, as their listings give them.
fn demo_open_instances() -> Vec<SimInstance> {
    [
        ("cynosdb", "cynosdbmysql-demo0001", "catalog", "8.0"),
        ("cynosdb", "cynosdbmysql-demo0002", "search", "5.7"),
        ("postgres", "postgres-demo0001", "ledger", "15.4"),
        ("postgres", "postgres-demo0002", "reports", "14.9"),
    ]
    .into_iter()
    .map(|(product, id, name, version)| SimInstance {
        product: product.into(),
        engine_version: version.into(),
        ..SimInstance::new(id, name)
            .tag("team", "platform")
            .tag("env", "prod")
    })
    .collect()
}

/// Sorts tasks by start, the order scenarios give them in.
fn sort_by_start(tasks: &mut [SimTask]) {
    tasks.sort_by_key(|t| (t.start, t.job_id));
}

/// The demo's instances, as `DescribeDBInstances` lists them: two pairs of a primary and its
/// read-only or DR replica, with team and environment tags.
fn demo_instances(ids: &[&str; 4]) -> Vec<SimInstance> {
    let names = ["orders", "orders-ro", "billing", "billing-dr"];
    ids.iter()
        .zip(names)
        .enumerate()
        .map(|(i, (id, name))| SimInstance {
            instance_type: [1, 3, 1, 2][i],
            zone: format!("{DEFAULT_REGION}-{}", 3 + i % 2),
            ..SimInstance::new(id, name)
                .tag("team", if i < 2 { "shop" } else { "finance" })
                .tag("env", "prod")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_drives_status_progress_and_end() {
        let t = SimTask::simple(
            1,
            "import_data",
            &["cdb-aaaa1111"],
            -10,
            20,
            TaskStatus::Failed,
        );
        assert_eq!(t.state_at(-11), None);
        assert_eq!(t.state_at(-10), Some((TaskStatus::Running, 0, None)));
        assert_eq!(t.state_at(0), Some((TaskStatus::Running, 50, None)));
        assert_eq!(t.state_at(10), Some((TaskStatus::Failed, 0, Some(10))));
        assert_eq!(t.state_at(1000), Some((TaskStatus::Failed, 0, Some(10))));
        let forever = SimTask::simple(2, "upgrade_master", &[], 0, 0, TaskStatus::Running);
        assert_eq!(forever.state_at(99_999).unwrap().2, None);
    }

    #[test]
    fn parses_the_documented_format() {
        let s = Scenario::from_toml(
            r#"
shape = "documented"
zone = "+08:00"
[[tasks]]
job_id = 7
type = "IMPORT DATA"
instances = ["cdb-aaaa1111"]
start = "-5m"
status = "FAILED"
duration = "20s"
[[tasks]]
type = 11
start = "+1m"
[[tasks.timeline]]
after = "0s"
status = "INITIAL"
[[tasks.timeline]]
after = "10s"
status = "running"
progress = 30
[faults]
rate_limit = 0.3
slow_delay = "1s"
schedule = [{ request = 2, fault = "http_502" }]
"#,
        )
        .unwrap();
        assert_eq!(s.shape, Shape::Documented);
        assert_eq!(s.tasks[0].job_id, 7);
        assert_eq!(s.tasks[0].task_type, "import_data");
        assert_eq!(s.tasks[0].start, -300);
        assert_eq!(s.tasks[1].job_id, 1001);
        assert_eq!(s.tasks[1].task_type, "upgrade_master");
        assert_eq!(
            s.tasks[1].state_at(75),
            Some((TaskStatus::Running, 30, None))
        );
        assert_eq!(s.faults.schedule, vec![(2, Fault::Http502)]);
        assert_eq!(s.faults.slow_delay, Duration::from_secs(1));
        assert!(Scenario::from_toml("[[tasks]]\ntype=1\nstart=\"x\"").is_err());
        assert!(Scenario::from_toml("nonsense = 1").is_err());
    }

    #[test]
    fn demo_is_lively() {
        let s = Scenario::demo();
        assert!(s.tasks.len() > 1000, "{}", s.tasks.len());
        for (_, _, label) in TASK_TYPES {
            assert!(s.tasks.iter().any(|t| t.task_type == label), "{label}");
        }
        let at_start: Vec<_> = s.tasks.iter().filter_map(|t| t.state_at(0)).collect();
        assert!(at_start.iter().any(|(st, _, _)| *st == TaskStatus::Failed));
        assert!(at_start.iter().any(|(st, _, _)| *st == TaskStatus::Running));
        assert!(s.tasks.iter().any(|t| t.instances.len() == 2));
    }
}
