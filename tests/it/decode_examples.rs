//! Both reference responses decode to exactly the expected tasks.

use cdb_task_exporter::tencent::apitime::ApiZone;
use cdb_task_exporter::tencent::model::{Envelope, TaskPage, TaskStatus, decode_response};

fn page(file: &str) -> TaskPage {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(path).unwrap();
    match decode_response(&body, ApiZone::beijing()).unwrap() {
        Envelope::Page(p) => p,
        other @ Envelope::Error { .. } => panic!("unexpected {other:?}"),
    }
}

/// Job id, type, status, instances, duration, progress.
type Row = (i64, String, TaskStatus, Vec<String>, Option<i64>, i64);

fn row(p: &TaskPage) -> Vec<Row> {
    p.items
        .iter()
        .map(|t| {
            (
                t.job_id,
                t.task_type.clone(),
                t.status,
                t.instance_ids.clone(),
                t.end_time.map(|e| e - t.start_time),
                t.progress,
            )
        })
        .collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(std::string::ToString::to_string).collect()
}

#[test]
fn documented_integer_shape() {
    use TaskStatus::*;
    let p = page("describe_tasks_doc_example.json");
    assert_eq!(p.total_count, 13);
    assert_eq!(p.item_count, 10);
    assert!(p.malformed.is_empty());
    assert_eq!(p.request_id, "6EF60BEC-0242-43AF-BB20-270359FB54A7");
    let expected = vec![
        (
            15964,
            "initial".into(),
            Succeed,
            ids(&["cdb-gt70m8aa"]),
            Some(63),
            100,
        ),
        (
            51788,
            "sql_operation".into(),
            Failed,
            ids(&["cdb-atjl8gns"]),
            Some(1),
            0,
        ),
        (
            15967,
            "upgrade_master".into(),
            Succeed,
            ids(&["cdb-gt70m8aa"]),
            Some(185),
            100,
        ),
        (
            15969,
            "modify_param".into(),
            Succeed,
            ids(&[]),
            Some(45),
            100,
        ),
        (15970, "import_data".into(), Failed, ids(&[]), Some(31), 5),
        (15971, "import_data".into(), Failed, ids(&[]), Some(31), 5),
        (
            15972,
            "import_data".into(),
            Succeed,
            ids(&[]),
            Some(31),
            100,
        ),
        (
            15974,
            "upgrade_master".into(),
            Succeed,
            ids(&["cdb-o8cacfkg"]),
            Some(246),
            100,
        ),
        (
            15976,
            "initial".into(),
            Succeed,
            ids(&["cdb-7262qp3q"]),
            Some(63),
            100,
        ),
        (
            51695,
            "batch_rollback".into(),
            Succeed,
            ids(&["cdb-ewgjla5w"]),
            Some(124),
            100,
        ),
    ];
    assert_eq!(row(&p), expected);
    // 2017-06-27 15:05:33 Beijing time.
    assert_eq!(p.items[0].start_time, 1_498_547_133);
}

#[test]
fn current_string_shape() {
    use TaskStatus::*;
    let p = page("describe_tasks_sdk_example.json");
    assert_eq!((p.total_count, p.item_count), (7, 7));
    let one = ids(&["cdb-7ghbk2l1"]);
    let expected = vec![
        (
            310452,
            "upgrade_master".into(),
            Running,
            one.clone(),
            None,
            45,
        ),
        (310447, "modify_param".into(), Waiting, one.clone(), None, 0),
        (
            310391,
            "modify_param".into(),
            Succeed,
            one.clone(),
            Some(26),
            100,
        ),
        (
            310288,
            "reboot".into(),
            Succeed,
            one.clone(),
            Some(105),
            100,
        ),
        (310102, "rollback".into(), Failed, one.clone(), Some(27), 10),
        (
            309977,
            "import_data".into(),
            Killed,
            one.clone(),
            Some(766),
            30,
        ),
        (
            309801,
            "switch_dr_to_master".into(),
            Succeed,
            ids(&["cdb-7ghbk2l1", "cdb-dr5q2m8x"]),
            Some(95),
            100,
        ),
    ];
    assert_eq!(row(&p), expected);
}
