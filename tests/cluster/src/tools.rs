//! Where install-tools.sh put the binaries, and which Kubernetes release they are.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The Kubernetes release the tools are built at, read from install-tools.sh's pin so the
/// script and the harness cannot disagree about the cache directory.
pub const K8S_VERSION: &str = k8s_version(include_str!("../install-tools.sh"));

const fn k8s_version(script: &str) -> &str {
    const KEY: &[u8] = b"\nK8S_VERSION=";
    let bytes = script.as_bytes();
    let mut i = 0;
    while i + KEY.len() < bytes.len() {
        let mut j = 0;
        while j < KEY.len() && bytes[i + j] == KEY[j] {
            j += 1;
        }
        if j == KEY.len() {
            let start = i + KEY.len();
            let mut end = start;
            while end < bytes.len() && bytes[end] != b'\n' {
                end += 1;
            }
            let (_, rest) = bytes.split_at(start);
            let (value, _) = rest.split_at(end - start);
            return match std::str::from_utf8(value) {
                Ok(v) => v,
                Err(_) => panic!("K8S_VERSION in install-tools.sh is not UTF-8"),
            };
        }
        i += 1;
    }
    panic!("install-tools.sh has no K8S_VERSION= line")
}

/// The directory of built tools: `${XDG_CACHE_HOME:-$HOME/.cache}/io360/k8s/<version>`.
#[derive(Debug, Clone)]
pub struct Tools {
    root: PathBuf,
}

impl Tools {
    /// Finds the tool cache the way install-tools.sh computes it.
    pub fn locate() -> Result<Tools> {
        let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                PathBuf::from(std::env::var_os("HOME").ok_or(Error::NoCacheDir)?).join(".cache")
            }
        };
        Ok(Tools {
            root: cache.join("io360").join("k8s").join(K8S_VERSION),
        })
    }

    /// The path of one binary, or [`Error::MissingTool`] when it is not there.
    pub fn bin(&self, name: &str) -> Result<PathBuf> {
        let path = self.root.join("bin").join(name);
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::MissingTool {
                tool: name.to_string(),
                path,
            })
        }
    }

    /// KWOK's stage configuration (install-tools.sh writes it next to `bin/`).
    pub fn kwok_stages(&self) -> Result<PathBuf> {
        let path = self.root.join("kwok-stages.yaml");
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingTool {
                tool: "kwok-stages.yaml".to_string(),
                path,
            })
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_script_pin() {
        assert!(K8S_VERSION.starts_with("v1."), "{K8S_VERSION}");
        assert_eq!(
            k8s_version("#!/bin/sh\nK8S_VERSION=v1.2.3\nX=1\n"),
            "v1.2.3"
        );
    }
}
