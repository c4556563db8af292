//! Compiles `proto/` with protox (pure Rust: no system `protoc`), writes the
//! descriptor set for reflection and JSON, and generates prost/tonic code.

use std::{env, error::Error, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "baton/events/v1/types.proto",
    "baton/events/v1/events.proto",
    "baton/state/v1/state.proto",
    "baton/ingest/v1/ingest.proto",
    "baton/query/v1/query.proto",
    "baton/admin/v1/admin.proto",
    "baton/audit/v1/audit.proto",
];

/// The standard error details Baton's statuses carry (`google.rpc.BadRequest`
/// on INVALID_ARGUMENT), vendored from googleapis (Apache-2.0) so reflection
/// can describe them: a tool that speaks reflection then shows the field
/// violations instead of bytes. In the descriptor set only: tonic-types
/// has their Rust code.
const ERROR_DETAIL_FILES: &[&str] = &["google/rpc/status.proto", "google/rpc/error_details.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for folder in ["baton", "google"] {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(folder).display()
        );
    }

    let compile = |files: &[&str]| {
        protox::Compiler::new([&proto_root])?
            .include_imports(true)
            .include_source_info(true)
            .open_files(files)
            .map(|compiler| compiler.file_descriptor_set())
    };
    let descriptors = compile(FILES)?;
    let served = compile(&[FILES, ERROR_DETAIL_FILES].concat())?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("baton_descriptor.binpb"),
        served.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A whole state inside an event: boxed, so every CareEvent is not
        // the size of a PatientCareState.
        .boxed(".baton.events.v1.MergedRecordTransferred.retired_state")
        .boxed(".baton.events.v1.MovedVisitTransferred.encounter")
        // Sub-messages a state seldom holds, boxed so the state, each
        // encounter and each movement are not the size of them (Movement
        // 720 → 368 bytes, Encounter 1,128 → 536): the fold holds every
        // state it works on, and most of that memory was room for absent
        // messages. The encoding is the same.
        .boxed(".baton.state.v1.PatientCareState.death")
        .boxed(".baton.state.v1.PatientCareState.merged_into")
        .boxed(".baton.state.v1.Movement.discharge")
        .boxed(".baton.state.v1.Movement.from")
        .boxed(".baton.state.v1.Encounter.discharge")
        .boxed(".baton.state.v1.Encounter.planned_transfer")
        .boxed(".baton.state.v1.Encounter.medical_optimisation")
        .compile_fds(descriptors)?;
    Ok(())
}
