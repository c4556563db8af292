//! Contract evolution check: compares the current descriptor set with the
//! committed baseline (`proto/descriptor/baton-v1.binpb`) and lists what a
//! `v1` consumer would be broken by.
//!
//! Breaking: a message, field, enum value, service or method that is gone;
//! a field whose number, type, cardinality or oneof changed; a method whose
//! request, response or streaming changed. Additions are allowed, and listed
//! so the baseline can be refreshed to track them.

use prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    ServiceDescriptor,
};

/// What changed between a baseline and the current contract.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContractDiff {
    /// Changes that break existing producers or consumers.
    pub breaking: Vec<String>,
    /// New messages, fields, enum values, services and methods.
    pub additions: Vec<String>,
}

/// Compares every message, enum and service in packages whose name starts
/// with `package_prefix` (e.g. `baton.`) and ends with `.v1`.
pub fn diff(
    baseline: &DescriptorPool,
    current: &DescriptorPool,
    package_prefix: &str,
) -> ContractDiff {
    let mut diff = ContractDiff::default();
    let in_scope = |full_name: &str| full_name.starts_with(package_prefix);

    for old in baseline.all_messages().filter(|m| in_scope(m.full_name())) {
        match current.get_message_by_name(old.full_name()) {
            Some(new) => diff_message(&old, &new, &mut diff),
            None => diff
                .breaking
                .push(format!("message {} was removed", old.full_name())),
        }
    }
    for new in current.all_messages().filter(|m| in_scope(m.full_name())) {
        if baseline.get_message_by_name(new.full_name()).is_none() {
            diff.additions.push(format!("message {}", new.full_name()));
        }
    }

    for old in baseline.all_enums().filter(|e| in_scope(e.full_name())) {
        match current.get_enum_by_name(old.full_name()) {
            Some(new) => diff_enum(&old, &new, &mut diff),
            None => diff
                .breaking
                .push(format!("enum {} was removed", old.full_name())),
        }
    }
    for new in current.all_enums().filter(|e| in_scope(e.full_name())) {
        if baseline.get_enum_by_name(new.full_name()).is_none() {
            diff.additions.push(format!("enum {}", new.full_name()));
        }
    }

    for old in baseline.services().filter(|s| in_scope(s.full_name())) {
        match current.get_service_by_name(old.full_name()) {
            Some(new) => diff_service(&old, &new, &mut diff),
            None => diff
                .breaking
                .push(format!("service {} was removed", old.full_name())),
        }
    }
    for new in current.services().filter(|s| in_scope(s.full_name())) {
        if baseline.get_service_by_name(new.full_name()).is_none() {
            diff.additions.push(format!("service {}", new.full_name()));
        }
    }
    diff
}

fn diff_message(old: &MessageDescriptor, new: &MessageDescriptor, diff: &mut ContractDiff) {
    for old_field in old.fields() {
        let Some(new_field) = new.get_field(old_field.number()) else {
            diff.breaking.push(format!(
                "field {} = {} was removed (reserve the number instead of reusing it)",
                old_field.full_name(),
                old_field.number()
            ));
            continue;
        };
        diff_field(&old_field, &new_field, diff);
    }
    for new_field in new.fields() {
        if old.get_field(new_field.number()).is_none() {
            diff.additions.push(format!(
                "field {} = {}",
                new_field.full_name(),
                new_field.number()
            ));
        }
    }
}

fn diff_field(old: &FieldDescriptor, new: &FieldDescriptor, diff: &mut ContractDiff) {
    let place = format!("field {} = {}", old.full_name(), old.number());
    if old.name() != new.name() {
        // The JSON mapping uses the name, so a rename breaks JSON producers.
        diff.breaking
            .push(format!("{place} was renamed to {}", new.name()));
    }
    if kind_name(&old.kind()) != kind_name(&new.kind()) {
        diff.breaking.push(format!(
            "{place} changed type from {} to {}",
            kind_name(&old.kind()),
            kind_name(&new.kind())
        ));
    }
    if cardinality_name(old) != cardinality_name(new) {
        diff.breaking.push(format!(
            "{place} changed from {} to {}",
            cardinality_name(old),
            cardinality_name(new)
        ));
    }
    let oneof_name =
        |field: &FieldDescriptor| field.containing_oneof().map(|o| o.name().to_owned());
    if oneof_name(old) != oneof_name(new) {
        diff.breaking.push(format!(
            "{place} moved from oneof {:?} to oneof {:?}",
            oneof_name(old),
            oneof_name(new)
        ));
    }
}

fn diff_enum(old: &EnumDescriptor, new: &EnumDescriptor, diff: &mut ContractDiff) {
    for old_value in old.values() {
        match new.get_value(old_value.number()) {
            None => diff.breaking.push(format!(
                "enum value {} = {} was removed",
                old_value.full_name(),
                old_value.number()
            )),
            Some(new_value) if new_value.name() != old_value.name() => diff.breaking.push(format!(
                "enum value {} = {} was renamed to {}",
                old_value.full_name(),
                old_value.number(),
                new_value.name()
            )),
            Some(_) => {}
        }
    }
    for new_value in new.values() {
        if old.get_value(new_value.number()).is_none() {
            diff.additions.push(format!(
                "enum value {} = {}",
                new_value.full_name(),
                new_value.number()
            ));
        }
    }
}

fn diff_service(old: &ServiceDescriptor, new: &ServiceDescriptor, diff: &mut ContractDiff) {
    for old_method in old.methods() {
        let Some(new_method) = new.methods().find(|m| m.name() == old_method.name()) else {
            diff.breaking
                .push(format!("method {} was removed", old_method.full_name()));
            continue;
        };
        let shape = |m: &prost_reflect::MethodDescriptor| {
            (
                m.input().full_name().to_owned(),
                m.output().full_name().to_owned(),
                m.is_client_streaming(),
                m.is_server_streaming(),
            )
        };
        if shape(&old_method) != shape(&new_method) {
            diff.breaking.push(format!(
                "method {} changed its request, response or streaming",
                old_method.full_name()
            ));
        }
    }
    for new_method in new.methods() {
        if !old.methods().any(|m| m.name() == new_method.name()) {
            diff.additions
                .push(format!("method {}", new_method.full_name()));
        }
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(message) => message.full_name().to_owned(),
        Kind::Enum(enumeration) => enumeration.full_name().to_owned(),
        scalar => format!("{scalar:?}").to_lowercase(),
    }
}

fn cardinality_name(field: &FieldDescriptor) -> &'static str {
    if field.is_map() {
        "map"
    } else if field.is_list() {
        "repeated"
    } else {
        match field.cardinality() {
            Cardinality::Required => "required",
            _ if field.supports_presence()
                && field.containing_oneof().is_none()
                && !matches!(field.kind(), Kind::Message(_)) =>
            {
                "optional"
            }
            _ => "singular",
        }
    }
}
