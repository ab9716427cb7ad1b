//! Unit tests of the metrics module: publication, small pages, both formats, bounds.

use super::*;
use crate::domain::{TASK_TYPES, TaskStatus};
use crate::tasks::{Scope, TaskStore};

fn store_with_types(types: &[String]) -> TaskStore {
    let mut store = TaskStore::new(Scope::Region, 86_400, 0);
    for (n, ty) in types.iter().enumerate() {
        let task = crate::domain::Task {
            job_id: n as i64,
            task_type: ty.clone(),
            status: TaskStatus::Failed,
            start_time: 100,
            end_time: Some(110),
            progress: 0,
            instance_ids: vec!["cdb-aaaa1111".into()],
            async_request_id: String::new(),
            code: None,
            message: String::new(),
        };
        let _ = store.observe(crate::tasks::Observation {
            task,
            via_instance: None,
        });
    }
    store
}

#[test]
fn unknown_types_leave_with_their_tasks_and_the_table_stays_small() {
    let m = Metrics::new(false, "t", "t");
    let series = TargetSeries::default();
    let t = TargetId {
        account: "a".into(),
        region: "ap-guangzhou".into(),
        product: "cdb",
    };
    // Waves of new types, each leaving before the next: the series follow, and the type
    // table is compacted instead of growing towards its index limit.
    for wave in 0..40 {
        let types: Vec<String> = (0..30).map(|i| format!("wave{wave}_type{i}")).collect();
        let store = store_with_types(&types);
        for (n, ty) in types.iter().enumerate() {
            series.task_finished(&crate::tasks::Finished {
                job_id: n as i64,
                instances: vec!["cdb-aaaa1111".into()],
                task_type: ty.clone(),
                status: TaskStatus::Failed,
                duration: Some(10),
                end: Some(1_000 + n as i64),
            });
        }
        m.publish(&t, &series, ["cdb-aaaa1111"], &store.aggregates(), []);
        let text = String::from_utf8(m.render([&series])).unwrap();
        assert!(text.contains(&format!("task_type=\"wave{wave}_type29\"")));
        if wave > 0 {
            assert!(
                !text.contains(&format!("task_type=\"wave{}_type0\"", wave - 1)),
                "the last wave's types left with their tasks"
            );
        }
        let finished = text
            .lines()
            .filter(|l| {
                l.starts_with("tencentcloud_cdb_tasks_finished_total{") && l.contains("wave")
            })
            .count();
        assert_eq!(finished, 30, "one counter per type of this wave");
    }
    let size = series.type_table_len();
    assert!(
        size <= TASK_TYPES.len() + 1 + 4 * crate::domain::MAX_OTHER_TASK_TYPES + 30,
        "{size}"
    );
}

#[test]
fn monitored_instances_are_bounded_and_the_excess_counted() {
    let m = Metrics::new(false, "t", "t");
    let series = TargetSeries::default();
    let t = TargetId {
        account: "a".into(),
        region: "ap-guangzhou".into(),
        product: "cdb",
    };
    let ids: Vec<String> = (0..MAX_MONITORED_INSTANCES + 5)
        .map(|i| format!("cdb-{i:08}"))
        .collect();
    let store = TaskStore::new(Scope::Region, 1, 1);
    m.publish(
        &t,
        &series,
        ids.iter().map(String::as_str),
        &store.aggregates(),
        [],
    );
    let text = String::from_utf8(m.render([&series])).unwrap();
    let zeros = text
        .lines()
        .filter(|l| l.starts_with("tencentcloud_cdb_tasks_finished_total{"))
        .count();
    assert_eq!(zeros, MAX_MONITORED_INSTANCES * TASK_TYPES.len() * 4);
    assert!(
        text.contains(
            "tencentcloud_cdb_exporter_instances_over_limit{account=\"a\",product=\"cdb\",region=\"ap-guangzhou\"} 5"
        ),
        "the excess is counted"
    );
    // Instances that left make room for those waiting.
    series.forget_instances(ids[..10].iter().map(String::as_str));
    m.publish(
        &t,
        &series,
        ids[10..].iter().map(String::as_str),
        &store.aggregates(),
        [],
    );
    let text = String::from_utf8(m.render([&series])).unwrap();
    assert!(text.contains(
        "tencentcloud_cdb_exporter_instances_over_limit{account=\"a\",product=\"cdb\",region=\"ap-guangzhou\"} 0"
    ));
}

#[test]
fn a_small_page_is_rendered_again_only_after_a_publication() {
    let m = Metrics::new(false, "t", "t");
    let series = TargetSeries::default();
    let t = TargetId {
        account: "a".into(),
        region: "ap-guangzhou".into(),
        product: "cdb",
    };
    let finished = |n: i64| crate::tasks::Finished {
        job_id: n,
        instances: vec!["cdb-aaaa1111".into()],
        task_type: "reboot".into(),
        status: TaskStatus::Failed,
        duration: Some(10),
        end: Some(1_000 + n),
    };
    let store = TaskStore::new(Scope::Region, 1, 1);
    let failed = |page: &[u8]| {
        String::from_utf8_lossy(page)
            .lines()
            .find(|l| {
                l.starts_with("tencentcloud_cdb_tasks_finished_total{")
                    && l.contains("status=\"failed\",task_type=\"reboot\"")
            })
            .map(str::to_string)
    };
    series.task_finished(&finished(1));
    m.publish(&t, &series, ["cdb-aaaa1111"], &store.aggregates(), []);
    let kept = |format| m.small_task_text(&[series.snapshot().0.unwrap()], &[], format);
    let first = kept(Format::Text);
    assert!(failed(&m.render([&series])).unwrap().ends_with(" 1"));
    // Unchanged snapshots: the kept text itself, in each format its own.
    let open = kept(Format::OpenMetrics);
    assert!(Arc::ptr_eq(&first, &kept(Format::Text)));
    assert!(Arc::ptr_eq(&open, &kept(Format::OpenMetrics)));
    let open = String::from_utf8_lossy(&open).into_owned();
    assert!(open.contains("# TYPE tencentcloud_cdb_tasks_finished counter"));
    assert!(open.contains("# {job_id=\"1\"} 1 1001"), "{open}");
    // The kept families sit inside a whole page: one # EOF, at its end.
    let mut page = Vec::new();
    m.render_format_to(&mut page, [&series], Format::OpenMetrics)
        .unwrap();
    let page = String::from_utf8(page).unwrap();
    assert_eq!(page.matches("# EOF").count(), 1);
    assert!(page.ends_with("# EOF\n"));
    // A count not yet published is not shown; once published, it is.
    series.task_finished(&finished(2));
    assert!(failed(&m.render([&series])).unwrap().ends_with(" 1"));
    m.publish(&t, &series, ["cdb-aaaa1111"], &store.aggregates(), []);
    assert!(failed(&m.render([&series])).unwrap().ends_with(" 2"));
}

/// A small page's parts are the page, and its middle part is the kept text itself.
#[test]
fn a_small_page_in_parts_is_the_page_and_shares_the_kept_text() {
    let m = Metrics::new(false, "t", "t");
    let series = TargetSeries::default();
    let t = TargetId::cdb("a", "ap-guangzhou");
    series.task_finished(&crate::tasks::Finished {
        job_id: 7,
        instances: vec!["cdb-aaaa1111".into()],
        task_type: "reboot".into(),
        status: TaskStatus::Failed,
        duration: Some(10),
        end: Some(1_007),
    });
    let store = TaskStore::new(Scope::Region, 1, 1);
    m.publish(&t, &series, ["cdb-aaaa1111"], &store.aggregates(), []);
    for format in [Format::Text, Format::OpenMetrics] {
        let parts = m.small_page([&series], format).unwrap();
        let again = m.small_page([&series], format).unwrap();
        assert_eq!(parts[1].as_ptr(), again[1].as_ptr(), "{format:?}");
        let mut page = Vec::new();
        m.render_format_to(&mut page, [&series], format).unwrap();
        // The process metrics move between two gatherings: compare all but them.
        let joined: Vec<u8> = parts.concat();
        let cut = |p: &[u8]| {
            let text = String::from_utf8(p.to_vec()).unwrap();
            text.split("# HELP process_").next().unwrap().to_string()
        };
        assert_eq!(cut(&joined), cut(&page), "{format:?}");
        assert!(cut(&joined).contains("tencentcloud_cdb_tasks_finished_total{"));
        let end = String::from_utf8(parts[2].to_vec()).unwrap();
        assert_eq!(end.ends_with("# EOF\n"), format == Format::OpenMetrics);
    }
}

/// A target that counted two failed imports and one success, rendered in both formats.
fn both_pages() -> (String, String) {
    let m = Metrics::new(false, "t", "t");
    let series = TargetSeries::default();
    let t = TargetId::cdb("a", "ap-guangzhou");
    for (job, status, duration) in [
        (11, TaskStatus::Failed, 30),
        (12, TaskStatus::Failed, 4_000),
        (13, TaskStatus::Succeed, 5),
    ] {
        series.task_finished(&crate::tasks::Finished {
            job_id: job,
            instances: vec!["cdb-aaaa1111".into()],
            task_type: "import_data".into(),
            status,
            duration: Some(duration),
            end: Some(1_700_000_000 + job),
        });
    }
    let store = TaskStore::new(Scope::Region, 1, 1);
    m.publish(&t, &series, ["cdb-aaaa1111"], &store.aggregates(), []);
    m.api_request(&t, "DescribeTasks", 0.1);
    let page = |format| {
        let mut out = Vec::new();
        m.render_format_to(&mut out, [&series], format).unwrap();
        String::from_utf8(out).unwrap()
    };
    (page(Format::Text), page(Format::OpenMetrics))
}

#[test]
fn both_formats_carry_the_same_series_and_openmetrics_the_exemplars() {
    let (text, open) = both_pages();
    assert!(open.ends_with("# EOF\n"));
    assert!(open.contains("# TYPE tencentcloud_cdb_tasks_finished counter\n"));
    assert!(open.contains("# TYPE tencentcloud_cdb_exporter_api_requests counter\n"));
    let samples = |page: &str| -> std::collections::BTreeSet<String> {
        page.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
            .map(|l| l.split(" # ").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(samples(&text), samples(&open), "the same series and values");
    assert!(!text.contains(" # {"), "no exemplar in the text format");
    let line = |prefix: &str, has: &str| {
        open.lines()
            .find(|l| l.starts_with(prefix) && l.contains(has))
            .unwrap_or_else(|| panic!("{prefix} {has}:\n{open}"))
            .to_string()
    };
    // The failed counter shows the last failed task; a counter that counted nothing, none.
    assert!(
        line(
            "tencentcloud_cdb_tasks_finished_total{",
            "status=\"failed\",task_type=\"import_data\""
        )
        .ends_with(" 2 # {job_id=\"12\"} 1 1700000012")
    );
    assert!(
        !line(
            "tencentcloud_cdb_tasks_finished_total{",
            "status=\"killed\",task_type=\"import_data\""
        )
        .contains(" # ")
    );
    // Buckets: the last task each counted, with its duration.
    let bucket = "tencentcloud_cdb_task_duration_seconds_bucket{";
    assert!(
        line(
            bucket,
            "status=\"failed\",task_type=\"import_data\",le=\"60\""
        )
        .ends_with(" # {job_id=\"11\"} 30 1700000011")
    );
    assert!(
        line(
            bucket,
            "status=\"failed\",task_type=\"import_data\",le=\"+Inf\""
        )
        .ends_with(" 2 # {job_id=\"12\"} 4000 1700000012")
    );
    assert!(
        !line(
            bucket,
            "status=\"failed\",task_type=\"import_data\",le=\"1\""
        )
        .contains(" # ")
    );
}

/// The gzip page of two accounts' CDB targets in one region, one in another region and a
/// TDSQL-C target, with listings: `(metrics, series)`.
fn several_targets() -> (Metrics, Vec<(TargetId, TargetSeries)>) {
    let m = Metrics::new(false, "t", "t");
    let cynosdb = *crate::product::PRODUCTS
        .iter()
        .find(|p| p.name() == "cynosdb")
        .unwrap();
    let targets = vec![
        (TargetId::cdb("a", "ap-guangzhou"), "cdb-aaaa1111"),
        (TargetId::cdb("b", "ap-guangzhou"), "cdb-bbbb2222"),
        (TargetId::cdb("a", "ap-shanghai"), "cdb-cccc3333"),
        (
            TargetId::new("a", "ap-guangzhou", "cynosdb"),
            "cynosdbmysql-dd44/cynosdbmysql-ins-dd44",
        ),
    ];
    let all = targets
        .into_iter()
        .enumerate()
        .map(|(n, (t, unit))| {
            let series = if t.product == "cynosdb" {
                TargetSeries::of(cynosdb)
            } else {
                TargetSeries::default()
            };
            series.task_finished(&crate::tasks::Finished {
                job_id: n as i64,
                instances: vec![unit.into()],
                task_type: ["reboot", "import_data"][n % 2].into(),
                status: TaskStatus::Failed,
                duration: Some(10 * n as i64),
                end: Some(1_000 + n as i64),
            });
            let store = store_with_types(&["import_data".to_string()]);
            m.publish(&t, &series, [unit], &store.aggregates(), []);
            if n % 2 == 0 {
                let instance = crate::domain::Instance {
                    instance_id: unit.split('/').next_back().unwrap().into(),
                    name: format!("name \"{n}\""),
                    instance_type: "master",
                    engine_version: "8.0".into(),
                    zone: "ap-guangzhou-3".into(),
                    tags: vec![],
                };
                let listing = [(instance.instance_id.clone(), instance)].into();
                series.set_inventory(&t.region, &[], Arc::new(listing));
            }
            (t, series)
        })
        .collect();
    (m, all)
}

/// Every part of a page, the process metrics cut off (they move between two gatherings).
fn cut_process(page: &[u8]) -> String {
    let text = String::from_utf8(page.to_vec()).unwrap();
    text.split("# HELP process_").next().unwrap().to_string()
}

/// Decodes a gzip page with the system's `gzip`, a decoder that is not ours.
fn gunzip(parts: &[bytes::Bytes]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdin = child.stdin.take().unwrap();
    for p in parts {
        stdin.write_all(p).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

#[test]
fn a_gzip_page_is_the_page_and_deflates_again_only_what_was_published() {
    let (m, targets) = several_targets();
    let series = || targets.iter().map(|t| &t.1);
    for format in [Format::Text, Format::OpenMetrics] {
        let first = m.gzip_page(series(), format);
        let mut page = Vec::new();
        m.render_format_to(&mut page, series(), format).unwrap();
        let text = cut_process(&gunzip(&first));
        assert_eq!(text, cut_process(&page), "{format:?}");
        assert!(text.contains("cdb-cccc3333") && text.contains("cynosdbmysql-ins-dd44"));
        assert!(text.contains("name=\"name \\\"2\\\"\""), "{text}");
        // Nothing published since: every kept piece is sent again as it is.
        let kept = |parts: &[bytes::Bytes]| -> std::collections::HashSet<usize> {
            parts.iter().map(|p| p.as_ptr() as usize).collect()
        };
        let again = m.gzip_page(series(), format);
        let shared = kept(&first).intersection(&kept(&again)).count();
        // All but the self-metrics, the process metrics and the trailer.
        assert_eq!(shared, first.len() - 3, "{format:?}");
        // One target publishes: its region is deflated again, the others are not.
        let (t, s) = &targets[2];
        s.task_finished(&crate::tasks::Finished {
            job_id: 99,
            instances: vec!["cdb-cccc3333".into()],
            task_type: "reboot".into(),
            status: TaskStatus::Succeed,
            duration: Some(5),
            end: Some(2_000),
        });
        let store = TaskStore::new(Scope::Region, 1, 1);
        let previous = s.snapshot().0.unwrap();
        let staged = m.stage(t, s, ["cdb-cccc3333"], &store.aggregates(), []);
        // Staged, not shown: a scrape still gets the previous snapshot, all of it kept.
        assert!(Arc::ptr_eq(&s.snapshot().0.unwrap(), &previous));
        let before = m.gzip_page(series(), format);
        assert_eq!(
            kept(&again).intersection(&kept(&before)).count(),
            again.len() - 3
        );
        // Deflated as it is shown, in the formats scraped so far only; the previous pieces go.
        m.promote(s, staged);
        let current = s.snapshot().0.unwrap();
        let held = |ix: usize, s: &Arc<Series>| {
            m.kept_gzip.lock().unwrap()[ix].holds(std::slice::from_ref(s))
        };
        assert!(held(0, &current) && !held(0, &previous));
        assert_eq!(held(1, &current), format == Format::OpenMetrics);
        let after = m.gzip_page(series(), format);
        let shared = kept(&again).intersection(&kept(&after)).count();
        assert!(
            shared > 3 && shared < after.len() - 3,
            "{shared} of {}",
            after.len()
        );
        let mut page = Vec::new();
        m.render_format_to(&mut page, series(), format).unwrap();
        assert_eq!(
            cut_process(&gunzip(&after)),
            cut_process(&page),
            "{format:?}"
        );
    }
    // The kept pieces: a fraction of the text they stand for.
    let kept = m.kept_gzip.lock().unwrap()[0].size();
    assert!(kept > 0);
}
