//! Baton's protobuf contract, generated from `proto/` at build time.
//!
//! The `.proto` files are compiled by `protox` in pure Rust, so no system
//! `protoc` is needed. Besides the prost messages and tonic services this
//! crate carries the encoded descriptor set ([`DESCRIPTOR_SET`]), used for
//! gRPC reflection, the proto3 JSON mapping ([`json`]) and the contract check
//! that fails CI on a breaking change to `v1` ([`compat`]).
//!
//! # Layout
//! - [`events::v1`]: the `CareEvent` envelope and its payloads.
//! - [`state::v1`]: `PatientCareState`, what the projector folds events into.
//! - [`ingest::v1`], [`query::v1`]: the gRPC services.
//! - [`admin::v1`]: the operations API (replay, verify, lag, dead letters,
//!   the audit log).
//! - [`audit::v1`]: `AuditRecord`, what the audit log holds.
//!
//! ```
//! use baton_proto::events::v1::CareEvent;
//! let event: CareEvent = baton_proto::json::from_json(r#"{"eventId": "x"}"#).unwrap();
//! assert_eq!(event.event_id, "x");
//! ```

pub mod compat;
pub mod json;
mod time;

pub use time::{date, timestamp_from_unix_seconds};

/// The encoded `FileDescriptorSet` of every Baton proto file and its imports.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.binpb"));

/// Generated code is not ours to lint.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod events {
    pub mod v1 {
        tonic::include_proto!("baton.events.v1");
    }
}

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod state {
    pub mod v1 {
        tonic::include_proto!("baton.state.v1");
    }
}

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod ingest {
    pub mod v1 {
        tonic::include_proto!("baton.ingest.v1");
    }
}

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod query {
    pub mod v1 {
        tonic::include_proto!("baton.query.v1");
    }
}

/// Ties a generated message to its fully qualified protobuf name, for the
/// JSON mapping and for the content-type header of log records.
pub trait NamedMessage: prost::Message + Default {
    /// e.g. `baton.events.v1.CareEvent`.
    const FULL_NAME: &'static str;

    /// The content type naming this message in a log record's
    /// `content-type` header, so any consumer knows how to decode it.
    fn content_type() -> String {
        format!("application/x-protobuf; messageType={}", Self::FULL_NAME)
    }
}

macro_rules! named {
    ($($ty:path => $name:literal),* $(,)?) => {
        $(impl NamedMessage for $ty { const FULL_NAME: &'static str = $name; })*
    };
}

named! {
    events::v1::CareEvent => "baton.events.v1.CareEvent",
    state::v1::PatientCareState => "baton.state.v1.PatientCareState",
    state::v1::ProjectionProgress => "baton.state.v1.ProjectionProgress",
    ingest::v1::PublishRequest => "baton.ingest.v1.PublishRequest",
    ingest::v1::PublishResponse => "baton.ingest.v1.PublishResponse",
    query::v1::GetCareStateRequest => "baton.query.v1.GetCareStateRequest",
    query::v1::ListCohortRequest => "baton.query.v1.ListCohortRequest",
    query::v1::ListCohortResponse => "baton.query.v1.ListCohortResponse",
    query::v1::WatchCohortResponse => "baton.query.v1.WatchCohortResponse",
    query::v1::GetTimelineResponse => "baton.query.v1.GetTimelineResponse",
    query::v1::TimelineEntry => "baton.query.v1.TimelineEntry",
    query::v1::GetCareStateAsOfResponse => "baton.query.v1.GetCareStateAsOfResponse",
    admin::v1::GetPositionsResponse => "baton.admin.v1.GetPositionsResponse",
    admin::v1::GetDigestResponse => "baton.admin.v1.GetDigestResponse",
    admin::v1::ReplayStatus => "baton.admin.v1.ReplayStatus",
    admin::v1::VerifyReport => "baton.admin.v1.VerifyReport",
    admin::v1::DeadLetter => "baton.admin.v1.DeadLetter",
    admin::v1::ListDeadLettersResponse => "baton.admin.v1.ListDeadLettersResponse",
    admin::v1::RedriveDeadLettersResponse => "baton.admin.v1.RedriveDeadLettersResponse",
    admin::v1::PurgeDeadLettersResponse => "baton.admin.v1.PurgeDeadLettersResponse",
    admin::v1::RedriveRecord => "baton.admin.v1.RedriveRecord",
    admin::v1::ListAuditRecordsResponse => "baton.admin.v1.ListAuditRecordsResponse",
    audit::v1::AuditRecord => "baton.audit.v1.AuditRecord",
}

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("baton.admin.v1");
    }
}

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("baton.audit.v1");
    }
}
