//! Where the project and the programs cargo built for the tests are.

use std::path::PathBuf;

/// The project root (the `echokit` package's directory).
pub fn root() -> PathBuf {
    let testkit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().map(PathBuf::from).unwrap_or(testkit)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root),
/// else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The native `echokit` that cargo built next to the running test or
/// bench (`target/PROFILE/echokit` for `target/PROFILE/deps/TEST-HASH`),
/// or `$ECHOKIT_BIN` when set.
pub fn native_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ECHOKIT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release"));
    profile_dir.join(format!("echokit{}", std::env::consts::EXE_SUFFIX))
}

/// The cargo profile the running test or bench was built with (`ci`,
/// `release`, `debug`...), from where its executable is.
pub fn profile() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(|deps| deps.parent())
        .and_then(|dir| dir.file_name())
        .map_or_else(
            || "release".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        )
}
