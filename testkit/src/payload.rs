//! The bytes tests send: deterministic generators, so a payload is a seed
//! and a length (large payloads are never committed), and their digests.

use sha2::{Digest, Sha256};

/// splitmix64: tiny, fast, and fully specified, so a seed always yields the
/// same bytes on every machine.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `len` pseudo-random bytes: the little-endian splitmix64 stream of `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `count` small messages of 8 to 72 bytes: `NNNNN:` then random lowercase
/// letters and a newline.
pub fn messages(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|i| {
            let len = 8 + (rng.next_u64() % 65) as usize;
            let mut msg = format!("{:05}:", i % 100_000).into_bytes();
            while msg.len() < len - 1 {
                msg.push(b'a' + (rng.next_u64() % 26) as u8);
            }
            msg.push(b'\n');
            msg
        })
        .collect()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
