//! The task families and the instance info family, written from the targets' published
//! snapshots into any [`Exposition`]; and the `prometheus` crate's gathered families (the
//! self-metrics, the process collector) through the same writer.

use super::book::Inventory;
use super::series::{Counted, Key3, Series};
use super::text::{Exemplar, Exposition, Kind, Num};
use super::{FROM_POLL, TASK_DURATION_BUCKETS};
use crate::domain::Instance;
use crate::product::{PRODUCTS, Product};
use prometheus::proto::{MetricFamily, MetricType};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// The task family names of one product: `<prefix>_tasks`, ...
struct Names {
    tasks: String,
    finished: String,
    duration: String,
    last_finished: String,
    oldest: String,
    progress: String,
    /// Whether its series carry `cluster_id` before `instance_id`.
    clusters: bool,
}

impl Names {
    fn of(product: &dyn Product) -> Names {
        let p = product.metric_prefix();
        Names {
            tasks: format!("{p}_tasks"),
            finished: format!("{p}_tasks_finished_total"),
            duration: format!("{p}_task_duration_seconds"),
            last_finished: format!("{p}_task_last_finished_timestamp_seconds"),
            oldest: format!("{p}_task_oldest_unfinished_start_timestamp_seconds"),
            progress: format!("{p}_task_progress_ratio"),
            clusters: product.has_clusters(),
        }
    }

    /// The unit's labels, `cluster_id` and `instance_id`, and how many of them to skip: the
    /// first, for a product without clusters (callers slice `[skip..]`).
    fn unit<'a>(&self, unit: &'a str) -> (usize, [(&'static str, &'a str); 2]) {
        if self.clusters {
            let (cluster, instance) = unit.split_once('/').unwrap_or((unit, ""));
            (0, [("cluster_id", cluster), ("instance_id", instance)])
        } else {
            (1, [("cluster_id", ""), ("instance_id", unit)])
        }
    }
}

/// HELP texts of the task families (without [`FROM_POLL`]).
const TASKS_HELP: &str = "Tasks that started inside the lookback window or are still unfinished, by their latest known status.";
const FINISHED_HELP: &str = "Tasks that reached a terminal status, each job counted once when the exporter first saw it terminal.";
const DURATION_HELP: &str =
    "EndTime - StartTime of each task counted in the finished counter of its product.";
const LAST_FINISHED_HELP: &str = "EndTime (unix seconds) of the newest finished task seen.";
const OLDEST_HELP: &str =
    "StartTime (unix seconds) of the oldest unfinished task; absent when there is none.";
const PROGRESS_HELP: &str = "Progress (0-1) of each unfinished task, by job id.";

/// Writes a family's HELP and TYPE before its first sample, and nothing for an empty family.
struct Family<'a> {
    name: &'a str,
    help: String,
    kind: Kind,
    started: bool,
}

impl<'a> Family<'a> {
    fn new(name: &'a str, help: &str, kind: Kind) -> Self {
        Family {
            name,
            help: format!("{help} {FROM_POLL}"),
            kind,
            started: false,
        }
    }

    fn start(&mut self, out: &mut impl Exposition) -> io::Result<()> {
        if !self.started {
            self.started = true;
            out.family(self.name, &self.help, self.kind)?;
        }
        Ok(())
    }

    fn sample(
        &mut self,
        out: &mut impl Exposition,
        labels: &[(&str, &str)],
        v: Num,
    ) -> io::Result<()> {
        self.start(out)?;
        out.sample(self.name, labels, v)
    }

    fn sample_with(
        &mut self,
        out: &mut impl Exposition,
        labels: &[(&str, &str)],
        v: Num,
        exemplar: Option<&Exemplar>,
    ) -> io::Result<()> {
        self.start(out)?;
        out.sample_with(self.name, labels, v, exemplar)
    }
}

/// Calls `emit` for each row of one region, in label order: straight from the snapshot when one
/// target has the region, merged with `fold` when several do.
fn each_row<'a, K: Ord, V, I>(
    group: &[&'a Series],
    rows: impl Fn(&'a Series) -> I,
    fold: impl Fn(&mut V, V),
    mut emit: impl FnMut(K, V) -> io::Result<()>,
) -> io::Result<()>
where
    I: Iterator<Item = (K, V)>,
{
    if let [one] = group {
        for (k, v) in rows(one) {
            emit(k, v)?;
        }
        return Ok(());
    }
    let mut merged: BTreeMap<K, V> = BTreeMap::new();
    for s in group {
        for (k, v) in rows(s) {
            match merged.entry(k) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => fold(e.get_mut(), v),
            }
        }
    }
    for (k, v) in merged {
        emit(k, v)?;
    }
    Ok(())
}

/// A family labelled `instance_id`, `region`, `status`, `task_type`: one sample per row key.
fn by_key<'a, V, I>(
    out: &mut impl Exposition,
    names: &Names,
    regions: &BTreeMap<&'a str, Vec<&'a Series>>,
    mut family: Family<'_>,
    rows: impl Fn(&'a Series) -> I + Copy,
    fold: impl Fn(&mut V, V) + Copy,
    num: impl Fn(&V) -> (Num, Option<Exemplar>) + Copy,
) -> io::Result<()>
where
    I: Iterator<Item = (Key3<'a>, V)>,
{
    for (region, group) in regions {
        each_row(group, rows, fold, |(i, ty, st), v| {
            let (skip, [c, i]) = names.unit(i);
            let labels = [c, i, ("region", *region), ("status", st), ("task_type", ty)];
            let (value, exemplar) = num(&v);
            family.sample_with(out, &labels[skip..], value, exemplar.as_ref())
        })?;
    }
    Ok(())
}

/// The info family of each product (`tencentcloud_cdb_instance_info`, ...), by region and id;
/// an id two targets list (the same account configured twice) is written once.
pub(super) fn render_instances(
    out: &mut impl Exposition,
    inventories: &[Arc<Inventory>],
) -> io::Result<()> {
    for product in PRODUCTS {
        render_instances_of(out, *product, inventories)?;
    }
    Ok(())
}

/// The info family of one product, from the inventories of its targets (others are skipped).
pub(super) fn render_instances_of(
    out: &mut impl Exposition,
    product: &'static dyn Product,
    inventories: &[Arc<Inventory>],
) -> io::Result<()> {
    let mut rows: BTreeMap<(&str, &str), (&Inventory, &Instance)> = BTreeMap::new();
    for inv in inventories.iter().filter(|i| i.product == product) {
        for i in inv.instances.values() {
            rows.entry((inv.region.as_str(), i.instance_id.as_str()))
                .or_insert((inv, i));
        }
    }
    let info = product.info_family();
    let mut f = Family::new(info.name, info.help, Kind::Gauge);
    for ((region, id), (inv, i)) in rows {
        let mut labels: Vec<(&str, &str)> = vec![
            (info.version, &i.engine_version),
            (info.id, id),
            (info.name_label, &i.name),
            ("region", region),
            ("zone", &i.zone),
        ];
        if info.instance_type {
            labels.push(("instance_type", i.instance_type));
        }
        labels.sort_unstable_by_key(|l| l.0);
        for (label, key) in inv.tag_labels.iter().zip(&inv.tag_keys) {
            let value = i
                .tags
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, v)| v.as_str());
            labels.push((label, value));
        }
        f.sample(out, &labels, Num::U(1))?;
    }
    Ok(())
}

/// The task families from the targets' snapshots, in name order.
/// The targets' snapshots grouped by region (targets of one region are merged).
type Regions<'a> = BTreeMap<&'a str, Vec<&'a Series>>;

pub(super) fn render_tasks(
    out: &mut impl Exposition,
    snapshots: &[Arc<Series>],
    progress: bool,
) -> io::Result<()> {
    for product in PRODUCTS {
        let mut regions: Regions<'_> = BTreeMap::new();
        for s in snapshots.iter().filter(|s| s.product == *product) {
            regions.entry(&s.region).or_default().push(s);
        }
        if !regions.is_empty() {
            render_product(out, &Names::of(*product), &regions, progress)?;
        }
    }
    Ok(())
}

/// The task families of one product in one region, from the snapshots of its targets there.
pub(super) fn render_region(
    out: &mut impl Exposition,
    product: &'static dyn Product,
    region: &str,
    group: &[&Series],
    progress: bool,
) -> io::Result<()> {
    let regions: Regions<'_> = BTreeMap::from([(region, group.to_vec())]);
    render_product(out, &Names::of(product), &regions, progress)
}

/// The names of a product's task families in the order [`render_product`] writes them.
pub(super) fn family_order(product: &dyn Product) -> [String; 6] {
    let n = Names::of(product);
    [
        n.duration,
        n.last_finished,
        n.oldest,
        n.progress,
        n.tasks,
        n.finished,
    ]
}

/// The task families of one product, in the order of [`family_order`].
fn render_product(
    out: &mut impl Exposition,
    names: &Names,
    regions: &Regions<'_>,
    progress: bool,
) -> io::Result<()> {
    let sum = |a: &mut u64, b: u64| *a += b;
    render_durations(out, names, regions)?;
    by_key(
        out,
        names,
        regions,
        Family::new(&names.last_finished, LAST_FINISHED_HELP, Kind::Gauge),
        Series::last_finished_rows,
        |a, b| *a = (*a).max(b),
        |v| (Num::I(*v), None),
    )?;
    let mut f = Family::new(&names.oldest, OLDEST_HELP, Kind::Gauge);
    for (region, group) in regions {
        each_row(
            group,
            Series::oldest_rows,
            |a, b| *a = (*a).min(b),
            |(i, ty), v| {
                let (skip, [c, i]) = names.unit(i);
                let labels = [c, i, ("region", *region), ("task_type", ty)];
                f.sample(out, &labels[skip..], Num::I(v))
            },
        )?;
    }
    if progress {
        render_progress(out, names, regions)?;
    }
    by_key(
        out,
        names,
        regions,
        Family::new(&names.tasks, TASKS_HELP, Kind::Gauge),
        Series::task_rows,
        sum,
        |v| (Num::U(*v), None),
    )?;
    let finished = Family::new(&names.finished, FINISHED_HELP, Kind::Counter);
    if !out.wants_exemplars() {
        return by_key(
            out,
            names,
            regions,
            finished,
            Series::finished_rows,
            sum,
            |v| (Num::U(*v), None),
        );
    }
    by_key(
        out,
        names,
        regions,
        finished,
        Series::counted_rows,
        |a: &mut Counted, b: Counted| {
            a.0 += b.0;
            // Of two targets' last tasks, the one that ended last.
            if b.1.is_some_and(|b| a.1.is_none_or(|a| b.1 > a.1)) {
                a.1 = b.1;
            }
        },
        |&(v, last)| {
            let exemplar = last.map(|(job_id, end)| Exemplar {
                job_id,
                value: Num::U(1),
                timestamp: end,
            });
            (Num::U(v), exemplar)
        },
    )
}

/// The duration histogram: buckets, `+Inf`, sum and count per region, status and type.
fn render_durations(
    out: &mut impl Exposition,
    names: &Names,
    regions: &Regions<'_>,
) -> io::Result<()> {
    let duration = &names.duration;
    let mut f = Family::new(duration, DURATION_HELP, Kind::Histogram);
    let bucket = format!("{duration}_bucket");
    let (sum, count) = (format!("{duration}_sum"), format!("{duration}_count"));
    for (region, group) in regions {
        each_row(
            group,
            Series::duration_rows,
            |a, b| a.merge(&b),
            |(st, ty), h| {
                let base = [("region", *region), ("status", st), ("task_type", ty)];
                f.start(out)?;
                let exemplar = |i: usize| {
                    h.last[i].map(|(job_id, d, end)| Exemplar {
                        job_id,
                        value: Num::F(d),
                        timestamp: end,
                    })
                };
                for (i, (le, n)) in TASK_DURATION_BUCKETS.iter().zip(h.buckets).enumerate() {
                    let le = le_label(*le);
                    let labels = [base[0], base[1], base[2], ("le", &le)];
                    out.sample_with(&bucket, &labels, Num::U(n), exemplar(i).as_ref())?;
                }
                let labels = [base[0], base[1], base[2], ("le", "+Inf")];
                let inf = exemplar(TASK_DURATION_BUCKETS.len());
                out.sample_with(&bucket, &labels, Num::U(h.count), inf.as_ref())?;
                out.sample(&sum, &base, Num::F(h.sum))?;
                out.sample(&count, &base, Num::U(h.count))
            },
        )?;
    }
    Ok(())
}

/// The opt-in progress gauge, one series per unfinished task.
fn render_progress(
    out: &mut impl Exposition,
    names: &Names,
    regions: &Regions<'_>,
) -> io::Result<()> {
    let mut f = Family::new(&names.progress, PROGRESS_HELP, Kind::Gauge);
    for (region, group) in regions {
        each_row(
            group,
            Series::progress_rows,
            |_, _| {},
            |(i, job, ty, st), p| {
                let job = job.to_string();
                let (skip, [c, i]) = names.unit(i);
                let labels = [
                    c,
                    i,
                    ("job_id", job.as_str()),
                    ("region", *region),
                    ("status", st),
                    ("task_type", ty),
                ];
                f.sample(out, &labels[skip..], Num::F(p as f64 / 100.0))
            },
        )?;
    }
    Ok(())
}

/// Families gathered from a `prometheus` registry, with `note` appended to each HELP.
pub(super) fn gathered(
    out: &mut impl Exposition,
    families: &[MetricFamily],
    note: &str,
) -> io::Result<()> {
    for f in families {
        let name = f.name();
        let help = if note.is_empty() {
            f.help().to_string()
        } else {
            format!("{} {note}", f.help())
        };
        let kind = match f.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            MetricType::SUMMARY => Kind::Summary,
            // The crate's collectors make none; it deprecates the type.
            MetricType::UNTYPED => continue,
        };
        out.family(name, &help, kind)?;
        for m in f.get_metric() {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            gathered_metric(out, name, kind, &labels, m)?;
        }
    }
    Ok(())
}

fn gathered_metric<E: Exposition>(
    out: &mut E,
    name: &str,
    kind: Kind,
    labels: &[(&str, &str)],
    m: &prometheus::proto::Metric,
) -> io::Result<()> {
    // A sample with one label more (`le`, `quantile`) than the metric's own.
    let extra = |out: &mut E, sample: &str, label: (&str, &str), v: Num| {
        let mut l = labels.to_vec();
        l.push(label);
        out.sample(sample, &l, v)
    };
    match kind {
        Kind::Counter => out.sample(name, labels, Num::F(m.get_counter().get_value())),
        Kind::Gauge => out.sample(name, labels, Num::F(m.get_gauge().get_value())),
        Kind::Histogram => {
            let h = m.get_histogram();
            let bucket = format!("{name}_bucket");
            for b in h.get_bucket() {
                let le = le_label(b.upper_bound());
                extra(out, &bucket, ("le", &le), Num::U(b.cumulative_count()))?;
            }
            if !h.get_bucket().iter().any(|b| b.upper_bound().is_infinite()) {
                extra(out, &bucket, ("le", "+Inf"), Num::U(h.get_sample_count()))?;
            }
            out.sample(&format!("{name}_sum"), labels, Num::F(h.get_sample_sum()))?;
            out.sample(
                &format!("{name}_count"),
                labels,
                Num::U(h.get_sample_count()),
            )
        }
        Kind::Summary => {
            let s = m.get_summary();
            for q in s.get_quantile() {
                let quantile = le_label(q.quantile());
                extra(out, name, ("quantile", &quantile), Num::F(q.value()))?;
            }
            out.sample(&format!("{name}_sum"), labels, Num::F(s.sample_sum()))?;
            out.sample(&format!("{name}_count"), labels, Num::U(s.sample_count()))
        }
    }
}

/// A bucket bound or quantile as a label value, formatted like a sample value.
fn le_label(v: f64) -> String {
    let mut out = Vec::new();
    super::text::write_num(&mut out, Num::F(v)).expect("writing to memory");
    String::from_utf8(out).expect("ASCII")
}
