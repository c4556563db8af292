//! Growing a state's lists without the slack of `Vec`'s doubling.
//!
//! Most lists in a care state stay short (a care-team member's history, a
//! referral's transitions, an encounter's cancellations and stays: one to
//! three entries), and their elements are large (a `CareTeamChange` is
//! 248 bytes, a `Movement` 368). `Vec` gives a first push room for four
//! and doubles after that, so a list of one such element holds room for
//! four, and across a population most of a state's memory is room no entry
//! uses (measured in docs/performance.md, "Memory of a state"). Every
//! state the projector or the benchmark holds pays for it, in memory and in
//! the page faults of touching it.
//!
//! These helpers grow a list one element at a time while it is short,
//! then by doubling, so a long history (a patient on a caseload for years)
//! still costs amortised constant time per element. The encoding does not
//! change: capacity is not part of a message.

/// Lists up to this long grow one element at a time.
const SHORT: usize = 4;

/// Makes room for one more element in `list`: exactly one while the list is
/// short, else `Vec`'s own amortised growth.
fn make_room<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        if list.len() < SHORT {
            list.reserve_exact(1);
        } else {
            list.reserve(1);
        }
    }
}

/// `list.push(element)`, with the growth above.
pub(crate) fn push<T>(list: &mut Vec<T>, element: T) {
    make_room(list);
    list.push(element);
}

/// `list.insert(index, element)`, with the growth above.
pub(crate) fn insert<T>(list: &mut Vec<T>, index: usize, element: T) {
    make_room(list);
    list.insert(index, element);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_list_holds_no_more_room_than_it_uses() {
        let mut list = Vec::new();
        for n in 1..=SHORT {
            push(&mut list, [0u8; 248]);
            assert_eq!(list.capacity(), n);
        }
    }

    #[test]
    fn a_long_list_grows_by_doubling() {
        let mut list = Vec::new();
        let mut reallocations = 0;
        for n in 0..10_000u32 {
            let before = list.capacity();
            insert(&mut list, 0, n);
            reallocations += usize::from(list.capacity() != before);
        }
        assert_eq!(list.len(), 10_000);
        assert_eq!(list.first(), Some(&9_999));
        assert_eq!(list.last(), Some(&0));
        // Four single steps to SHORT, then one doubling per power of two.
        assert!(reallocations <= SHORT + 12, "{reallocations} reallocations");
    }
}
