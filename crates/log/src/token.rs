//! Consistency tokens: read-your-writes across services.
//!
//! A publisher gets a token naming the last offset it wrote in each
//! partition; a query carrying the token waits until the projection has
//! applied at least those offsets, so the caller sees its own write even
//! though the write and the read went to different processes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::{LogError, Position, Result};

/// The version tag of the text form, so the format can evolve without
/// misreading old tokens held by clients.
const TEXT_VERSION: &str = "v1:";

/// For each partition, the offset of the last record a write produced.
///
/// Text form `v1:0=12,3=40` (partitions ascending): opaque to clients but
/// readable in a log line. The empty token (`v1:`) is always satisfied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConsistencyToken {
    last_written: BTreeMap<u32, u64>,
}

impl ConsistencyToken {
    /// A token that every projection satisfies (nothing was written).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Keeps the highest offset per partition: waiting for it implies waiting
    /// for every earlier record of that partition.
    pub fn from_positions(positions: &[Position]) -> Self {
        let mut token = Self::empty();
        for &position in positions {
            token.include(position);
        }
        token
    }

    /// Adds one written position, keeping the maximum offset per partition.
    pub fn include(&mut self, position: Position) {
        self.last_written
            .entry(position.partition)
            .and_modify(|offset| *offset = (*offset).max(position.offset))
            .or_insert(position.offset);
    }

    /// Combines tokens of several writes, so a client that published twice
    /// can wait for both with one token.
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for (&partition, &offset) in &other.last_written {
            self.include(Position::new(partition, offset));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.last_written.is_empty()
    }

    /// The last written offset per partition.
    pub fn last_written(&self) -> &BTreeMap<u32, u64> {
        &self.last_written
    }

    /// The last written position of each partition, partitions ascending.
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.last_written
            .iter()
            .map(|(&partition, &offset)| Position::new(partition, offset))
    }

    /// `applied_next` maps each partition to the next offset the projection
    /// will apply (everything below it is applied). Satisfied when every
    /// partition of the token is applied past its offset; a partition missing
    /// from `applied_next` has applied nothing.
    pub fn is_satisfied_by(&self, applied_next: &BTreeMap<u32, u64>) -> bool {
        self.last_written.iter().all(|(partition, &offset)| {
            applied_next
                .get(partition)
                .is_some_and(|&next| next > offset)
        })
    }
}

impl FromIterator<Position> for ConsistencyToken {
    fn from_iter<I: IntoIterator<Item = Position>>(positions: I) -> Self {
        let mut token = Self::empty();
        for position in positions {
            token.include(position);
        }
        token
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TEXT_VERSION)?;
        for (index, (partition, offset)) in self.last_written.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{partition}={offset}")?;
        }
        Ok(())
    }
}

impl FromStr for ConsistencyToken {
    type Err = LogError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: String| LogError::InvalidToken {
            token: text.to_owned(),
            reason,
        };
        let Some(body) = text.strip_prefix(TEXT_VERSION) else {
            let reason = match text.split_once(':') {
                Some((version, _)) => {
                    format!("unsupported version {version:?}, only \"v1\" is known")
                }
                None => "missing the \"v1:\" version prefix".to_owned(),
            };
            return Err(invalid(reason));
        };
        let mut last_written = BTreeMap::new();
        if body.is_empty() {
            return Ok(Self { last_written });
        }
        for (index, entry) in body.split(',').enumerate() {
            let (partition, offset) = entry.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "entry {index} ({entry:?}) is not of the form <partition>=<offset>"
                ))
            })?;
            let partition: u32 = parse_number(partition).ok_or_else(|| {
                invalid(format!(
                    "entry {index}: partition {partition:?} is not a non-negative 32-bit integer"
                ))
            })?;
            let offset: u64 = parse_number(offset).ok_or_else(|| {
                invalid(format!(
                    "entry {index}: offset {offset:?} is not a non-negative 64-bit integer"
                ))
            })?;
            if last_written.insert(partition, offset).is_some() {
                return Err(invalid(format!(
                    "partition {partition} appears more than once"
                )));
            }
        }
        Ok(Self { last_written })
    }
}

/// Accepts ASCII digits only: `str::parse` would also take a leading `+`,
/// which would make two spellings of one token.
fn parse_number<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn applied(pairs: &[(u32, u64)]) -> BTreeMap<u32, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn from_positions_keeps_the_max_offset_per_partition() {
        let token = ConsistencyToken::from_positions(&[
            Position::new(3, 40),
            Position::new(0, 12),
            Position::new(3, 7),
            Position::new(0, 2),
        ]);
        assert_eq!(token.to_string(), "v1:0=12,3=40");
        assert_eq!(token.last_written(), &applied(&[(0, 12), (3, 40)]));
    }

    #[test]
    fn text_form_round_trips() {
        for text in [
            "v1:",
            "v1:0=0",
            "v1:0=12,3=40",
            "v1:4294967295=18446744073709551615",
        ] {
            let token: ConsistencyToken = text.parse().unwrap();
            assert_eq!(token.to_string(), text);
        }
        assert!("v1:".parse::<ConsistencyToken>().unwrap().is_empty());
    }

    #[test]
    fn bad_forms_are_rejected_with_the_reason() {
        let cases = [
            ("", "missing the \"v1:\" version prefix"),
            ("0=12", "missing the \"v1:\" version prefix"),
            ("v2:0=1", "unsupported version \"v2\""),
            (
                "v1:0",
                "entry 0 (\"0\") is not of the form <partition>=<offset>",
            ),
            ("v1:0=1,", "entry 1 (\"\") is not of the form"),
            ("v1:0=1,,2=3", "entry 1 (\"\") is not of the form"),
            (
                "v1:x=1",
                "partition \"x\" is not a non-negative 32-bit integer",
            ),
            ("v1:-1=1", "partition \"-1\""),
            ("v1:+1=1", "partition \"+1\""),
            ("v1:4294967296=1", "partition \"4294967296\""),
            ("v1:0=", "offset \"\" is not a non-negative 64-bit integer"),
            ("v1:0=1.5", "offset \"1.5\""),
            ("v1: 0=1", "partition \" 0\""),
            ("v1:1=2,1=3", "partition 1 appears more than once"),
        ];
        for (text, reason) in cases {
            let error = text.parse::<ConsistencyToken>().unwrap_err();
            let LogError::InvalidToken { token, .. } = &error else {
                panic!("{text:?} gave {error:?}");
            };
            assert_eq!(token, text);
            let message = error.to_string();
            assert!(message.contains(reason), "{text:?}: {message}");
            assert!(message.contains("expected \"v1:\""), "{message}");
        }
    }

    #[test]
    fn satisfied_once_every_partition_is_applied_past_its_offset() {
        let token: ConsistencyToken = "v1:0=12,3=40".parse().unwrap();
        assert!(!token.is_satisfied_by(&applied(&[])));
        assert!(!token.is_satisfied_by(&applied(&[(0, 13)])));
        assert!(!token.is_satisfied_by(&applied(&[(0, 12), (3, 41)])));
        assert!(!token.is_satisfied_by(&applied(&[(0, 13), (3, 40)])));
        assert!(token.is_satisfied_by(&applied(&[(0, 13), (3, 41)])));
        assert!(token.is_satisfied_by(&applied(&[(0, 100), (1, 0), (3, 41)])));
    }

    #[test]
    fn empty_token_is_always_satisfied() {
        assert!(ConsistencyToken::empty().is_satisfied_by(&applied(&[])));
        assert!(ConsistencyToken::empty().is_satisfied_by(&applied(&[(0, 0)])));
    }

    #[test]
    fn merge_keeps_the_max_of_both() {
        let mut token: ConsistencyToken = "v1:0=12,3=40".parse().unwrap();
        token.merge(&"v1:0=20,1=5,3=1".parse().unwrap());
        assert_eq!(token.to_string(), "v1:0=20,1=5,3=40");
    }

    proptest! {
        #[test]
        fn any_token_round_trips(pairs in proptest::collection::btree_map(any::<u32>(), any::<u64>(), 0..8)) {
            let token: ConsistencyToken = pairs.iter().map(|(&p, &o)| Position::new(p, o)).collect();
            let text = token.to_string();
            prop_assert_eq!(text.parse::<ConsistencyToken>().unwrap(), token);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".*") {
            let _ = text.parse::<ConsistencyToken>();
        }
    }
}
