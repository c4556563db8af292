//! On-disk encoding of the embedded backend.
//!
//! Like Kafka, the log stores *record batches*: one sled entry holds the
//! consecutive records one append wrote to one partition (split so an entry
//! stays small). The entry key is the batch's base offset as a u64
//! big-endian, so range scans return batches in offset order, and reading
//! costs one sled lookup per batch rather than per record: that is what
//! lets a rebuild read millions of records a second. An entry value is
//!
//! ```text
//! u8      format version (1)
//! i64     append timestamp, ms since the Unix epoch, big-endian
//! varint  record count (at least 1); then per record, offsets base, base+1, ...:
//!         varint key length,   key bytes
//!         varint header count, then per header:
//!                varint name length, name bytes (UTF-8), varint value length, value bytes
//!         varint value length, value bytes
//! ```
//!
//! with LEB128 varints. Every length is checked against the bytes left and
//! the batch must end exactly where its last record ends, so damaged bytes
//! are reported instead of being decoded into a plausible but wrong record.

use crate::{Header, NewRecord, TopicSpec};

const BATCH_FORMAT_V1: u8 = 1;
const SPEC_FORMAT_V1: u8 = 1;
const SPEC_LEN: usize = 6;
/// Version byte and timestamp.
const BATCH_HEADER_LEN: usize = 1 + 8;

/// Batches close at this many encoded bytes (or one record, if larger), so
/// sled keeps entries inline rather than in separate blob files.
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Batches close at this many records, bounding the work of reading one
/// record from the middle of a batch.
pub(crate) const MAX_BATCH_RECORDS: usize = 1024;

/// A record as stored, without where it lives or when it was appended
/// (both belong to its batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: Vec<Header>,
}

pub(crate) fn offset_key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

pub(crate) fn decode_offset_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Encoded size of one record inside a batch.
pub(crate) fn record_len(record: &NewRecord) -> usize {
    let headers_len: usize = record
        .headers
        .iter()
        .map(|header| prefixed_len(header.name.len()) + prefixed_len(header.value.len()))
        .sum();
    prefixed_len(record.key.len())
        + varint_len(record.headers.len() as u64)
        + headers_len
        + prefixed_len(record.value.len())
}

/// Splits records (with their encoded lengths) into batch-sized runs; each
/// run holds at least one record.
pub(crate) fn batch_runs(lens: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, &len) in lens.iter().enumerate() {
        let full = index - start == MAX_BATCH_RECORDS || bytes + len > MAX_BATCH_BYTES;
        if index > start && full {
            runs.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += len;
    }
    if start < lens.len() {
        runs.push(start..lens.len());
    }
    runs
}

/// Encodes records as one batch; `body_len` is the sum of their
/// [`record_len`]s, so the buffer is allocated once.
pub(crate) fn encode_batch<'a>(
    records: impl ExactSizeIterator<Item = &'a NewRecord>,
    body_len: usize,
    timestamp_ms: i64,
) -> Vec<u8> {
    let count = records.len() as u64;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + varint_len(count) + body_len);
    out.push(BATCH_FORMAT_V1);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    put_varint(&mut out, count);
    for record in records {
        put_bytes(&mut out, &record.key);
        put_varint(&mut out, record.headers.len() as u64);
        for header in &record.headers {
            put_bytes(&mut out, header.name.as_bytes());
            put_bytes(&mut out, &header.value);
        }
        put_bytes(&mut out, &record.value);
    }
    out
}

/// Walks the records of one stored batch, in offset order. Errors say what
/// is wrong; the caller adds where (topic, partition, offset).
pub(crate) struct BatchDecoder<'a> {
    input: Input<'a>,
    timestamp_ms: i64,
    count: u64,
    decoded: u64,
}

impl<'a> BatchDecoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, String> {
        let mut input = Input { bytes, at: 0 };
        match input.byte("format version")? {
            BATCH_FORMAT_V1 => {}
            other => {
                return Err(format!(
                    "unknown batch format version {other}, expected {BATCH_FORMAT_V1}"
                ));
            }
        }
        let timestamp_ms = i64::from_be_bytes(input.array("timestamp")?);
        let count = input.varint("record count")?;
        // Each record takes at least three bytes (three empty lengths).
        if count == 0 || count > (input.remaining() / 3) as u64 {
            return Err(format!(
                "record count {count} does not fit the remaining {} bytes",
                input.remaining()
            ));
        }
        Ok(Self {
            input,
            timestamp_ms,
            count,
            decoded: 0,
        })
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// Steps over the next record without copying it, for reads that start
    /// inside the batch.
    pub(crate) fn skip(&mut self) -> Result<(), String> {
        self.next_parts()?;
        Ok(())
    }

    pub(crate) fn next_record(&mut self) -> Result<StoredRecord, String> {
        let (key, headers, value) = self.next_parts()?;
        let mut header_input = Input {
            bytes: headers.bytes,
            at: 0,
        };
        let mut decoded_headers = Vec::with_capacity(headers.count);
        for index in 0..headers.count {
            let name = header_input.prefixed("header name")?;
            let name = std::str::from_utf8(name)
                .map_err(|error| format!("header {index} name is not UTF-8: {error}"))?
                .to_owned();
            let value = header_input.prefixed("header value")?.to_vec();
            decoded_headers.push(Header { name, value });
        }
        Ok(StoredRecord {
            key: key.to_vec(),
            value: value.to_vec(),
            headers: decoded_headers,
        })
    }

    /// Checks the batch ends where its last record does; call after every
    /// record was decoded.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.decoded != self.count {
            return Err(format!(
                "{} of {} records left undecoded",
                self.count - self.decoded,
                self.count
            ));
        }
        if self.input.remaining() != 0 {
            return Err(format!(
                "{} unexpected bytes after the last record",
                self.input.remaining()
            ));
        }
        Ok(())
    }

    /// The next record's key, encoded headers and value, bounds-checked.
    fn next_parts(&mut self) -> Result<(&'a [u8], EncodedHeaders<'a>, &'a [u8]), String> {
        if self.decoded == self.count {
            return Err(format!("the batch holds only {} records", self.count));
        }
        let key = self.input.prefixed("key")?;
        let header_count = self.input.varint("header count")?;
        // Each header takes at least two bytes (two empty lengths): a larger
        // count cannot be genuine and must not drive an allocation.
        if header_count > (self.input.remaining() / 2) as u64 {
            return Err(format!(
                "header count {header_count} exceeds what the remaining {} bytes can hold",
                self.input.remaining()
            ));
        }
        let headers_start = self.input.at;
        for _ in 0..header_count {
            self.input.prefixed("header name")?;
            self.input.prefixed("header value")?;
        }
        let headers = EncodedHeaders {
            count: header_count as usize,
            bytes: &self.input.bytes[headers_start..self.input.at],
        };
        let value = self.input.prefixed("value")?;
        self.decoded += 1;
        Ok((key, headers, value))
    }
}

struct EncodedHeaders<'a> {
    count: usize,
    bytes: &'a [u8],
}

pub(crate) fn encode_spec(spec: &TopicSpec) -> [u8; SPEC_LEN] {
    let mut out = [0; SPEC_LEN];
    out[0] = SPEC_FORMAT_V1;
    out[1..5].copy_from_slice(&spec.partitions.to_be_bytes());
    out[5] = u8::from(spec.compacted);
    out
}

pub(crate) fn decode_spec(bytes: &[u8]) -> Result<TopicSpec, String> {
    let bytes: [u8; SPEC_LEN] = bytes
        .try_into()
        .map_err(|_| format!("spec is {} bytes, expected {SPEC_LEN}", bytes.len()))?;
    if bytes[0] != SPEC_FORMAT_V1 {
        return Err(format!(
            "unknown spec format version {}, expected {SPEC_FORMAT_V1}",
            bytes[0]
        ));
    }
    let partitions = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    if partitions == 0 {
        return Err("spec has zero partitions".to_owned());
    }
    let compacted = match bytes[5] {
        0 => false,
        1 => true,
        other => return Err(format!("compacted flag is {other}, expected 0 or 1")),
    };
    Ok(TopicSpec {
        partitions,
        compacted,
    })
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn prefixed_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over stored bytes whose every read is bounds-checked.
struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        if len > self.remaining() {
            return Err(format!(
                "{what} needs {len} bytes at byte {} but only {} remain",
                self.at,
                self.remaining()
            ));
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let slice = self.take(N, what)?;
        let mut array = [0; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        self.varint_of(what, "")
    }

    /// Reads a LEB128 varint; `what` and `suffix` name it in the error,
    /// joined only when there is one so the hot path never allocates.
    fn varint_of(&mut self, what: &str, suffix: &str) -> Result<u64, String> {
        let start = self.at;
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(format!(
                    "{what}{suffix} needs 1 bytes at byte {} but only 0 remain",
                    self.at
                ));
            };
            self.at += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "{what}{suffix} at byte {start} is not a valid varint (overflows 64 bits)"
        ))
    }

    fn prefixed(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.varint_of(what, " length")?;
        let len = usize::try_from(len).map_err(|_| format!("{what} length {len} is too large"))?;
        self.take(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<NewRecord> {
        vec![
            NewRecord::new("9434765919", "payload")
                .with_header("traceparent", "00-abc-def-01")
                .with_header("empty", ""),
            NewRecord::new("", ""),
        ]
    }

    fn encode(records: &[NewRecord], timestamp_ms: i64) -> Vec<u8> {
        let body_len = records.iter().map(record_len).sum();
        encode_batch(records.iter(), body_len, timestamp_ms)
    }

    fn decode(bytes: &[u8]) -> Result<(i64, Vec<StoredRecord>), String> {
        let mut decoder = BatchDecoder::new(bytes)?;
        let records = (0..decoder.count())
            .map(|_| decoder.next_record())
            .collect::<Result<Vec<_>, _>>()?;
        decoder.finish()?;
        Ok((decoder.timestamp_ms(), records))
    }

    fn assert_same(stored: &[StoredRecord], sent: &[NewRecord]) {
        assert_eq!(stored.len(), sent.len());
        for (stored, sent) in stored.iter().zip(sent) {
            assert_eq!(stored.key, sent.key);
            assert_eq!(stored.value, sent.value);
            assert_eq!(stored.headers, sent.headers);
        }
    }

    #[test]
    fn batch_round_trips() {
        let records = sample();
        let (timestamp_ms, stored) = decode(&encode(&records, 1_700_000_000_123)).unwrap();
        assert_eq!(timestamp_ms, 1_700_000_000_123);
        assert_same(&stored, &records);
    }

    #[test]
    fn skipping_lands_on_the_next_record() {
        let records = sample();
        let bytes = encode(&records, 0);
        let mut decoder = BatchDecoder::new(&bytes).unwrap();
        decoder.skip().unwrap();
        assert_same(&[decoder.next_record().unwrap()], &records[1..]);
        decoder.finish().unwrap();
        assert!(
            decoder
                .next_record()
                .unwrap_err()
                .contains("only 2 records")
        );
    }

    #[test]
    fn encoded_length_is_exact() {
        let records =
            vec![NewRecord::new(vec![7; 300], vec![1; 20_000]).with_header("h", vec![2; 130])];
        let bytes = encode(&records, -5);
        assert_eq!(bytes.capacity(), bytes.len());
        assert_eq!(decode(&bytes).unwrap().0, -5);
    }

    #[test]
    fn runs_close_at_the_byte_and_record_limits() {
        assert_eq!(batch_runs(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(batch_runs(&[10, 10, 10]), vec![0..3]);
        let half = MAX_BATCH_BYTES / 2;
        assert_eq!(batch_runs(&[half, half, 1, 5]), vec![0..2, 2..4]);
        assert_eq!(batch_runs(&[MAX_BATCH_BYTES * 3, 1]), vec![0..1, 1..2]);
        let many = vec![1; MAX_BATCH_RECORDS * 2 + 1];
        assert_eq!(
            batch_runs(&many),
            vec![
                0..MAX_BATCH_RECORDS,
                MAX_BATCH_RECORDS..MAX_BATCH_RECORDS * 2,
                MAX_BATCH_RECORDS * 2..MAX_BATCH_RECORDS * 2 + 1
            ]
        );
    }

    #[test]
    fn damaged_bytes_are_rejected_with_a_reason() {
        let good = encode(&sample(), 42);
        let ts = [0_u8; 8];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "format version needs 1 bytes"),
            (vec![9], "unknown batch format version 9"),
            (good[..5].to_vec(), "timestamp needs 8 bytes"),
            (
                [&[1], &ts[..], &[0]].concat(),
                "record count 0 does not fit",
            ),
            (
                [&[1], &ts[..], &[5, 0, 0, 0]].concat(),
                "record count 5 does not fit",
            ),
            (
                good[..good.len() - 1].to_vec(),
                "value length needs 1 bytes",
            ),
            (
                [good.as_slice(), b"x"].concat(),
                "1 unexpected bytes after the last record",
            ),
            (
                [&[1], &ts[..], &[1], &[0x80; 11][..]].concat(),
                "not a valid varint",
            ),
            (
                [&[1], &ts[..], &[1, 0, 0x7f, 0]].concat(),
                "header count 127 exceeds",
            ),
            (
                [&[1], &ts[..], &[1, 0, 1, 1, 0xff, 0, 0]].concat(),
                "header 0 name is not UTF-8",
            ),
        ];
        for (bytes, reason) in cases {
            let error = decode(&bytes).unwrap_err();
            assert!(error.contains(reason), "{bytes:?}: {error}");
        }
    }

    #[test]
    fn spec_round_trips_and_rejects_damage() {
        for spec in [TopicSpec::events(1), TopicSpec::compacted(u32::MAX)] {
            assert_eq!(decode_spec(&encode_spec(&spec)).unwrap(), spec);
        }
        assert!(
            decode_spec(&[1, 0, 0, 0, 1])
                .unwrap_err()
                .contains("expected 6")
        );
        assert!(
            decode_spec(&[2, 0, 0, 0, 1, 0])
                .unwrap_err()
                .contains("version 2")
        );
        assert!(
            decode_spec(&[1, 0, 0, 0, 0, 0])
                .unwrap_err()
                .contains("zero partitions")
        );
        assert!(
            decode_spec(&[1, 0, 0, 0, 1, 2])
                .unwrap_err()
                .contains("compacted flag is 2")
        );
    }

    #[test]
    fn offset_keys_sort_like_offsets() {
        assert!(offset_key(255) < offset_key(256));
        assert_eq!(decode_offset_key(&offset_key(u64::MAX)), Some(u64::MAX));
        assert_eq!(decode_offset_key(&[1, 2, 3]), None);
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            records in proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..100),
                    proptest::collection::vec(any::<u8>(), 0..1000),
                    proptest::collection::vec((".{0,20}", proptest::collection::vec(any::<u8>(), 0..50)), 0..4),
                ),
                1..8,
            ),
            timestamp_ms in any::<i64>(),
        ) {
            let records: Vec<NewRecord> = records
                .into_iter()
                .map(|(key, value, headers)| {
                    headers.into_iter().fold(NewRecord::new(key, value), |record, (name, value)| {
                        record.with_header(name, value)
                    })
                })
                .collect();
            let (decoded_timestamp, stored) = decode(&encode(&records, timestamp_ms)).unwrap();
            prop_assert_eq!(decoded_timestamp, timestamp_ms);
            assert_same(&stored, &records);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = decode_spec(&bytes);
        }

        #[test]
        fn any_truncation_is_detected(cut in 0_usize..80) {
            let good = encode(&sample(), 42);
            let cut = cut.min(good.len() - 1);
            prop_assert!(decode(&good[..cut]).is_err());
        }
    }
}
