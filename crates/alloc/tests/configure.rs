//! `configure` against the real mimalloc and kernel, each case in a child
//! process of this test binary: mimalloc reads its environment once, at
//! start-up, and turning huge pages off lasts for the process.

use std::process::Command;

use baton_alloc::{Chosen, HUGE_PAGES_VARIABLE, SETTINGS};

#[global_allocator]
static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;

/// Set in a child: which case it runs.
const CASE: &str = "BATON_ALLOC_TEST_CASE";

/// Runs `child` in a fresh process with `environment` as the operator's
/// settings (every other variable `configure` looks at removed) and asserts
/// it passed.
fn in_a_child(case: &str, environment: &[(&str, &str)]) {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env_remove(HUGE_PAGES_VARIABLE);
    for setting in &SETTINGS {
        command.env_remove(setting.variable);
    }
    command.envs(environment.iter().copied());
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

/// The cases themselves, run only in a child (it does nothing otherwise).
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    let before = SETTINGS.map(|setting| baton_alloc::current(&setting));
    let huge_pages_were_off = baton_alloc::huge_pages_off().expect("prctl answers");
    let configured = baton_alloc::configure();
    let after = SETTINGS.map(|setting| baton_alloc::current(&setting));
    let huge_pages_off = baton_alloc::huge_pages_off().expect("prctl answers");
    match case.as_str() {
        "defaults" => {
            assert_eq!(before, SETTINGS.map(|s| s.default), "mimalloc's defaults");
            assert_eq!(configured.settings, [Chosen::ByBaton]);
            assert_eq!(after, SETTINGS.map(|s| s.value), "Baton's values");
            assert_eq!(
                *configured.huge_pages.as_ref().expect("prctl answers"),
                Chosen::ByBaton
            );
            assert!(huge_pages_off || cfg!(not(target_os = "linux")));
            assert_eq!(
                configured.to_string(),
                "mimalloc, MIMALLOC_PURGE_DECOMMITS=0 (Baton's), transparent huge pages off (Baton's)"
            );
            assert!(configured.refused().is_none());
        }
        // A value that is neither mimalloc's default nor Baton's, so the
        // option number is shown to be the one its variable is read into.
        "operator" => {
            assert_eq!(before, [3], "mimalloc read the operator's value");
            assert_eq!(configured.settings, [Chosen::ByOperator]);
            assert_eq!(after, [3], "and it is kept");
            assert_eq!(
                *configured.huge_pages.as_ref().expect("prctl answers"),
                Chosen::ByOperator
            );
            assert_eq!(
                huge_pages_off, huge_pages_were_off,
                "MIMALLOC_ALLOW_THP leaves them as they were"
            );
            assert_eq!(
                configured.to_string(),
                "mimalloc, MIMALLOC_PURGE_DECOMMITS from the environment, MIMALLOC_ALLOW_THP from the environment"
            );
        }
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn without_the_operators_settings_baton_s_are_made() {
    assert_ne!(
        SETTINGS.map(|s| s.default),
        SETTINGS.map(|s| s.value),
        "each setting changes a default"
    );
    in_a_child("defaults", &[]);
}

#[test]
fn the_operators_settings_are_kept() {
    in_a_child(
        "operator",
        &[
            ("MIMALLOC_PURGE_DECOMMITS", "3"),
            (HUGE_PAGES_VARIABLE, "1"),
        ],
    );
}

#[test]
fn a_refusal_is_told_with_the_kernel_s_reason() {
    let configured = baton_alloc::Configured {
        settings: [Chosen::ByBaton],
        huge_pages: Err(std::io::Error::from_raw_os_error(1)),
    };
    assert!(configured.refused().is_some());
    let told = configured.to_string();
    assert!(
        told.ends_with(
            "transparent huge pages as the kernel had them (it refused to turn them off: Operation not permitted (os error 1))"
        ),
        "{told}"
    );
}
