//! Scenario 18: the component imports nothing its WIT world does not.
//!
//! The world's imports come from `wit-parser` (`Resolve::push_dir` on
//! `wit/`, which also reads `wit/deps/`; the resolver adds the interfaces
//! that imported ones `use`). The component's top-level imports come from
//! `wasmparser`. A component import `ns:pkg/iface@V` is covered by a world
//! import of the same `ns:pkg/iface` at version V, or at a newer
//! semver-compatible one (same major, and same minor below 1.0): a host
//! providing `wasi:io/streams@0.2.6` satisfies a component built against
//! `@0.2.0`, as wasmtime's linker does.

use std::collections::BTreeSet;
use std::path::Path;
use wasmparser::{Parser, Payload};
use wit_parser::{Resolve, WorldItem};

/// Checks that every top-level import of `wasm` is an import of world
/// `world` of package `package` in `wit_dir`.
pub(crate) fn check_imports(
    wasm: &Path,
    wit_dir: &Path,
    package: &str,
    world: &str,
) -> Result<(), String> {
    if !wit_dir.join("world.wit").is_file() {
        return Err(format!(
            "{} is missing: the contract is a WIT package `{package}` there (world.wit with \
             world `{world}`, dependencies in {}/deps/) that lists every interface echokit.wasm \
             may import",
            wit_dir.join("world.wit").display(),
            wit_dir.display()
        ));
    }
    let world_imports = world_imports(wit_dir, package, world)?;
    let component_imports = component_imports(wasm)?;
    if component_imports.is_empty() {
        return Err(format!(
            "{} has no top-level component imports: is it a component?",
            wasm.display()
        ));
    }
    let offending: Vec<&String> = component_imports
        .iter()
        .filter(|name| !world_imports.iter().any(|w| covers(w, name)))
        .collect();
    if offending.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} imports {} interface(s) that world `{package}/{world}` in {} does not:\n  {}\n\
         the world imports:\n  {}",
        wasm.display(),
        offending.len(),
        wit_dir.display(),
        offending
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        world_imports
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    ))
}

/// The import names of the world, interfaces as `ns:pkg/iface@version`.
fn world_imports(wit_dir: &Path, package: &str, world: &str) -> Result<BTreeSet<String>, String> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit_dir)
        .map_err(|err| format!("cannot resolve the WIT in {}: {err:#}", wit_dir.display()))?;
    let found = resolve.packages[pkg].name.to_string();
    let unversioned = match found.split_once('@') {
        Some((name, _)) => name,
        None => found.as_str(),
    };
    if unversioned != package {
        return Err(format!(
            "{} declares package `{found}`, expected `{package}`",
            wit_dir.display()
        ));
    }
    let world_id = resolve
        .select_world(&[pkg], Some(world))
        .map_err(|err| format!("no world `{world}` in `{found}`: {err:#}"))?;
    let mut names = BTreeSet::new();
    for (key, item) in &resolve.worlds[world_id].imports {
        let name = match item {
            WorldItem::Interface { id, .. } => resolve
                .id_of(*id)
                .unwrap_or_else(|| resolve.name_world_key(key)),
            _ => resolve.name_world_key(key),
        };
        names.insert(name);
    }
    Ok(names)
}

/// The top-level import names of a component (nested modules and
/// components are skipped).
fn component_imports(wasm: &Path) -> Result<BTreeSet<String>, String> {
    let bytes =
        std::fs::read(wasm).map_err(|err| format!("cannot read {}: {err}", wasm.display()))?;
    let mut names = BTreeSet::new();
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(&bytes) {
        let payload = payload.map_err(|err| format!("{}: {err}", wasm.display()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 {
                    is_component = encoding == wasmparser::Encoding::Component;
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|err| format!("{}: {err}", wasm.display()))?;
                    names.insert(import.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    if !is_component {
        return Err(format!(
            "{} is a core module, not a component",
            wasm.display()
        ));
    }
    Ok(names)
}

/// Whether world import `world` satisfies component import `import`.
fn covers(world: &str, import: &str) -> bool {
    if world == import {
        return true;
    }
    let (Some((w_name, w_ver)), Some((i_name, i_ver))) =
        (world.split_once('@'), import.split_once('@'))
    else {
        return false;
    };
    if w_name != i_name {
        return false;
    }
    let (Ok(w), Ok(i)) = (semver::Version::parse(w_ver), semver::Version::parse(i_ver)) else {
        return false;
    };
    let compatible = if w.major == 0 {
        i.major == 0 && w.minor == i.minor
    } else {
        w.major == i.major
    };
    compatible && w >= i
}
