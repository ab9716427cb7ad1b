//! The reference in `docs/` keeps up with the code: every family a scrape shows is documented in
//! `docs/metrics.md`, every key of `config.example.toml` in `docs/configuration.md`, and the
//! links between the documents and from the code resolve.

use crate::common::{Pair, region, repo_file, repo_path};
use cdb_task_exporter::sim::Scenario;
use std::collections::BTreeSet;

/// `section.key` for every key `config.example.toml` shows, commented-out ones included.
fn example_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in repo_file("config.example.toml").lines() {
        let line = line.trim_start_matches('#').trim();
        let header = line.trim_matches(|c| c == '[' || c == ']');
        if line.starts_with('[')
            && line.ends_with(']')
            && header
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            section = header.to_string();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !key.contains(' ')
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[tokio::test]
async fn every_served_family_and_every_key_is_documented() {
    let pair = Pair::start(
        Scenario::demo(),
        "[metrics]\ntask_progress = true",
        &region("ap-guangzhou", &[]),
    )
    .await;
    let page = pair.exporter.wait_targets_polled(1).await;
    let text = pair.exporter.scrape().await;
    pair.stop().await;
    assert!(
        page.count("tencentcloud_cdb_tasks", &[]) > 0,
        "the demo has tasks"
    );
    let metrics = repo_file("docs/metrics.md");
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|name| !name.starts_with("process_"))
        .collect();
    assert!(families.len() > 15, "{families:?}");
    let missing: Vec<_> = families
        .iter()
        .filter(|f| !metrics.contains(&format!("`{f}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");

    let configuration = repo_file("docs/configuration.md");
    let keys = example_keys();
    assert!(
        keys.contains("poll.state_file") && keys.len() > 20,
        "{keys:?}"
    );
    let undocumented: Vec<_> = keys
        .iter()
        .filter(|k| {
            // Account keys are documented as `accounts[].key`.
            let as_written = k
                .replace("accounts.regions.", "accounts[].regions[].")
                .replace("accounts.", "accounts[].");
            let key = k.rsplit('.').next().unwrap_or(k);
            !configuration.contains(&format!("`{as_written}`"))
                && !configuration.contains(&format!("`{key}`"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/configuration.md: {undocumented:?}"
    );
}

#[test]
fn links_to_the_reference_resolve() {
    // Every `docs/<file>.md#anchor` named in the sources and the README names a heading that
    // exists.
    let mut cited = BTreeSet::new();
    let mut files = vec![repo_path("README.md")];
    for dir in ["src", "tests", "docs"] {
        let mut stack = vec![repo_path(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs" || x == "md") {
                    files.push(p);
                }
            }
        }
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("docs/") {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/._#-".contains(c)))
                .unwrap_or(rest.len());
            let link = rest[..end].trim_end_matches('.');
            if link.contains(".md") {
                cited.insert(link.to_string());
            }
        }
    }
    assert!(cited.len() > 10, "{cited:?}");
    for link in &cited {
        let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
        let path = repo_path(file);
        assert!(path.exists(), "{link}: no such file");
        if anchor.is_empty() {
            continue;
        }
        let slugs: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .map(|h| {
                h.trim_start_matches('#')
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect();
        assert!(
            slugs.iter().any(|s| s == anchor),
            "{link}: no heading {anchor} in {slugs:?}"
        );
    }
}
