//! `configure` against the real mimalloc, each case in a child process of
//! this test binary: mimalloc reads its environment once, at start-up.

use std::process::Command;

use baton_alloc::{PURGE_DECOMMITS_VAR, Purge};

#[global_allocator]
static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;

/// Set in a child: what it should find.
const EXPECT: &str = "BATON_ALLOC_TEST_EXPECT";

/// Runs `child` in a fresh process with `purge_env` as the operator's
/// setting (or none) and asserts it passed.
fn in_a_child(purge_env: Option<&str>, expect: &str) {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(EXPECT, expect);
    match purge_env {
        Some(value) => command.env(PURGE_DECOMMITS_VAR, value),
        None => command.env_remove(PURGE_DECOMMITS_VAR),
    };
    let output = command.output().expect("the child runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{printed}");
    assert!(
        printed.contains("1 passed"),
        "the child ran no test:\n{printed}"
    );
}

/// The case itself: run only as a child (it passes trivially otherwise, and
/// is not counted as a check).
#[test]
fn child() {
    let Ok(expect) = std::env::var(EXPECT) else {
        return;
    };
    let before = baton_alloc::purge_decommits();
    let chose = baton_alloc::configure();
    let after = baton_alloc::purge_decommits();
    match expect.as_str() {
        "lazily" => {
            assert_eq!(before, 1, "mimalloc's default is to decommit");
            assert_eq!(chose, Purge::Lazily);
            assert_eq!(after, 0, "configure resets instead");
        }
        "operator-zero" => {
            assert_eq!(before, 0, "mimalloc read the operator's 0");
            assert_eq!((chose, after), (Purge::AsConfigured, 0));
        }
        "operator-three" => {
            assert_eq!(before, 3, "mimalloc read the operator's 3");
            assert_eq!((chose, after), (Purge::AsConfigured, 3), "and it is kept");
        }
        other => panic!("unknown expectation {other}"),
    }
}

#[test]
fn without_the_operators_setting_freed_memory_is_reset_not_decommitted() {
    in_a_child(None, "lazily");
}

#[test]
fn the_operators_setting_is_kept() {
    // Two values, so the option number is checked to be the one mimalloc
    // reads MIMALLOC_PURGE_DECOMMITS into, whatever its default.
    in_a_child(Some("0"), "operator-zero");
    in_a_child(Some("3"), "operator-three");
}
