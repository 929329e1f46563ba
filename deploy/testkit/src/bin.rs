//! The path of a workspace binary for tests that run the real process (to send it SIGTERM or SIGKILL),
//! without depending on the crate that builds it. The binary is looked up next to the running test
//! executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`) and built with `cargo build
//! --bin <name>` in the same profile and target dir when it is missing or older than the test, so that
//! `cargo nextest run -p web` alone runs the current `telemetry-writer`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of the workspace binary `name` (e.g. `telemetry-writer`), built first if it is missing or
/// older than the running test executable. Panics when it cannot be built.
pub fn bin_path(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = profile_dir(&test_exe);
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !fresh(&path, &test_exe) {
        build(name, &profile_dir);
    }
    assert!(
        path.is_file(),
        "{} missing after building it",
        path.display()
    );
    path
}

/// `target/<profile>` (or `target/<triple>/<profile>`) of a test executable in its `deps` folder.
fn profile_dir(test_exe: &Path) -> PathBuf {
    let deps = test_exe.parent().expect("the test executable's folder");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("the profile folder")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Whether `path` exists and was written no earlier than `than`.
fn fresh(path: &Path, than: &Path) -> bool {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    match (modified(path), modified(than)) {
        (Some(binary), Some(test)) => binary >= test,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Runs `cargo build --bin <name>` for the profile and target dir of `profile_dir`.
fn build(name: &str, profile_dir: &Path) {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the profile's name");
    let mut target_dir = profile_dir.parent().expect("the target dir");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(workspace_root())
        .args(["build", "--bin", name]);
    // The variables cargo set for the running test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) would reach
    // the build scripts that watch them (ring's watches CARGO_MANIFEST_DIR): every such build would then
    // rebuild ring and all that depends on it, and the next test build the same again.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_for_the_test) {
            cargo.env_remove(key);
        }
    }
    // A cross build keeps its profiles under `target/<triple>/`; the target dir is one up.
    if !target_dir.join("CACHEDIR.TAG").exists() {
        if let (Some(triple), Some(parent)) = (target_dir.file_name(), target_dir.parent()) {
            if parent.join("CACHEDIR.TAG").exists() {
                cargo.arg("--target").arg(triple);
                target_dir = parent;
            }
        }
    }
    cargo.arg("--target-dir").arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo
        .status()
        .unwrap_or_else(|e| panic!("running {cargo:?}: {e}"));
    assert!(status.success(), "{cargo:?} failed: {status}");
}

/// Whether cargo sets the variable `key` for a test (or build script) it runs, as opposed to the user's
/// settings of cargo itself (CARGO_HOME, CARGO_TARGET_DIR, CARGO_BUILD_*, ...).
fn set_for_the_test(key: &str) -> bool {
    const SET: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    SET.contains(&key) || key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_BIN_")
}

/// The workspace root: two folders up from this crate (`deploy/testkit`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_dir_is_above_deps() {
        let check = |exe: &str, expected: &str| {
            assert_eq!(profile_dir(Path::new(exe)), Path::new(expected), "{exe}");
        };
        check("/r/target/debug/deps/it-0123", "/r/target/debug");
        check(
            "/r/target/x86_64-unknown-linux-gnu/release/deps/it-0123",
            "/r/target/x86_64-unknown-linux-gnu/release",
        );
        check("/r/target/debug/examples/demo", "/r/target/debug/examples");
    }

    #[test]
    fn only_the_variables_cargo_sets_for_a_test_are_dropped() {
        let check = |key: &str, dropped: bool| assert_eq!(set_for_the_test(key), dropped, "{key}");
        check("CARGO_MANIFEST_DIR", true);
        check("CARGO_PKG_NAME", true);
        check("CARGO_BIN_EXE_telemetry-web", true);
        check("CARGO_HOME", false);
        check("CARGO_TARGET_DIR", false);
        check("CARGO_BUILD_JOBS", false);
        check("CARGO", false);
    }

    #[test]
    fn a_missing_binary_is_not_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let test = dir.path().join("test");
        std::fs::write(&test, "").expect("write");
        assert!(!fresh(&dir.path().join("missing"), &test));
        let binary = dir.path().join("binary");
        std::fs::write(&binary, "").expect("write");
        assert!(fresh(&binary, &test));
    }
}
