//! Kafka's default key partitioner, bit for bit.
//!
//! Every producer of a topic must agree on which partition a key lives in,
//! otherwise one patient's events split across partitions and lose their
//! order. Matching the Java client (and librdkafka's `murmur2` partitioner)
//! means Baton, Kafka Connect, Java services and `kcat -p` all agree.

/// Kafka's `Utils.murmur2`: MurmurHash2 with seed `0x9747b28c`, little-endian
/// 4-byte blocks, returned as the Java `int` it would produce.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java computes `seed ^ length` on an int; lengths beyond i32 cannot be
    // Kafka keys, so truncation matches what Java would do with them.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        if let Some(&byte) = tail.get(2) {
            h ^= u32::from(byte) << 16;
        }
        if let Some(&byte) = tail.get(1) {
            h ^= u32::from(byte) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partitioner for keyed records:
/// `toPositive(murmur2(key)) % partitions`, where `toPositive` clears the
/// sign bit (it is not `abs`, which would differ for negative hashes).
///
/// A topic always has at least one partition; `partitions == 0` yields 0
/// rather than dividing by zero.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let positive = (murmur2(key) as u32) & 0x7fff_ffff;
    positive.checked_rem(partitions).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// apache/kafka `clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java`,
    /// `testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_java_utils_test() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for &(key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// confluentinc/librdkafka `src/rdmurmur2.c`, `unittest_murmur2`, whose
    /// expected values were produced by the Java client. The unaligned
    /// slices exercise every tail length.
    #[test]
    fn murmur2_matches_librdkafka_unit_test() {
        let short_unaligned: &[u8] = b"1234";
        let unaligned: &[u8] = b"PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: &[(&[u8], u32)] = &[
            (b"kafka", 0xd067_cf64),
            (b"giberish123456789", 0x8f55_2b0c),
            (short_unaligned, 0x9fc9_7b14),
            (&short_unaligned[1..], 0xe7c0_09ca),
            (&short_unaligned[2..], 0x8739_30da),
            (&short_unaligned[3..], 0x5a4b_5ca1),
            (unaligned, 0x7842_4f1c),
            (&unaligned[1..], 0x4a62_b377),
            (&unaligned[2..], 0xe0e4_e09e),
            (&unaligned[3..], 0x62b8_b43f),
            (b"", 0x106e_08d9),
        ];
        for &(key, expected) in cases {
            assert_eq!(
                murmur2(key) as u32,
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// confluentinc/librdkafka `tests/0048-partitioner.c`: expected
    /// partitions of the `murmur2` partitioner (values from the Java client's
    /// `Murmur2Cli`, already made positive), for 7 and 17 partitions.
    #[test]
    fn partition_for_key_matches_librdkafka_partitioner_test() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 0x106e_08d9),
            (b"23456", 0x058d_780f),
            (
                b"this is another string with more length to it perhaps",
                0x4f77_03da,
            ),
            (b"hejsan", 0x5ec1_9395),
        ];
        for partitions in [7, 17] {
            for &(key, positive_hash) in cases {
                assert_eq!(
                    partition_for_key(key, partitions),
                    positive_hash % partitions,
                    "key {:?} over {partitions} partitions",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    /// A negative hash must be masked, not negated: Java's `toPositive`
    /// differs from `abs` for every negative value.
    #[test]
    fn negative_hashes_are_masked_not_negated() {
        // "21" hashes to -973932308 (UtilsTest); masked = 1173551340.
        assert_eq!((-973_932_308_i32 as u32) & 0x7fff_ffff, 1_173_551_340);
        assert_eq!(partition_for_key(b"21", 1000), 340);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
    }

    #[test]
    fn partition_is_always_in_range() {
        for partitions in 1..=64 {
            for key in 0..200_u32 {
                let key = key.to_string();
                assert!(partition_for_key(key.as_bytes(), partitions) < partitions);
            }
        }
        assert_eq!(partition_for_key(b"any", 0), 0);
    }
}
