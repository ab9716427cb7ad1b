//! glibc malloc's mmap threshold, fixed before the allocator starts.
//!
//! glibc serves an allocation over its mmap threshold (128 KiB at start) with a mapping of its
//! own, given back to the system when freed. But when such a block is freed, glibc raises the
//! threshold to that block's size (up to 32 MiB), so the large transient buffers that follow (a
//! poll's pages of tasks, a snapshot being built, the maps of a publication) come from the heap,
//! where the pages they leave free stay resident. Measured with `examples/scale` at 2,000
//! instances of three products, three runs each: 26.6-27.0 MiB resident after the first ingest
//! with the moving threshold, 21.8-21.9 MiB with it fixed; after 200 scrapes 30.0-30.6 against
//! 22.7-22.8 MiB.
//!
//! The threshold is fixed by `mallopt`, which takes unsafe code that this crate forbids, or by
//! the `GLIBC_TUNABLES` environment variable, which glibc reads when a program starts. So the
//! exporter executes itself again, once, first thing in `main`, with the tunable added to
//! whatever `GLIBC_TUNABLES` held. A `GLIBC_TUNABLES` that already sets the threshold is left as
//! it is (a way to choose another value); so is any build that is not for glibc on Linux.

/// The tunable that fixes the threshold.
pub const TUNABLE: &str = "glibc.malloc.mmap_threshold";

/// Its value: glibc's own starting threshold, 128 KiB, kept from then on.
pub const THRESHOLD: &str = "131072";

/// Set in the environment of the second execution, so that there is never a third (should the
/// loader drop `GLIBC_TUNABLES`, as it does for privileged programs).
pub const MARK: &str = "CDB_TASK_EXPORTER_MALLOC_TUNED";

/// The `GLIBC_TUNABLES` to run with, given the current value: the current one with the
/// threshold added; `None` when it sets the threshold already. Pure.
pub fn tunables(current: Option<&str>) -> Option<String> {
    let current = current.unwrap_or("");
    let sets_it = current
        .split(':')
        .any(|t| t.split_once('=').is_some_and(|(name, _)| name == TUNABLE));
    if sets_it {
        return None;
    }
    let ours = format!("{TUNABLE}={THRESHOLD}");
    Some(if current.is_empty() {
        ours
    } else {
        format!("{current}:{ours}")
    })
}

/// Executes this program again with the threshold fixed, unless it is fixed already or this is
/// the second execution. Returns only when it does not (or cannot) execute; the program then
/// runs with glibc's default. Call it before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn fix_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(MARK).is_some() {
        return;
    }
    let current = std::env::var("GLIBC_TUNABLES").ok();
    let Some(tunables) = tunables(current.as_deref()) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    // `exec` returns only on failure: the program then goes on as it is.
    let _ = command
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(MARK, "1")
        .exec();
}

/// Not glibc on Linux: nothing to fix.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn fix_mmap_threshold() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_added_to_what_is_set_and_a_set_one_is_kept() {
        assert_eq!(
            tunables(None).as_deref(),
            Some("glibc.malloc.mmap_threshold=131072")
        );
        assert_eq!(
            tunables(Some("")).as_deref(),
            Some("glibc.malloc.mmap_threshold=131072")
        );
        assert_eq!(
            tunables(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072")
        );
        assert_eq!(
            tunables(Some(
                "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"
            )),
            None
        );
        // A tunable whose name only starts the same is another one.
        assert!(tunables(Some("glibc.malloc.mmap_threshold_x=1")).is_some());
    }
}
