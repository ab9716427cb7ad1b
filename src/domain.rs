//! The exporter's own vocabulary, shared by every layer: a target, a task and its status,
//! task types and their label values, an instance. The cloud API's wire shapes
//! ([`crate::tencent::model`]) decode into these; the store, the metrics, the task pages and
//! the state file speak them.

use serde::{Deserialize, Serialize};

/// A string-backed name with its own type, so that an account name, a region and an instance
/// id cannot be passed one for another. Reads as `&str` (`Deref`), prints as itself, compares
/// with strings.
macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(String);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name!(
    /// An account's `name` in the config: the `account` label of the self-metrics.
    AccountName
);
name!(
    /// A region, e.g. `ap-guangzhou`.
    Region
);
name!(
    /// A CDB instance id, e.g. `cdb-c1nl9rpv`.
    InstanceId
);

/// The id a series unit belongs to: a TDSQL-C task counts under `cluster/instance` (or
/// `cluster/` for a cluster-level task), owned by its cluster; every other unit is its own
/// owner. Config lists, sharding and discovery speak owners.
pub fn owner(unit: &str) -> &str {
    unit.split_once('/').map_or(unit, |(cluster, _)| cluster)
}

/// A task's units as responders see them: its `cluster_id` (`""` outside TDSQL-C) and its
/// instance ids (no `""`). `clusters`: whether the product has clusters.
pub fn cluster_and_instances<'a>(
    units: impl IntoIterator<Item = &'a str>,
    clusters: bool,
) -> (&'a str, Vec<&'a str>) {
    let mut cluster = "";
    let mut instances = Vec::new();
    for unit in units {
        let (c, i) = if clusters {
            unit.split_once('/').unwrap_or((unit, ""))
        } else {
            ("", unit)
        };
        if cluster.is_empty() {
            cluster = c;
        }
        if !i.is_empty() && !instances.contains(&i) {
            instances.push(i);
        }
    }
    (cluster, instances)
}

/// Identity of a target: an account, one of its regions, and the product watched there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId {
    /// Account name.
    pub account: AccountName,
    /// Region.
    pub region: Region,
    /// The product's name (`cdb`, `cynosdb`, `postgres`): the `product` label.
    pub product: &'static str,
}

impl TargetId {
    /// A target of `product`.
    pub fn new(
        account: impl Into<AccountName>,
        region: impl Into<Region>,
        product: &'static str,
    ) -> Self {
        TargetId {
            account: account.into(),
            region: region.into(),
            product,
        }
    }

    /// A CDB target.
    pub fn cdb(account: impl Into<AccountName>, region: impl Into<Region>) -> Self {
        Self::new(account, region, "cdb")
    }
}

impl std::fmt::Display for TargetId {
    /// `account/region` for CDB (the key of the first releases' state files), and
    /// `account/region/product` for the other products.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account, self.region)?;
        if self.product != "cdb" {
            write!(f, "/{}", self.product)?;
        }
        Ok(())
    }
}

/// The 12 known task types: request code, response string, label value.
pub const TASK_TYPES: [(i64, &str, &str); 12] = [
    (1, "ROLLBACK", "rollback"),
    (2, "SQL OPERATION", "sql_operation"),
    (3, "IMPORT DATA", "import_data"),
    (5, "MODIFY PARAM", "modify_param"),
    (6, "INITIAL", "initial"),
    (7, "REBOOT", "reboot"),
    (8, "OPEN GTID", "open_gtid"),
    (9, "UPGRADE RO", "upgrade_ro"),
    (10, "BATCH ROLLBACK", "batch_rollback"),
    (11, "UPGRADE MASTER", "upgrade_master"),
    (12, "DROP TABLES", "drop_tables"),
    (13, "SWITCH DR TO MASTER", "switch_dr_to_master"),
];

/// The label values of the 12 known task types.
pub fn known_task_type_labels() -> impl Iterator<Item = &'static str> {
    TASK_TYPES.iter().map(|t| t.2)
}

/// A task's status, with the label values of docs/metrics.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatus {
    /// `UNDEFINED` (-1)
    Undefined,
    /// `INITIAL` (0)
    Initial,
    /// `RUNNING` (1)
    Running,
    /// `SUCCEED` (2)
    Succeed,
    /// `FAILED` (3)
    Failed,
    /// `KILLED` (4)
    Killed,
    /// `REMOVED` (5)
    Removed,
    /// `PAUSED` (6)
    Paused,
    /// `WAITING` (response only; no request code)
    Waiting,
    /// anything else
    Unknown,
    /// A status of a product that documents none (TDSQL-C), outside the mapping: its slug,
    /// by its place in [`open_statuses`]. Not terminal.
    Other(u8),
}

/// The statuses outside the mappings, by slug, in order of first sight (process-wide, at most
/// [`MAX_OPEN_STATUSES`]; later ones are `unknown`).
fn open_statuses() -> &'static std::sync::Mutex<Vec<&'static str>> {
    static OPEN: std::sync::OnceLock<std::sync::Mutex<Vec<&'static str>>> =
        std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The most distinct statuses outside the mappings kept as label values of their own.
pub const MAX_OPEN_STATUSES: usize = 64;

impl Serialize for TaskStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let label = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(TaskStatus::from_label(&label).unwrap_or_else(|| TaskStatus::open(&label)))
    }
}

impl TaskStatus {
    /// Every status, in label order.
    pub const ALL: [TaskStatus; 10] = [
        TaskStatus::Undefined,
        TaskStatus::Initial,
        TaskStatus::Running,
        TaskStatus::Succeed,
        TaskStatus::Failed,
        TaskStatus::Killed,
        TaskStatus::Removed,
        TaskStatus::Paused,
        TaskStatus::Waiting,
        TaskStatus::Unknown,
    ];

    /// The four terminal statuses.
    pub const TERMINAL: [TaskStatus; 4] = [
        TaskStatus::Succeed,
        TaskStatus::Failed,
        TaskStatus::Killed,
        TaskStatus::Removed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Undefined => "undefined",
            TaskStatus::Initial => "initial",
            TaskStatus::Running => "running",
            TaskStatus::Succeed => "succeed",
            TaskStatus::Failed => "failed",
            TaskStatus::Killed => "killed",
            TaskStatus::Removed => "removed",
            TaskStatus::Paused => "paused",
            TaskStatus::Waiting => "waiting",
            TaskStatus::Unknown => "unknown",
            TaskStatus::Other(ix) => open_statuses()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(ix as usize)
                .copied()
                .unwrap_or("unknown"),
        }
    }

    /// A status outside the mappings, by its raw value: its slug (as a task type's), kept
    /// as a label value of its own (logged at warn level the first time), or `unknown` once
    /// [`MAX_OPEN_STATUSES`] are.
    pub fn open(raw: &str) -> Self {
        let slug = slug(raw);
        if let Some(known) = Self::ALL.into_iter().find(|s| s.as_str() == slug) {
            return known;
        }
        let mut open = open_statuses()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ix) = open.iter().position(|s| *s == slug) {
            return TaskStatus::Other(ix as u8);
        }
        if open.len() == MAX_OPEN_STATUSES {
            return TaskStatus::Unknown;
        }
        tracing::warn!(
            status = %slug,
            "a task status the mapping does not know: kept as its own label value, not terminal"
        );
        open.push(Box::leak(slug.into_boxed_str()));
        TaskStatus::Other((open.len() - 1) as u8)
    }

    /// One byte for the status (the task store keeps it so): the known ones by their place
    /// in [`TaskStatus::ALL`], the open ones after them.
    pub fn pack(self) -> u8 {
        match self {
            TaskStatus::Other(ix) => Self::ALL.len() as u8 + ix,
            known => Self::ALL
                .iter()
                .position(|s| *s == known)
                .expect("every other status is in ALL") as u8,
        }
    }

    /// The inverse of [`TaskStatus::pack`].
    pub fn unpack(b: u8) -> Self {
        Self::ALL
            .get(b as usize)
            .copied()
            .unwrap_or_else(|| TaskStatus::Other(b - Self::ALL.len() as u8))
    }

    /// The response string (`SUCCEED`, ...); `UNKNOWN` for [`TaskStatus::Unknown`].
    pub fn wire(self) -> &'static str {
        match self {
            TaskStatus::Undefined => "UNDEFINED",
            TaskStatus::Initial => "INITIAL",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Succeed => "SUCCEED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Killed => "KILLED",
            TaskStatus::Removed => "REMOVED",
            TaskStatus::Paused => "PAUSED",
            TaskStatus::Waiting => "WAITING",
            TaskStatus::Unknown | TaskStatus::Other(_) => "UNKNOWN",
        }
    }

    /// The request filter code; `None` for `WAITING` (it cannot be filtered on) and unknown.
    pub fn code(self) -> Option<i64> {
        match self {
            TaskStatus::Undefined => Some(-1),
            TaskStatus::Initial => Some(0),
            TaskStatus::Running => Some(1),
            TaskStatus::Succeed => Some(2),
            TaskStatus::Failed => Some(3),
            TaskStatus::Killed => Some(4),
            TaskStatus::Removed => Some(5),
            TaskStatus::Paused => Some(6),
            TaskStatus::Waiting | TaskStatus::Unknown | TaskStatus::Other(_) => None,
        }
    }

    /// Maps an integer code (old response shape, request codes).
    pub fn from_code(code: i64) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| s.code() == Some(code))
            .unwrap_or(TaskStatus::Unknown)
    }

    /// Maps a response string, case-insensitively.
    pub fn from_wire(s: &str) -> Self {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|st| st.wire().eq_ignore_ascii_case(s))
            .unwrap_or(TaskStatus::Unknown)
    }

    /// Parses a label value (the inverse of [`TaskStatus::as_str`]), open ones included.
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .or_else(|| {
                open_statuses()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .position(|o| *o == s)
                    .map(|ix| TaskStatus::Other(ix as u8))
            })
    }

    /// Whether the task is over (`succeed`, `failed`, `killed`, `removed`).
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

/// The label value of a response `TaskType` string: known names map to their slug, an unknown
/// string to its sanitized slug (`[a-z0-9_]`, at most 40 chars).
pub fn task_type_from_wire(s: &str) -> String {
    let upper = s.trim();
    if let Some(t) = TASK_TYPES.iter().find(|t| t.1.eq_ignore_ascii_case(upper)) {
        return t.2.to_string();
    }
    slug(upper)
}

/// The label value of a camelCase `TaskType` (TDSQL-C, PostgreSQL): the words split at each
/// upper-case letter that follows a lower-case one or a digit, then [`slug`]:
/// `taskCreateCluster` -> `task_create_cluster`, `RestoreDatabase` -> `restore_database`.
pub fn camel_task_type(s: &str) -> String {
    let mut spaced = String::with_capacity(s.len() + 8);
    let mut prev: Option<char> = None;
    for c in s.trim().chars() {
        if c.is_ascii_uppercase()
            && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            spaced.push('_');
        }
        spaced.push(c);
        prev = Some(c);
    }
    slug(&spaced)
}

/// `s` as a label value: lower-cased, every run of characters outside `[a-z0-9]` one `_`,
/// no `_` at either end, at most 40 characters; `unknown` when nothing is left.
pub fn slug(s: &str) -> String {
    let mut slug = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let slug: String = slug.trim_matches('_').chars().take(40).collect();
    if slug.is_empty() {
        "unknown".to_string()
    } else {
        slug
    }
}

/// The most task types outside [`TASK_TYPES`] a target keeps as label values of their own at
/// once; further ones are folded into [`OTHER_TASK_TYPE`].
pub const MAX_OTHER_TASK_TYPES: usize = 32;

/// The label value of task types past [`MAX_OTHER_TASK_TYPES`].
pub const OTHER_TASK_TYPE: &str = "other";

/// Which unknown task types one target admits as label values: a new type from the API is
/// admitted while fewer than [`MAX_OTHER_TASK_TYPES`] are; past that it is folded into
/// `other` (and the caller counts it), so a buggy or hostile API cannot create series without
/// bound. A type leaves when no task of it is left ([`TypeGate::retain`]), making room. Pure.
#[derive(Debug, Clone, Default)]
pub struct TypeGate {
    admitted: std::collections::BTreeSet<String>,
}

impl TypeGate {
    /// The label value to use for `task_type`, and whether it was folded into `other`.
    pub fn admit(&mut self, task_type: &str) -> (String, bool) {
        let known = TASK_TYPES.iter().any(|t| t.2 == task_type)
            || task_type == "unknown"
            || task_type == OTHER_TASK_TYPE;
        if known || self.admitted.contains(task_type) {
            return (task_type.to_string(), false);
        }
        if self.admitted.len() < MAX_OTHER_TASK_TYPES {
            self.admitted.insert(task_type.to_string());
            return (task_type.to_string(), false);
        }
        (OTHER_TASK_TYPE.to_string(), true)
    }

    /// Keeps the admitted types that still have tasks (`present`).
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        self.admitted.retain(|t| present(t));
    }

    /// The types admitted now.
    pub fn admitted(&self) -> impl Iterator<Item = &str> {
        self.admitted.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod type_gate_tests {
    use super::*;

    #[test]
    fn unknown_task_types_are_bounded_and_leave_with_their_tasks() {
        let mut gate = TypeGate::default();
        assert_eq!(gate.admit("import_data"), ("import_data".into(), false));
        for n in 0..MAX_OTHER_TASK_TYPES {
            assert_eq!(gate.admit(&format!("new_{n}")), (format!("new_{n}"), false));
        }
        assert_eq!(gate.admit("one_too_many"), ("other".into(), true));
        assert_eq!(
            gate.admit("new_0"),
            ("new_0".into(), false),
            "admitted stays"
        );
        assert_eq!(
            gate.admit("reboot"),
            ("reboot".into(), false),
            "known never folds"
        );
        // new_0 has no task left: its place goes to the next new type.
        gate.retain(|t| t != "new_0");
        assert_eq!(gate.admit("one_too_many"), ("one_too_many".into(), false));
        assert_eq!(gate.admitted().count(), MAX_OTHER_TASK_TYPES);
    }
}

/// The label value of an integer task type code; `unknown` for codes outside the table.
pub fn task_type_from_code(code: i64) -> &'static str {
    TASK_TYPES
        .iter()
        .find(|t| t.0 == code)
        .map_or("unknown", |t| t.2)
}

/// The request code and response string of a task type label, if it is a known type.
pub fn task_type_wire(label: &str) -> Option<(i64, &'static str)> {
    TASK_TYPES.iter().find(|t| t.2 == label).map(|t| (t.0, t.1))
}

/// One task, decoded from either response shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `JobId`, the identity of a task.
    pub job_id: i64,
    /// Label value of the task type.
    pub task_type: String,
    /// Status.
    pub status: TaskStatus,
    /// `StartTime`, unix seconds.
    pub start_time: i64,
    /// `EndTime`, unix seconds; `None` while unfinished (or when the API gives no usable value).
    pub end_time: Option<i64>,
    /// `Progress`, 0-100.
    pub progress: i64,
    /// Instances the task concerns; may be empty.
    pub instance_ids: Vec<String>,
    /// `AsyncRequestId`; empty when the API sent none.
    #[serde(default)]
    pub async_request_id: String,
    /// `Code`, the task's result code, when the API sent one.
    #[serde(default)]
    pub code: Option<i64>,
    /// `Message`, as the API sent it; empty when none.
    #[serde(default)]
    pub message: String,
}

/// A target's instances as last listed, by id.
pub type Instances = std::collections::BTreeMap<String, Instance>;

/// One instance from `DescribeDBInstances` (docs/metrics.md#instance-metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    /// `InstanceId`
    pub instance_id: String,
    /// `InstanceName`
    pub name: String,
    /// `master`, `ro` or `dr` (from `InstanceType` 1, 2, 3); `unknown` otherwise.
    pub instance_type: &'static str,
    /// `EngineVersion`, e.g. `8.0`.
    pub engine_version: String,
    /// `Zone`, e.g. `ap-guangzhou-3`.
    pub zone: String,
    /// `TagList` as (key, value).
    pub tags: Vec<(String, String)>,
}

#[cfg(test)]
mod product_vocabulary_tests {
    use super::*;

    #[test]
    fn camel_case_types_split_into_words() {
        assert_eq!(camel_task_type("taskCreateCluster"), "task_create_cluster");
        assert_eq!(camel_task_type("RestoreDatabase"), "restore_database");
        assert_eq!(
            camel_task_type("UpgradeDBKernel2Version"),
            "upgrade_dbkernel2_version"
        );
        assert_eq!(camel_task_type("  "), "unknown");
        assert_eq!(camel_task_type(&"aB".repeat(40)).len(), 40);
    }

    #[test]
    fn statuses_pack_into_one_byte_and_back() {
        let open = TaskStatus::open("Isolating");
        assert_eq!(open.as_str(), "isolating");
        assert_eq!(TaskStatus::open("ISOLATING"), open, "one value per slug");
        assert_eq!(
            TaskStatus::open("Succeed"),
            TaskStatus::Succeed,
            "a known label stays known"
        );
        for st in TaskStatus::ALL.into_iter().chain([open]) {
            assert_eq!(TaskStatus::unpack(st.pack()), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(serde_json::from_str::<TaskStatus>(&json).unwrap(), st);
        }
        assert!(!open.is_terminal());
        assert_eq!(open.code(), None);
    }

    #[test]
    fn units_read_as_cluster_and_instances() {
        assert_eq!(owner("cynosdbmysql-a/cynosdbmysql-ins-b"), "cynosdbmysql-a");
        assert_eq!(owner("cdb-aaaa1111"), "cdb-aaaa1111");
        assert_eq!(
            cluster_and_instances(["cynosdbmysql-a/cynosdbmysql-ins-b"], true),
            ("cynosdbmysql-a", vec!["cynosdbmysql-ins-b"])
        );
        assert_eq!(
            cluster_and_instances(["cynosdbmysql-a/"], true),
            ("cynosdbmysql-a", vec![])
        );
        assert_eq!(
            cluster_and_instances(["cdb-a", "cdb-b"], false),
            ("", vec!["cdb-a", "cdb-b"])
        );
        assert_eq!(
            TargetId::cdb("a", "ap-guangzhou").to_string(),
            "a/ap-guangzhou"
        );
        assert_eq!(
            TargetId::new("a", "ap-guangzhou", "postgres").to_string(),
            "a/ap-guangzhou/postgres"
        );
    }
}
