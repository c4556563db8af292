//! Synthetic NHS numbers, all in the `999` range NHS England reserves for
//! testing, so no generated record can ever be mistaken for a real person.

/// How many distinct NHS numbers [`nhs_number`] can make: the `999` range
/// has 100,000 eight-digit stems, each with at least nine valid ninth digits.
pub const MAX_NHS_NUMBERS: u64 = 900_000;

const STEMS: u64 = 100_000;

/// The `index`-th synthetic NHS number: ten digits starting `999`, passing
/// the modulus-11 check, different for every index below
/// [`MAX_NHS_NUMBERS`].
///
/// ```
/// assert_eq!(baton_synth::nhs_number(0), "9990000018");
/// assert_ne!(baton_synth::nhs_number(1), baton_synth::nhs_number(100_001));
/// ```
///
/// # Panics
/// If `index` is [`MAX_NHS_NUMBERS`] or more: the test range holds no more.
pub fn nhs_number(index: u64) -> String {
    assert!(
        index < MAX_NHS_NUMBERS,
        "nhs_number: index {index} is beyond the {MAX_NHS_NUMBERS} numbers of the 999 test range"
    );
    // The first eight digits come from the index; the ninth is the
    // `slot`-th digit that leaves a valid check digit (at most one of the
    // ten does not: the ninth digit's weight, 2, is invertible mod 11).
    let stem = 99_900_000 + index % STEMS;
    let slot = usize::try_from(index / STEMS).expect("below nine");
    let (prefix, check) = (0..10)
        .map(|ninth| stem * 10 + ninth)
        .filter_map(|prefix| check_digit(prefix).map(|check| (prefix, check)))
        .nth(slot)
        .expect("every stem has at least nine valid ninth digits");
    format!("{prefix:09}{check}")
}

/// The modulus-11 check digit of nine digits, or `None` when it would be 10
/// (no NHS number starts with those nine digits).
fn check_digit(prefix: u64) -> Option<u64> {
    let weighted: u64 = (0..9)
        .map(|position| {
            let digit = prefix / 10u64.pow(8 - position) % 10;
            digit * (10 - u64::from(position))
        })
        .sum();
    match 11 - weighted % 11 {
        11 => Some(0),
        10 => None,
        check => Some(check),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use baton_care::NhsNumber;

    use super::*;

    #[test]
    fn numbers_are_valid_in_the_test_range_and_distinct() {
        let indexes = (0..2_000)
            .chain(STEMS - 1_000..STEMS + 1_000)
            .chain(MAX_NHS_NUMBERS - 2_000..MAX_NHS_NUMBERS);
        let mut seen = HashSet::new();
        for index in indexes {
            let number = nhs_number(index);
            assert!(number.starts_with("999"), "{number}");
            NhsNumber::parse(&number).unwrap_or_else(|problem| panic!("{index}: {problem}"));
            assert!(seen.insert(number.clone()), "{number} made twice");
        }
    }

    #[test]
    fn check_digits_agree_with_a_known_number() {
        // 943 476 5919 is the NHS's own worked example.
        assert_eq!(check_digit(943_476_591), Some(9));
        assert_eq!(check_digit(100_000_001), None);
    }

    #[test]
    #[should_panic(expected = "beyond the 900000 numbers")]
    fn refuses_indexes_past_the_range() {
        nhs_number(MAX_NHS_NUMBERS);
    }
}
