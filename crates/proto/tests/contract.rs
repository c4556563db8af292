//! The `v1` contract may only grow. This test compares the descriptor set
//! compiled from `proto/` with the committed baseline and fails on any
//! breaking change. After an additive change, refresh the baseline with
//! `scripts/update-descriptor.sh` (it refuses while anything is breaking).

use std::path::PathBuf;

use baton_proto::{DESCRIPTOR_SET, compat};
use prost::Message;
use prost_reflect::DescriptorPool;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Type};

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/descriptor/baton-v1.binpb")
}

fn current() -> DescriptorPool {
    DescriptorPool::decode(DESCRIPTOR_SET).unwrap()
}

#[test]
fn v1_has_no_breaking_change_against_the_committed_baseline() {
    let path = baseline_path();
    if std::env::var_os("BATON_UPDATE_DESCRIPTOR").is_some() {
        if let Ok(bytes) = std::fs::read(&path) {
            let diff = compat::diff(
                &DescriptorPool::decode(bytes.as_slice()).unwrap(),
                &current(),
                "baton.",
            );
            assert!(
                diff.breaking.is_empty(),
                "refusing to record a breaking change:\n{}",
                diff.breaking.join("\n")
            );
        }
        std::fs::write(&path, DESCRIPTOR_SET).unwrap();
        return;
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|error| {
        panic!("the committed contract baseline {} is missing ({error}); run scripts/update-descriptor.sh", path.display())
    });
    let baseline = DescriptorPool::decode(bytes.as_slice()).expect("the baseline decodes");
    let diff = compat::diff(&baseline, &current(), "baton.");
    assert!(
        diff.breaking.is_empty(),
        "breaking change to the v1 contract (make a v2 package instead):\n  {}",
        diff.breaking.join("\n  ")
    );
    assert!(
        diff.additions.is_empty(),
        "the v1 contract grew; review the additions and record them with scripts/update-descriptor.sh:\n  {}",
        diff.additions.join("\n  ")
    );
}

/// A descriptor set like the current one but changed by `edit`.
fn edited(edit: impl FnOnce(&mut FileDescriptorSet)) -> DescriptorPool {
    let mut set = FileDescriptorSet::decode(DESCRIPTOR_SET).unwrap();
    edit(&mut set);
    DescriptorPool::from_file_descriptor_set(set).unwrap()
}

fn message_mut<'a>(
    set: &'a mut FileDescriptorSet,
    file: &str,
    name: &str,
) -> &'a mut prost_types::DescriptorProto {
    set.file
        .iter_mut()
        .find(|f| f.name() == file)
        .unwrap()
        .message_type
        .iter_mut()
        .find(|m| m.name() == name)
        .unwrap()
}

#[test]
fn detects_a_removed_field() {
    let changed = edited(|set| {
        message_mut(set, "baton/events/v1/types.proto", "Location")
            .field
            .retain(|f| f.name() != "bed");
    });
    let diff = compat::diff(&current(), &changed, "baton.");
    assert_eq!(
        diff.breaking,
        vec![
            "field baton.events.v1.Location.bed = 3 was removed (reserve the number instead of reusing it)"
        ]
    );
}

#[test]
fn detects_a_changed_field_type_and_number() {
    let changed = edited(|set| {
        let location = message_mut(set, "baton/events/v1/types.proto", "Location");
        location.field[0].set_type(Type::Int64);
        location.field[1].number = Some(42);
    });
    let diff = compat::diff(&current(), &changed, "baton.");
    assert!(
        diff.breaking
            .iter()
            .any(|b| b.contains("point_of_care = 1 changed type from string to int64")),
        "{diff:?}"
    );
    assert!(
        diff.breaking
            .iter()
            .any(|b| b.contains("room = 2 was removed")),
        "{diff:?}"
    );
    assert!(
        diff.additions.iter().any(|a| a.contains("room = 42")),
        "{diff:?}"
    );
}

#[test]
fn detects_a_renumbered_enum_value_and_a_removed_method() {
    let changed = edited(|set| {
        let types = set
            .file
            .iter_mut()
            .find(|f| f.name() == "baton/events/v1/types.proto")
            .unwrap();
        let class = types
            .enum_type
            .iter_mut()
            .find(|e| e.name() == "PatientClass")
            .unwrap();
        class.value[1].number = Some(99);
        let query = set
            .file
            .iter_mut()
            .find(|f| f.name() == "baton/query/v1/query.proto")
            .unwrap();
        query.service[0].method.retain(|m| m.name() != "ListCohort");
    });
    let diff = compat::diff(&current(), &changed, "baton.");
    assert!(
        diff.breaking
            .iter()
            .any(|b| b.contains("PATIENT_CLASS_INPATIENT = 1 was removed")),
        "{diff:?}"
    );
    assert!(
        diff.breaking
            .iter()
            .any(|b| b.contains("method baton.query.v1.CareStateQuery.ListCohort was removed")),
        "{diff:?}"
    );
}

#[test]
fn additions_are_not_breaking() {
    let changed = edited(|set| {
        let location = message_mut(set, "baton/events/v1/types.proto", "Location");
        let mut extra = location.field[0].clone();
        extra.name = Some("floor".into());
        extra.json_name = Some("floor".into());
        extra.number = Some(6);
        location.field.push(extra);
    });
    let diff = compat::diff(&current(), &changed, "baton.");
    assert!(diff.breaking.is_empty(), "{diff:?}");
    assert_eq!(
        diff.additions,
        vec!["field baton.events.v1.Location.floor = 6"]
    );
}
