//! Records the git revision for `--version` and the build-info metric.
use std::process::Command;

fn main() {
    let revision = std::env::var("CDB_TASK_EXPORTER_REVISION")
        .ok()
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=GIT_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=CDB_TASK_EXPORTER_REVISION");
    // Only files that exist: cargo reruns a build script every time a watched path is missing
    // (not every clone has packed-refs), which recompiled the crate at every build.
    println!("cargo:rerun-if-changed=build.rs");
    let head = std::fs::read_to_string(".git/HEAD").unwrap_or_default();
    let branch = head
        .strip_prefix("ref: ")
        .map(|r| format!(".git/{}", r.trim()));
    let watched = [
        Some(".git/HEAD".to_string()),
        branch,
        Some(".git/packed-refs".into()),
    ];
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
