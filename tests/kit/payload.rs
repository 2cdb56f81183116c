//! A scenario's payload: a fixture file, or a generator of testkit's run at
//! test time (large payloads are never committed), pinned by SHA-256.

use super::table::{Generator, Payload};
use std::path::Path;
use testkit::payload::{messages, random_bytes, sha256_hex};

/// A loaded payload: the bytes, and the separate writes for generators
/// that define them.
pub(crate) struct Loaded {
    pub bytes: Vec<u8>,
    pub chunks: Option<Vec<Vec<u8>>>,
}

/// Loads the payload of a scenario; `seed_offset` derives distinct
/// payloads (client `i` of a concurrent scenario uses the seed plus `i`).
pub(crate) fn load(spec: &Payload, fixtures: &Path, seed_offset: u64) -> Result<Loaded, String> {
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
