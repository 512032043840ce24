//! Shared fixtures for the integration tests: paths of the built binaries, temporary directories.

use std::path::PathBuf;

/// Path of the `imsg-sim` binary built for this test run.
pub fn imsg_sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imsg-sim"))
}

/// Path of the `imsg-bridge` binary built for this test run.
pub fn imsg_bridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imsg-bridge"))
}

#[test]
fn both_binaries_are_built_for_the_tests() {
    assert!(imsg_sim_bin().is_file(), "{}", imsg_sim_bin().display());
    assert!(imsg_bridge_bin().is_file(), "{}", imsg_bridge_bin().display());
}
