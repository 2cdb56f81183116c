//! Deterministic payloads: every connection and every message gets its own
//! byte sequence, so a byte delivered to the wrong place is caught; the
//! load generator and the checks both send them.

use crate::hash::mix;

/// Identifies one byte sequence.
pub fn seed(connection: u64, message: u64) -> u64 {
    mix(connection.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ message.wrapping_add(0x632b_e59b_d9b4_e019))
}

/// Fills `out` with the bytes at `offset..` of the sequence `seed`.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let word = |index: u64| mix(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03)).to_le_bytes();
    let mut index = offset / 8;
    let skip = (offset % 8) as usize;
    let mut rest = out;
    if skip != 0 {
        let take = (8 - skip).min(rest.len());
        rest[..take].copy_from_slice(&word(index)[skip..skip + take]);
        rest = &mut rest[take..];
        index += 1;
    }
    // Whole words: each an 8-byte store, not a copy of variable length.
    let mut words = rest.chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word(index));
        index += 1;
    }
    let tail = words.into_remainder();
    let len = tail.len();
    tail.copy_from_slice(&word(index)[..len]);
}

/// Whether `data` equals the bytes at `offset..` of `seed`; `scratch` must
/// be at least as long as `data`.
pub fn matches(seed: u64, offset: u64, data: &[u8], scratch: &mut [u8]) -> bool {
    let expected = &mut scratch[..data.len()];
    fill(seed, offset, expected);
    expected == data
}

/// How many bytes of `got` match `expected` from the start: where an echo
/// first differs from what was sent, if it is shorter than `got`.
pub fn matching_prefix(expected: &[u8], got: &[u8]) -> usize {
    expected.iter().zip(got).take_while(|(a, b)| a == b).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_gives_byte_p_of_word_p_over_8() {
        let byte = |seed: u64, p: u64| {
            mix(seed ^ (p / 8).wrapping_mul(0xd1b5_4a32_d192_ed03)).to_le_bytes()[(p % 8) as usize]
        };
        for offset in 0..20 {
            for len in 0..40 {
                let mut out = vec![0; len];
                fill(9, offset, &mut out);
                let want: Vec<u8> = (offset..offset + len as u64).map(|p| byte(9, p)).collect();
                assert_eq!(out, want, "offset {offset}, len {len}");
            }
        }
    }

    #[test]
    fn any_split_of_a_sequence_matches_the_whole() {
        let mut whole = [0; 100];
        fill(7, 3, &mut whole);
        let mut scratch = [0; 100];
        for split in 0..100 {
            assert!(matches(7, 3, &whole[..split], &mut scratch));
            assert!(matches(7, 3 + split as u64, &whole[split..], &mut scratch));
        }
    }

    #[test]
    fn sequences_differ_by_connection_and_message() {
        let [mut a, mut b, mut c] = [[0u8; 32]; 3];
        fill(seed(1, 1), 0, &mut a);
        fill(seed(2, 1), 0, &mut b);
        fill(seed(1, 2), 0, &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
        let mut scratch = [0; 32];
        assert!(!matches(seed(1, 1), 1, &a, &mut scratch), "offset matters");
    }
}
