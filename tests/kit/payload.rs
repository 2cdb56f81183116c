//! Payloads: fixture files, or deterministic generators run at test time
//! (large payloads are never committed).

use super::table::{Generator, Payload};
use sha2::{Digest, Sha256};
use std::path::Path;

/// splitmix64: tiny, fast, and fully specified, so a seed always yields the
/// same bytes on every machine.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

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

/// A loaded payload: the bytes, and the separate writes for generators
/// that define them.
pub struct Loaded {
    pub bytes: Vec<u8>,
    pub chunks: Option<Vec<Vec<u8>>>,
}

/// Loads the payload of a scenario; `seed_offset` derives distinct
/// payloads (client `i` of a concurrent scenario uses the seed plus `i`).
pub fn load(spec: &Payload, fixtures: &Path, seed_offset: u64) -> Result<Loaded, String> {
    let loaded = if let Some(file) = &spec.file {
        let path = fixtures.join(file);
        let bytes =
            std::fs::read(&path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        Loaded {
            bytes,
            chunks: None,
        }
    } else {
        let seed = spec.seed.unwrap_or_default().wrapping_add(seed_offset);
        match spec.generate {
            Some(Generator::Random) => Loaded {
                bytes: random_bytes(spec.bytes.unwrap_or_default(), seed),
                chunks: None,
            },
            Some(Generator::Messages) => {
                let chunks = messages(spec.count.unwrap_or_default(), seed);
                Loaded {
                    bytes: chunks.concat(),
                    chunks: Some(chunks),
                }
            }
            None => return Err("payload has neither file nor generate".into()),
        }
    };
    if let Some(expected) = &spec.sha256 {
        if seed_offset == 0 {
            let actual = sha256_hex(&loaded.bytes);
            if &actual != expected {
                return Err(format!(
                    "payload {spec:?} has sha256 {actual}, but the table pins {expected}: \
                     the fixture or the generator changed"
                ));
            }
        }
    }
    Ok(loaded)
}
