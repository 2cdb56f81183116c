//! A cache of compiled components, so that starting a component again costs
//! milliseconds instead of a full Cranelift compilation.
//!
//! Each entry is the output of [`Engine::precompile_component`] in a file of
//! its own, `<key>.cwasm`, where the key is a BLAKE3 hash of a format tag,
//! this crate's version, the engine's compilation settings (which include
//! the wasmtime version and the target) and the component's bytes. Any
//! change to one of these gives another key, so an entry is never stale;
//! old entries are pruned, keeping the [`KEEP`] most recently used.
//!
//! Entries are written to a temporary file in the same directory, synced,
//! then renamed into place, so a reader sees a complete file or none, and a
//! file, once in place, is never written again (a newer copy replaces the
//! directory entry, not the contents). A cache that cannot be created or
//! written is no error: the component is compiled, as without a cache.

use std::fs::{self, File};
use std::hash::Hash;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::component::Component;
use wasmtime::Engine;

/// Entries kept when pruning: enough for a few components, or versions of
/// one, used in turn.
pub(crate) const KEEP: usize = 8;

/// Temporary files older than this are left over by a killed writer.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Changes whenever the way entries are keyed or written changes.
const FORMAT: &[u8] = b"echokit-host compile cache v1\0";

/// A directory of compiled components.
#[derive(Debug)]
pub(crate) struct CompileCache {
    /// Where the entries live; created on first store.
    dir: PathBuf,
}

impl CompileCache {
    /// The cache in a given directory.
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// The user's cache: `$XDG_CACHE_HOME/echokit-host` if that variable is an
    /// absolute path, else `$HOME/.cache/echokit-host`; `None` without either.
    pub(crate) fn from_env() -> Option<Self> {
        let xdg = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute());
        let base = xdg.or_else(|| {
            std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
        Some(Self::new(base.join("echokit-host")))
    }

    /// The compiled `bytes` (a component, binary or text): loaded from the
    /// cache when there, else compiled and stored (best effort).
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.entry_path(engine, bytes);
        if path.is_file() {
            // SAFETY: `deserialize_file` maps the file and runs its code, so it
            // must hold what `Engine::precompile_component` produced, and must
            // not change while mapped. Files named `<key>.cwasm` in this
            // directory are only ever created by `store` below, from the output
            // of `precompile_component` for exactly these bytes and this engine
            // configuration (the key), and they are complete when they appear
            // (rename of a synced temporary file). Nothing writes to them
            // afterwards: a replacement is a new file renamed over the name,
            // and pruning unlinks, both of which leave an existing mapping
            // intact. Wasmtime still checks the header and the engine
            // compatibility, and an entry it rejects is compiled anew. The
            // directory is the user's own, trusted as much as this binary.
            if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
                touch(&path);
                return Ok(component);
            }
        }

        let compiled = engine.precompile_component(bytes)?;
        if self.store(&path, &compiled).is_ok() {
            self.prune(&path);
        }
        // SAFETY: `compiled` was produced just now by `precompile_component`
        // of this engine, which is what `deserialize` requires.
        unsafe { Component::deserialize(engine, &compiled) }
    }

    /// Where the entry for these bytes and this engine lives.
    fn entry_path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut hasher = blake3::Hasher::new();
        hasher.update(FORMAT);
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(b"\0");
        engine
            .precompile_compatibility_hash()
            .hash(&mut StdHasher(&mut hasher));
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
        let key = hasher.finalize().to_hex();
        self.dir.join(format!("{key}.cwasm"))
    }

    /// Writes an entry atomically: temporary file, sync, rename.
    fn store(&self, path: &Path, compiled: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = File::create(&temp).and_then(|mut file| {
            file.write_all(compiled)?;
            file.sync_all()
        });
        let result = written.and_then(|()| fs::rename(&temp, path));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Removes all but the [`KEEP`] most recently used entries, and stale
    /// temporary files; never `keep`, the entry just stored. Best effort.
    fn prune(&self, keep: &Path) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(modified) = entry.metadata().and_then(|m| m.modified()).ok() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let age = now.duration_since(modified).unwrap_or_default();
                if age > STALE_TEMP {
                    let _ = fs::remove_file(&path);
                }
            } else if name.ends_with(".cwasm") && path != keep {
                entries.push((modified, path));
            }
        }
        // Newest first; the entry just stored counts as one of the kept.
        entries.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in entries.into_iter().skip(KEEP.saturating_sub(1)) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Marks an entry as just used, for pruning. Best effort.
fn touch(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Feeds [`Hash`] implementations into a BLAKE3 hasher.
struct StdHasher<'a>(&'a mut blake3::Hasher);

impl std::hash::Hasher for StdHasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest command component: `run` returns `ok`.
    const OK_COMPONENT: &str = include_str!("../tests/fixtures/run_ok.wat");

    /// Lists the `.cwasm` entries of a cache directory.
    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn stores_then_reuses_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().join("c"));
        let engine = crate::host::engine().unwrap();
        cache
            .load_or_compile(&engine, OK_COMPONENT.as_bytes())
            .unwrap();
        let stored = entries(&dir.path().join("c"));
        assert_eq!(stored.len(), 1);
        let before = fs::metadata(&stored[0]).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        cache
            .load_or_compile(&engine, OK_COMPONENT.as_bytes())
            .unwrap();
        assert_eq!(entries(&dir.path().join("c")), stored);
        let after = fs::metadata(&stored[0]).unwrap().modified().unwrap();
        assert!(after > before, "a hit marks the entry as used");
    }

    #[test]
    fn a_damaged_entry_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path());
        let engine = crate::host::engine().unwrap();
        let path = cache.entry_path(&engine, OK_COMPONENT.as_bytes());
        fs::write(&path, b"not a compiled component").unwrap();
        cache
            .load_or_compile(&engine, OK_COMPONENT.as_bytes())
            .unwrap();
        assert!(fs::metadata(&path).unwrap().len() > 100);
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let cache = CompileCache::new(file.join("sub"));
        let engine = crate::host::engine().unwrap();
        cache
            .load_or_compile(&engine, OK_COMPONENT.as_bytes())
            .unwrap();
    }

    #[test]
    fn keys_depend_on_the_bytes() {
        let cache = CompileCache::new("/nonexistent");
        let engine = crate::host::engine().unwrap();
        let a = cache.entry_path(&engine, b"a");
        assert_eq!(a, cache.entry_path(&engine, b"a"));
        assert_ne!(a, cache.entry_path(&engine, b"b"));
    }

    #[test]
    fn pruning_keeps_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path());
        let base = SystemTime::now() - Duration::from_secs(1000);
        for i in 0..KEEP + 3 {
            let path = dir.path().join(format!("{i:02}.cwasm"));
            let file = File::create(&path).unwrap();
            file.set_modified(base + Duration::from_secs(i as u64))
                .unwrap();
        }
        let stale = dir.path().join(".x.cwasm.1.tmp");
        File::create(&stale)
            .unwrap()
            .set_modified(base - STALE_TEMP)
            .unwrap();
        let fresh = dir.path().join(".y.cwasm.2.tmp");
        File::create(&fresh).unwrap();
        let keep = dir.path().join("00.cwasm");
        cache.prune(&keep);
        let left = entries(dir.path());
        assert_eq!(left.len(), KEEP);
        assert!(left.contains(&keep));
        assert!(left.contains(&dir.path().join(format!("{:02}.cwasm", KEEP + 2))));
        assert!(!left.contains(&dir.path().join("01.cwasm")));
        assert!(!stale.exists() && fresh.exists());
    }
}
