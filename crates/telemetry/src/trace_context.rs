//! The W3C trace context that ties one trace together across processes.
//!
//! A [`TraceParent`] travels as the `traceparent` header of a log record
//! (ingest → projector) and of a gRPC request (client → query), so the spans
//! each process exports join the caller's trace. Parsing follows the W3C
//! Trace Context recommendation: version `00` exactly, later versions by
//! their first 55 characters, `ff` never.

use std::fmt;
use std::str::FromStr;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, SetParentError};

/// Name of the header (Kafka record header, gRPC metadata, HTTP header) that
/// carries a [`TraceParent`].
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The form a `traceparent` value must take, quoted in every parse error.
const EXPECTED_FORM: &str =
    "00-<32 lowercase hex trace id>-<16 lowercase hex span id>-<2 lowercase hex flags>";

/// Trace flag bit saying the caller records (samples) this trace.
const SAMPLED: u8 = 0x01;

/// Longest piece of a rejected value quoted in an error, so a hostile header
/// cannot flood the logs.
const QUOTED_VALUE_LIMIT: usize = 96;

/// A W3C `traceparent`: which trace a unit of work belongs to and which span
/// caused it.
///
/// Both ids are never all zeros (the W3C marks such ids invalid), so a value
/// of this type always names a real trace.
///
/// ```
/// use baton_telemetry::TraceParent;
///
/// let parent = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?;
/// assert!(parent.is_sampled());
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.span_id(), parent.span_id());
/// assert_eq!(parent.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// # Ok::<(), baton_telemetry::InvalidTraceParent>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was rejected; the W3C says to ignore such a
/// value and start a new trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {reason}; expected \"{EXPECTED_FORM}\"")]
pub struct InvalidTraceParent {
    value: String,
    reason: String,
}

impl InvalidTraceParent {
    fn new(value: &[u8], reason: impl Into<String>) -> Self {
        let mut value = String::from_utf8_lossy(value).into_owned();
        if let Some((cut, _)) = value.char_indices().nth(QUOTED_VALUE_LIMIT) {
            value.truncate(cut);
            value.push('…');
        }
        Self {
            value,
            reason: reason.into(),
        }
    }

    /// What was wrong with the value, without the value itself.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl TraceParent {
    /// Length of a version-00 `traceparent` value.
    pub const LEN: usize = 55;

    /// A trace context from its parts, refusing all-zero ids.
    pub fn new(
        trace_id: [u8; 16],
        span_id: [u8; 8],
        flags: u8,
    ) -> Result<Self, InvalidTraceParent> {
        let parent = Self {
            trace_id,
            span_id,
            flags,
        };
        if trace_id == [0; 16] {
            return Err(InvalidTraceParent::new(
                &parent.to_header_bytes(),
                "trace id is all zeros",
            ));
        }
        if span_id == [0; 8] {
            return Err(InvalidTraceParent::new(
                &parent.to_header_bytes(),
                "span id is all zeros",
            ));
        }
        Ok(parent)
    }

    /// Reads a `traceparent` header value (surrounding spaces and tabs are
    /// allowed, as in HTTP).
    ///
    /// Version `00` must be exactly 55 characters. A later version is read by
    /// its first 55 characters, keeping only the sampled flag, as the W3C
    /// asks; [`Display`](fmt::Display) then writes it back as version `00`.
    pub fn parse(value: &[u8]) -> Result<Self, InvalidTraceParent> {
        let text = trim_optional_whitespace(value);
        let invalid = |reason: String| InvalidTraceParent::new(value, reason);

        let Some(version) = text.get(..2) else {
            return Err(invalid(format!(
                "{} characters is too short for a version",
                text.len()
            )));
        };
        let [version_byte] = decode_hex::<1>(version).ok_or_else(|| {
            invalid(format!(
                "version {:?} is not 2 lowercase hex digits",
                String::from_utf8_lossy(version)
            ))
        })?;
        match version_byte {
            0xff => return Err(invalid("version ff is forbidden".to_owned())),
            0x00 if text.len() != Self::LEN => {
                return Err(invalid(format!(
                    "version 00 is {} characters long, found {}",
                    Self::LEN,
                    text.len()
                )));
            }
            _ if text.len() < Self::LEN => {
                return Err(invalid(format!(
                    "version {:02x} needs at least {} characters, found {}",
                    version_byte,
                    Self::LEN,
                    text.len()
                )));
            }
            _ if text.len() > Self::LEN && text[Self::LEN] != b'-' => {
                return Err(invalid(format!(
                    "version {version_byte:02x} must have '-' after the trace flags, found {:?}",
                    char::from(text[Self::LEN])
                )));
            }
            _ => {}
        }

        for position in [2, 35, 52] {
            if text[position] != b'-' {
                return Err(invalid(format!(
                    "expected '-' at position {position}, found {:?}",
                    char::from(text[position])
                )));
            }
        }
        let field = |range: std::ops::Range<usize>, name: &str, digits: usize| {
            invalid(format!(
                "{name} {:?} is not {digits} lowercase hex digits",
                String::from_utf8_lossy(&text[range])
            ))
        };
        let trace_id =
            decode_hex::<16>(&text[3..35]).ok_or_else(|| field(3..35, "trace id", 32))?;
        let span_id = decode_hex::<8>(&text[36..52]).ok_or_else(|| field(36..52, "span id", 16))?;
        let [flags] =
            decode_hex::<1>(&text[53..55]).ok_or_else(|| field(53..55, "trace flags", 2))?;
        let flags = if version_byte == 0x00 {
            flags
        } else {
            flags & SAMPLED
        };
        if trace_id == [0; 16] {
            return Err(invalid("trace id is all zeros".to_owned()));
        }
        if span_id == [0; 8] {
            return Err(invalid("span id is all zeros".to_owned()));
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The start of a new trace: random trace and span ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_nonzero_u128().to_be_bytes(),
            span_id: random_nonzero_u64().to_be_bytes(),
            flags: SAMPLED,
        }
    }

    /// A context for work caused by this one: the same trace and flags, a new
    /// random span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_nonzero_u64().to_be_bytes(),
            ..*self
        }
    }

    /// The 16-byte id shared by every span of the trace.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the span that is the parent of the receiver's work.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags byte (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller records this trace; an exporting process follows
    /// its caller's decision.
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The header value as bytes, ready for a Kafka record header.
    pub fn to_header_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [b'-'; Self::LEN];
        out[..2].copy_from_slice(b"00");
        encode_hex(&self.trace_id, &mut out[3..35]);
        encode_hex(&self.span_id, &mut out[36..52]);
        encode_hex(&[self.flags], &mut out[53..55]);
        out
    }

    /// Reads the `traceparent` of an incoming gRPC request: `Ok(None)` when
    /// there is none, an error when it is malformed or repeated.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, InvalidTraceParent> {
        let mut values = metadata.get_all(TRACEPARENT_HEADER).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidTraceParent::new(
                first.as_bytes(),
                "more than one traceparent header",
            ));
        }
        Self::parse(first.as_bytes()).map(Some)
    }

    /// Reads the `traceparent` of an incoming HTTP request: `Ok(None)` when
    /// there is none, an error when it is malformed or repeated.
    pub fn from_http_headers(
        headers: &http::HeaderMap,
    ) -> Result<Option<Self>, InvalidTraceParent> {
        let mut values = headers.get_all(TRACEPARENT_HEADER).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidTraceParent::new(
                first.as_bytes(),
                "more than one traceparent header",
            ));
        }
        Self::parse(first.as_bytes()).map(Some)
    }

    /// Sets the `traceparent` of an outgoing gRPC request, replacing any.
    pub fn insert_into_metadata(&self, metadata: &mut MetadataMap) {
        // Hex digits and dashes are always valid ASCII metadata.
        if let Ok(value) = self.to_string().parse() {
            metadata.insert(TRACEPARENT_HEADER, value);
        }
    }

    /// Sets the `traceparent` of an outgoing HTTP request, replacing any.
    pub fn insert_into_http_headers(&self, headers: &mut http::HeaderMap) {
        // Hex digits and dashes are always a valid header value.
        if let Ok(value) = http::HeaderValue::from_bytes(&self.to_header_bytes()) {
            headers.insert(TRACEPARENT_HEADER, value);
        }
    }

    /// The OpenTelemetry form of this context, marked as coming from
    /// another process.
    fn to_remote_span_context(self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    fn from_span_context(context: &SpanContext) -> Option<Self> {
        if !context.is_valid() {
            return None;
        }
        Some(Self {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            flags: context.trace_flags().to_u8(),
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_header_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text.as_bytes())
    }
}

/// The trace context of the current `tracing` span, to pass on to the next
/// process (as a record header or request metadata).
///
/// `None` when trace export is not set up (no OpenTelemetry layer in the
/// current subscriber) or there is no current span.
pub fn current_traceparent() -> Option<TraceParent> {
    let context = tracing::Span::current().context();
    TraceParent::from_span_context(context.span().span_context())
}

/// Makes `parent`, received from another process, the OpenTelemetry parent of
/// `span`, so the spans exported here join the caller's trace.
///
/// Call it before the span is first entered: a span that has started keeps
/// its parent. Does nothing when trace export is not set up.
pub fn set_parent(span: &tracing::Span, parent: &TraceParent) {
    let context =
        opentelemetry::Context::new().with_remote_span_context(parent.to_remote_span_context());
    match span.set_parent(context) {
        Ok(()) | Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
        Err(error) => {
            tracing::debug!(%parent, %error, "traceparent not applied: set it before entering the span");
        }
    }
}

/// Strips HTTP's optional whitespace (spaces and tabs) from both ends.
fn trim_optional_whitespace(mut text: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = text {
        text = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = text {
        text = rest;
    }
    text
}

fn random_nonzero_u128() -> u128 {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn random_nonzero_u64() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// Decodes exactly `2 * N` lowercase hex digits; `None` for anything else.
fn decode_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn digit(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACE_ID: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

    fn rejection(value: &str) -> String {
        TraceParent::parse(value.as_bytes())
            .expect_err(value)
            .to_string()
    }

    #[test]
    fn a_version_00_value_parses_into_its_ids_and_flags() {
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parent.trace_id(), TRACE_ID);
        assert_eq!(parent.span_id(), SPAN_ID);
        assert_eq!(parent.flags(), 0x01);
        assert!(parent.is_sampled());
        assert_eq!(parent, VALID.parse().unwrap());
    }

    #[test]
    fn formatting_gives_back_the_header_text() {
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parent.to_string(), VALID);
        assert_eq!(&parent.to_header_bytes()[..], VALID.as_bytes());
        assert_eq!(format!("{parent:?}"), format!("TraceParent({VALID})"));
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let parent = TraceParent::parse(unsampled.as_bytes()).unwrap();
        assert!(!parent.is_sampled());
        assert_eq!(parent.to_string(), unsampled);
    }

    #[test]
    fn unknown_flag_bits_of_version_00_are_kept() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09";
        let parent = TraceParent::parse(value.as_bytes()).unwrap();
        assert_eq!(parent.flags(), 0x09);
        assert_eq!(parent.to_string(), value);
    }

    #[test]
    fn surrounding_spaces_and_tabs_are_ignored() {
        let parent = TraceParent::parse(format!(" \t{VALID}\t ").as_bytes()).unwrap();
        assert_eq!(parent.to_string(), VALID);
    }

    #[test]
    fn a_later_version_is_read_by_its_first_55_characters() {
        let parent = TraceParent::parse(
            b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds",
        )
        .unwrap();
        assert_eq!(parent.trace_id(), TRACE_ID);
        assert_eq!(parent.span_id(), SPAN_ID);
        assert_eq!(parent.flags(), 0x01, "only the sampled bit is understood");
        assert_eq!(parent.to_string(), VALID, "passed on as version 00");

        let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceParent::parse(exact.as_bytes()).unwrap().is_sampled());
    }

    #[test]
    fn a_later_version_needs_a_dash_after_the_flags() {
        let error = rejection("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what");
        assert!(error.contains("'-' after the trace flags"), "{error}");
    }

    #[test]
    fn version_ff_is_rejected() {
        let error = rejection("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(error.contains("version ff is forbidden"), "{error}");
    }

    #[test]
    fn version_00_must_be_exactly_55_characters() {
        let error = rejection(&format!("{VALID}-extra"));
        assert!(
            error.contains("version 00 is 55 characters long, found 61"),
            "{error}"
        );
        let error = rejection(&VALID[..54]);
        assert!(error.contains("found 54"), "{error}");
        let error = rejection("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7");
        assert!(
            error.contains("at least 55 characters, found 52"),
            "{error}"
        );
        let error = rejection("0");
        assert!(error.contains("too short"), "{error}");
    }

    #[test]
    fn all_zero_ids_are_rejected() {
        let error = rejection("00-00000000000000000000000000000000-00f067aa0ba902b7-01");
        assert!(error.contains("trace id is all zeros"), "{error}");
        let error = rejection("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01");
        assert!(error.contains("span id is all zeros"), "{error}");
        let error = TraceParent::new([0; 16], SPAN_ID, 1).unwrap_err();
        assert_eq!(error.reason(), "trace id is all zeros");
        let error = TraceParent::new(TRACE_ID, [0; 8], 1).unwrap_err();
        assert_eq!(error.reason(), "span id is all zeros");
        assert_eq!(
            TraceParent::new(TRACE_ID, SPAN_ID, 1).unwrap().to_string(),
            VALID
        );
    }

    #[test]
    fn uppercase_and_other_non_hex_digits_are_rejected() {
        let error = rejection("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
        assert!(
            error.contains(
                "trace id \"4BF92F3577B34DA6A3CE929D0E0E4736\" is not 32 lowercase hex digits"
            ),
            "{error}"
        );
        let error = rejection("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01");
        assert!(error.contains("span id \"00F067AA0BA902B7\""), "{error}");
        let error = rejection("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g");
        assert!(error.contains("trace flags \"0g\""), "{error}");
        let error = rejection("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(
            error.contains("version \"0A\" is not 2 lowercase hex digits"),
            "{error}"
        );
    }

    #[test]
    fn misplaced_separators_are_rejected() {
        let error = rejection("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(
            error.contains("expected '-' at position 2, found '_'"),
            "{error}"
        );
        let error = rejection("00-4bf92f3577b34da6a3ce929d0e0e473600-f067aa0ba902b7-01");
        assert!(error.contains("position 35"), "{error}");
    }

    #[test]
    fn errors_name_the_value_and_the_expected_form() {
        let error = rejection("garbage that is not a traceparent at all, no sir, none");
        assert!(
            error.starts_with("invalid traceparent \"garbage that"),
            "{error}"
        );
        assert!(error.contains(EXPECTED_FORM), "{error}");
        assert_eq!(error, error.to_lowercase(), "messages are lowercase");

        let long = "x".repeat(10_000);
        let error = rejection(&long);
        assert!(error.len() < 400, "a long value is cut short: {error}");

        let error = TraceParent::parse(b"\xff\xfe").unwrap_err().to_string();
        assert!(error.contains("invalid traceparent"), "{error}");
    }

    #[test]
    fn a_new_root_is_sampled_with_fresh_ids() {
        let first = TraceParent::new_root();
        let second = TraceParent::new_root();
        assert!(first.is_sampled());
        assert_ne!(first.trace_id(), second.trace_id());
        assert_ne!(first.trace_id(), [0; 16]);
        assert_ne!(first.span_id(), [0; 8]);
        assert_eq!(TraceParent::parse(&first.to_header_bytes()).unwrap(), first);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_span() {
        let parent =
            TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_eq!(child.flags(), parent.flags());
        assert_ne!(child.span_id(), parent.span_id());
        assert_ne!(child.span_id(), [0; 8]);
    }

    #[test]
    fn grpc_metadata_carries_the_traceparent_both_ways() {
        let parent = TraceParent::new_root();
        let mut metadata = MetadataMap::new();
        assert_eq!(TraceParent::from_metadata(&metadata), Ok(None));
        parent.insert_into_metadata(&mut metadata);
        assert_eq!(TraceParent::from_metadata(&metadata), Ok(Some(parent)));

        metadata.append(TRACEPARENT_HEADER, VALID.parse().unwrap());
        let error = TraceParent::from_metadata(&metadata).unwrap_err();
        assert_eq!(error.reason(), "more than one traceparent header");

        let mut metadata = MetadataMap::new();
        metadata.insert(TRACEPARENT_HEADER, "00-nonsense".parse().unwrap());
        let error = TraceParent::from_metadata(&metadata).unwrap_err();
        assert!(error.to_string().contains("\"00-nonsense\""), "{error}");
    }

    #[test]
    fn http_headers_carry_the_traceparent_both_ways() {
        let parent = TraceParent::new_root();
        let mut headers = http::HeaderMap::new();
        assert_eq!(TraceParent::from_http_headers(&headers), Ok(None));
        parent.insert_into_http_headers(&mut headers);
        assert_eq!(headers[TRACEPARENT_HEADER], parent.to_string().as_str());
        assert_eq!(TraceParent::from_http_headers(&headers), Ok(Some(parent)));
    }

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_current_context() {
        let span = tracing::info_span!("no layer");
        set_parent(&span, &TraceParent::new_root());
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }
}
