//! The proto3 JSON mapping of Baton's messages (camelCase field names,
//! RFC 3339 timestamps, enum value names), driven by the descriptor set so
//! it follows the contract exactly.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::{DESCRIPTOR_SET, NamedMessage};

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("not a valid {message} in JSON: {source}")]
    Parse {
        message: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not render {message} as JSON: {reason}")]
    Render {
        message: &'static str,
        reason: String,
    },
    #[error("{message} is not in Baton's descriptor set")]
    UnknownMessage { message: &'static str },
}

/// Every Baton message and its imports, decoded once.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes were produced by build.rs from the same protox compile
        // that generated the Rust types, so they always decode.
        DescriptorPool::decode(DESCRIPTOR_SET).expect("build.rs writes a valid descriptor set")
    })
}

fn descriptor<M: NamedMessage>() -> Result<prost_reflect::MessageDescriptor, JsonError> {
    descriptor_pool()
        .get_message_by_name(M::FULL_NAME)
        .ok_or(JsonError::UnknownMessage {
            message: M::FULL_NAME,
        })
}

/// Parses one message from its proto3 JSON form. Unknown fields are refused,
/// so a misspelt field name is an error rather than silently dropped.
pub fn from_json<M: NamedMessage>(text: &str) -> Result<M, JsonError> {
    let parse_error = |source| JsonError::Parse {
        message: M::FULL_NAME,
        source,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize_with_options(
        descriptor::<M>()?,
        &mut deserializer,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(parse_error)?;
    deserializer.end().map_err(parse_error)?;
    dynamic
        .transcode_to::<M>()
        .map_err(|error| JsonError::Render {
            message: M::FULL_NAME,
            reason: error.to_string(),
        })
}

/// Renders a message as proto3 JSON; fields at their default are left out.
pub fn to_json_value<M: NamedMessage>(message: &M) -> Result<serde_json::Value, JsonError> {
    let render_error = |reason: String| JsonError::Render {
        message: M::FULL_NAME,
        reason,
    };
    let mut dynamic = DynamicMessage::new(descriptor::<M>()?);
    dynamic
        .transcode_from(message)
        .map_err(|error| render_error(error.to_string()))?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|error| render_error(error.to_string()))
}

/// As [`to_json_value`], as one line of text (for JSON Lines output).
pub fn to_json<M: NamedMessage>(message: &M) -> Result<String, JsonError> {
    Ok(to_json_value(message)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::v1::{CareEvent, FrailtyAssessed, PatientIdentity, care_event::Payload};

    #[test]
    fn round_trips_an_event_through_json() {
        let event = CareEvent {
            event_id: "0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f".into(),
            patient: Some(PatientIdentity {
                nhs_number: "9434765919".into(),
                ..Default::default()
            }),
            occurred_at: Some(crate::timestamp_from_unix_seconds(1_700_000_000)),
            payload: Some(Payload::FrailtyAssessed(FrailtyAssessed {
                clinical_frailty_scale: 6,
                assessor: "Dr Okafor".into(),
            })),
            ..Default::default()
        };
        let text = to_json(&event).unwrap();
        assert!(
            text.contains(r#""occurredAt":"2023-11-14T22:13:20Z""#),
            "{text}"
        );
        assert!(text.contains(r#""frailtyAssessed""#), "{text}");
        assert_eq!(from_json::<CareEvent>(&text).unwrap(), event);
    }

    #[test]
    fn refuses_unknown_fields_naming_them() {
        let error = from_json::<CareEvent>(r#"{"eventID": "x"}"#).unwrap_err();
        assert!(error.to_string().contains("eventID"), "{error}");
    }

    #[test]
    fn refuses_trailing_garbage() {
        assert!(from_json::<CareEvent>(r#"{"eventId": "x"} {"#).is_err());
    }
}
