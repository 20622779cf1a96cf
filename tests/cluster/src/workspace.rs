//! Binaries of this workspace that the suite runs as real processes (the operator, the
//! `io360` tier binary). `cargo test` builds only the binaries of the package under test, so
//! they are built here through cargo itself, into the same target directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Building a workspace binary failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// cargo could not be run.
    #[error("running cargo: {0}")]
    Spawn(#[from] std::io::Error),
    /// cargo failed; its stderr says why.
    #[error("`cargo build -p {package} --bin {bin}` failed:\n{stderr}")]
    Failed {
        /// The package.
        package: String,
        /// The binary.
        bin: String,
        /// cargo's error output.
        stderr: String,
    },
    /// cargo succeeded but named no executable.
    #[error("cargo built {package} but reported no executable named {bin}")]
    NoExecutable {
        /// The package.
        package: String,
        /// The binary.
        bin: String,
    },
}

/// The workspace root (two levels above this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/cluster sits two levels below the workspace root")
        .to_path_buf()
}

/// Builds binary `bin` of workspace package `package` (dev profile) and returns its path.
/// Concurrent callers in one test process build one at a time.
pub fn binary(package: &str, bin: &str) -> Result<PathBuf, BuildError> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .output()?;
    if !out.status.success() {
        return Err(BuildError::Failed {
            package: package.into(),
            bin: bin.into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| BuildError::NoExecutable {
            package: package.into(),
            bin: bin.into(),
        })
}
