//! Sharding (docs/configuration.md#sharding): which instances this process watches and exports.
//!
//! Each instance belongs to exactly one of `total_shards` shards:
//!
//! ```text
//! shard(instance_id) = fnv1a_64(instance_id as UTF-8 bytes) mod total_shards
//! ```
//!
//! FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) is fixed: it must never
//! change between releases, or a rolling upgrade would move instances between shards and count
//! their tasks twice or not at all. Test vectors below pin it. A task with no instance id
//! belongs to shard 0. A task that names several instances counts, in each shard, under that
//! shard's instances only, so the union of the shards' series is what one process exports.

/// This process's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..total`.
    pub index: u32,
    /// How many shards there are (at least 1).
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

/// The 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Shard {
    /// No sharding: one process owns everything.
    pub const ALL: Shard = Shard { index: 0, total: 1 };

    /// The shard an instance id belongs to; `""` (a task with no instance) belongs to shard 0.
    pub fn of(instance_id: &str, total: u32) -> u32 {
        if instance_id.is_empty() || total <= 1 {
            return 0;
        }
        (fnv1a_64(instance_id.as_bytes()) % u64::from(total)) as u32
    }

    /// Whether this shard owns an instance id (`""`: tasks without an instance), or a
    /// TDSQL-C cluster with its instances ([`crate::domain::owner`]).
    pub fn owns(self, instance_id: &str) -> bool {
        Self::of(crate::domain::owner(instance_id), self.total) == self.index
    }
}

/// Why a host name gives no shard, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShardError(pub String);

impl From<String> for ShardError {
    fn from(s: String) -> Self {
        ShardError(s)
    }
}

impl From<&str> for ShardError {
    fn from(s: &str) -> Self {
        ShardError(s.to_string())
    }
}

/// The shard ordinal of a host name: the number after its last `-`, as a Kubernetes
/// StatefulSet names its pods (`cdb-task-exporter-2` is shard 2).
pub fn ordinal_of_hostname(host: &str) -> Result<u32, ShardError> {
    let host = host.trim();
    let digits = host
        .rsplit_once('-')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("host name {host:?} does not end in -<ordinal> (as a StatefulSet pod's does)")
        })?;
    digits
        .parse()
        .map_err(|_| format!("host name {host:?}: ordinal {digits} is too large").into())
}

/// This machine's host name: `HOSTNAME` when set (Kubernetes sets it to the pod name), else the
/// kernel's.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tdsql_c_cluster_and_its_instances_share_one_shard() {
        for total in [2, 3, 7] {
            for n in 0..50 {
                let cluster = format!("cynosdbmysql-c{n:07}");
                let owner = Shard::of(&cluster, total);
                let shard = Shard {
                    index: owner,
                    total,
                };
                assert!(shard.owns(&cluster));
                assert!(shard.owns(&format!("{cluster}/")));
                assert!(shard.owns(&format!("{cluster}/cynosdbmysql-ins-{n:04}")));
            }
        }
    }

    #[test]
    fn the_hash_is_fnv1a_64_and_never_changes() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        // Assignments users may already run with: changing them is a breaking change.
        let ids = [
            "cdb-c1nl9rpv",
            "cdb-7262qp3q",
            "cdb-demo0001",
            "cdb-inst0042",
        ];
        let got: Vec<u32> = ids.iter().map(|i| Shard::of(i, 3)).collect();
        let want: Vec<u32> = ids
            .iter()
            .map(|i| (fnv1a_64(i.as_bytes()) % 3) as u32)
            .collect();
        assert_eq!(got, want);
        assert_eq!(Shard::of("", 3), 0);
        assert_eq!(Shard::of("cdb-anything", 1), 0);
    }

    #[test]
    fn every_instance_has_exactly_one_owner() {
        for n in 0..200 {
            let id = format!("cdb-{n:08x}");
            let owners = (0..4)
                .filter(|i| {
                    Shard {
                        index: *i,
                        total: 4,
                    }
                    .owns(&id)
                })
                .count();
            assert_eq!(owners, 1, "{id}");
        }
        let spread: std::collections::BTreeSet<u32> = (0..200)
            .map(|n| Shard::of(&format!("cdb-{n:08x}"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "ids spread over every shard");
    }

    #[test]
    fn ordinals_come_from_statefulset_pod_names() {
        assert_eq!(ordinal_of_hostname("cdb-task-exporter-2"), Ok(2));
        assert_eq!(ordinal_of_hostname("exporter-0\n"), Ok(0));
        assert!(ordinal_of_hostname("exporter").is_err());
        assert!(ordinal_of_hostname("exporter-").is_err());
        assert!(ordinal_of_hostname("exporter-a1").is_err());
        assert!(ordinal_of_hostname("exporter-99999999999").is_err());
    }
}
