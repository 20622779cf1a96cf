//! The network and mount namespaces a real-node test run lives in.
//!
//! A real node gives pods and Services addresses that are not loopback (a bridge, pod IPs,
//! ClusterIPs). Those addresses must exist only inside a network namespace the run made itself,
//! and only processes inside it may dial them. [`enter`] moves the whole test process into a new
//! network namespace and a new mount namespace before any thread starts, so everything it starts
//! afterwards (etcd, the API server, containerd, the kubelet, kubectl, the test's own HTTP
//! clients) is in there too, and nothing else on the machine can see or reach those addresses.
//!
//! The mount namespace keeps what containerd, CNI and the kubelet write to fixed system paths
//! (`/run/containerd`, `/run/netns`, `/var/lib/cni`, `/var/log/pods`) in the run's own directory:
//! those paths are bind-mounted from it, privately, so the host's are never touched, and every
//! mount made during the run (container root filesystems, pod network namespaces, projected
//! volumes) disappears with the namespace.
//!
//! What the namespaces cannot hold is cgroups, which are machine-wide: the kubelet is given a
//! cgroup root named after the run (see [`RunNamespace::cgroup_root`]), and [`sweep_stale_runs`]
//! removes the cgroups and processes of runs that were killed before their teardown.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The node's address: the bridge's own address, the pods' gateway, where the API server,
/// CoreDNS and the kubelet listen for pods.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 245, 0, 1);
/// The real node's pod network (the CNI bridge's subnet).
pub const POD_CIDR: &str = "10.245.0.0/24";
/// The Service network the API server allocates ClusterIPs from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The bridge the CNI plugin attaches pods to; made here so the node's address exists before
/// the first pod.
pub const BRIDGE: &str = "io360br0";
/// Prefix of a run's directory in the temporary directory and of its cgroup root.
pub const RUN_PREFIX: &str = "io360-node-";

/// System paths that containerd, CNI and the kubelet write to whatever their configuration
/// says; each is bind-mounted from the run's directory inside the run's mount namespace.
const PRIVATE_PATHS: &[&str] = &[
    "/run/containerd",
    "/run/netns",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
];

/// The namespaces of this run and its directory. Created once, before any thread exists.
#[derive(Debug)]
pub struct RunNamespace {
    dir: tempfile::TempDir,
}

impl RunNamespace {
    /// The run's directory (containerd's state, the kubelet's root, volumes, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The run's name, e.g. `io360-node-Ab12Cd`: its directory's name and its cgroup root.
    pub fn name(&self) -> String {
        self.dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| RUN_PREFIX.to_string())
    }

    /// The cgroup (relative to each hierarchy's root) under which the kubelet puts every pod.
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.name())
    }

    /// Creates the cgroup root in every hierarchy: the kubelet refuses a root that is missing.
    pub fn create_cgroup_root(&self) -> Result<()> {
        for hierarchy in cgroup_hierarchies() {
            let path = hierarchy.join(self.name());
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("creating cgroup {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Kills every process left in the run's cgroups and processes that name the run's
    /// directory (containerd's shims outlive containerd by design), then removes the cgroups
    /// and unmounts what was mounted under the directory. Called after the kubelet and
    /// containerd were stopped; safe to call twice.
    pub fn teardown(&self) {
        kill_run(&self.name(), Some(std::process::id()));
        unmount_under(self.dir.path());
        // Pod network namespaces are files under /run/netns with a namespace mounted on each.
        for path in PRIVATE_PATHS {
            unmount_under(Path::new(path));
        }
    }
}

impl Drop for RunNamespace {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Moves this process into a new network namespace and a new mount namespace, brings up
/// loopback and the node's bridge, and bind-mounts the run's private copies of the system
/// paths containerd and the kubelet use.
///
/// Must be called before the process starts a second thread: a network namespace is a
/// property of a thread, and threads inherit it only from the thread that creates them.
pub fn enter() -> Result<RunNamespace> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::io(
            "a real node needs root (network and mount namespaces, containerd, the kubelet)",
            std::io::ErrorKind::PermissionDenied.into(),
        ));
    }
    sweep_stale_runs();
    let dir = crate::process::scratch_dir(RUN_PREFIX)?;

    // SAFETY: unshare only changes this thread's namespaces; nothing else runs yet.
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } != 0 {
        return Err(Error::io(
            "unshare(CLONE_NEWNET | CLONE_NEWNS)",
            std::io::Error::last_os_error(),
        ));
    }
    // Mounts made from now on stay in this namespace; the host's still show through.
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_SLAVE)?;

    for path in PRIVATE_PATHS {
        let target = Path::new(path);
        let source = dir.path().join("system").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&source)
            .map_err(|e| Error::io(format!("creating {}", source.display()), e))?;
        std::fs::create_dir_all(target)
            .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
        mount(Some(&source), target, None, libc::MS_BIND)?;
    }

    let node = format!("{NODE_IP}/24");
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "add", BRIDGE, "type", "bridge"],
        vec!["addr", "add", &node, "dev", BRIDGE],
        vec!["link", "set", BRIDGE, "up"],
        // ClusterIPs are not on any link; routing them to the bridge lets kube-proxy's rules
        // rewrite them. The namespace has no other link, so nothing leaves it.
        vec!["route", "add", "default", "dev", BRIDGE],
    ] {
        ip(&args)?;
    }
    for (key, value) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
    ] {
        let path = Path::new("/proc/sys").join(key);
        std::fs::write(&path, value)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(RunNamespace { dir })
}

fn ip(args: &[&str]) -> Result<()> {
    crate::process::run_blocking("ip", args).map(|_| ())
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("paths have no NUL")
}

fn mount(source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: u64) -> Result<()> {
    let source = source.map(cpath);
    let target_c = cpath(target);
    let fstype = fstype.map(|t| CString::new(t).expect("no NUL"));
    // SAFETY: every pointer is a valid NUL-terminated string or null, as mount(2) expects.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(
            format!("mounting {}", target.display()),
            std::io::Error::last_os_error(),
        ))
    }
}

/// Every mounted cgroup hierarchy (each v1 controller, named ones, and the v2 one).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(target))
        })
        .collect()
}

/// Unmounts everything mounted at or below `dir`, deepest first (lazily, so a mount still in
/// use goes as soon as it is let go).
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut targets: Vec<String> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape_mount_path))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let c = CString::new(target).expect("no NUL");
        // SAFETY: a valid path; failure (already unmounted) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if bytes[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes what runs that died before their teardown left: their processes (found by the
/// run's directory on their command line, or in the run's cgroups) and their cgroups. Their
/// directories go with the next [`crate::process::scratch_dir`] sweep.
pub fn sweep_stale_runs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(RUN_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        // SAFETY: kill with signal 0 only checks that the pid exists.
        let alive = owner.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            stale.push(name);
        }
    }
    // Cgroups whose run directory is already gone count as stale too.
    for hierarchy in cgroup_hierarchies() {
        if let Ok(entries) = std::fs::read_dir(&hierarchy) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(RUN_PREFIX) && !tmp.join(&name).exists() {
                    stale.push(name);
                }
            }
        }
    }
    stale.sort();
    stale.dedup();
    for name in stale {
        kill_run(&name, None);
    }
}

/// Kills the processes of run `name` (except `spare`, this process) and removes its cgroups.
fn kill_run(name: &str, spare: Option<u32>) {
    let marker = format!("/{name}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut found = 0;
        // Processes that name the run's directory: containerd, its shims, the kubelet.
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if Some(pid) == spare {
                    continue;
                }
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&marker) {
                    // SAFETY: sending a signal to a pid.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    found += 1;
                }
            }
        }
        // Processes in the run's cgroups: the containers.
        let mut cgroups = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            collect_dirs(&hierarchy.join(name), &mut cgroups);
        }
        for cgroup in &cgroups {
            let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if Some(pid) != spare {
                    // SAFETY: sending a signal to a pid.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    found += 1;
                }
            }
        }
        // Deepest first, so parents are empty when their turn comes.
        cgroups.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let mut left = 0;
        for cgroup in &cgroups {
            if std::fs::remove_dir(cgroup).is_err() && cgroup.exists() {
                left += 1;
            }
        }
        if (found == 0 && left == 0) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain/path"), "/plain/path");
        assert_eq!(unescape_mount_path(r"/tail\"), r"/tail\");
    }
}
