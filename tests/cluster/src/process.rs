//! Child processes of the control plane: logged to files, stopped on drop, and killed by the
//! kernel when the test process dies.
//!
//! Processes are spawned from one long-lived thread because `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child exits, and test threads come and go.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Error, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("io360-cluster-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawning the process-spawner thread");
        tx
    })
}

/// A child process (a control-plane component, or a binary under test), its output in a log
/// file; stopped on drop and killed by the kernel if the test process dies first.
#[derive(Debug)]
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `program args`, stdout and stderr appended to `log`.
    pub fn start(name: &str, program: &Path, args: Vec<String>, log: PathBuf) -> Result<Process> {
        Process::start_with_env(name, program, args, Vec::new(), log)
    }

    /// Starts `program args` with extra environment variables.
    pub fn start_with_env(
        name: &str,
        program: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> Result<Process> {
        let mut proc = Process {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            envs,
            log,
            child: None,
        };
        proc.spawn()?;
        Ok(proc)
    }

    fn spawn(&mut self) -> Result<()> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| Error::io(format!("opening {}", self.log.display()), e))
        };
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner().send((command, tx)).map_err(|_| {
            Error::io(
                "spawner thread is gone",
                std::io::ErrorKind::BrokenPipe.into(),
            )
        })?;
        let child = rx
            .recv()
            .map_err(|_| {
                Error::io(
                    "spawner thread is gone",
                    std::io::ErrorKind::BrokenPipe.into(),
                )
            })?
            .map_err(|e| Error::io(format!("starting {}", self.program.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("stopped".into()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status.to_string())),
            Err(e) => Err(Error::io(format!("checking {}", self.name), e)),
        }
    }

    fn exited(&self, status: String) -> Error {
        Error::ProcessExited {
            name: self.name.clone(),
            status,
            log: self.log.display().to_string(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// How the process ended, or `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the process and starts it again with the same arguments.
    pub fn restart(&mut self, grace: Duration) -> Result<()> {
        self.stop(grace);
        self.spawn()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs `program args` to completion, before any runtime exists or from setup code, and
/// returns its stdout; a failure carries its output.
pub(crate) fn run_blocking(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Creates a temporary directory `<prefix>*` holding this process's pid, after removing
/// directories of the same prefix whose process is gone (a test run killed by Ctrl-C or a
/// timeout never reaches its destructors; the kernel kills its children, but files remain).
pub(crate) fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(prefix) {
                continue;
            }
            let owner = std::fs::read_to_string(entry.path().join("owner.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            // SAFETY: kill with signal 0 only checks that the pid exists.
            let gone = owner.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH));
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| Error::io(format!("creating a {prefix}* directory"), e))?;
    std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
        .map_err(|e| Error::io("writing owner.pid", e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_of_dead_processes_are_swept_and_live_ones_kept() {
        let prefix = format!("io360-sweep-test-{}-", std::process::id());
        let mut finished = Command::new("true").spawn().unwrap();
        let dead_pid = finished.id();
        finished.wait().unwrap();

        let stale = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .unwrap()
            .keep();
        std::fs::write(stale.join("owner.pid"), dead_pid.to_string()).unwrap();
        let live = scratch_dir(&prefix).unwrap();
        assert!(!stale.exists(), "the dead process's directory was kept");

        // A second sweep keeps the directory of this (live) process.
        let other = scratch_dir(&prefix).unwrap();
        assert!(live.path().exists() && other.path().exists());
    }

    #[test]
    fn a_stopped_process_reports_how_it_ended_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut proc = Process::start(
            "sh",
            Path::new("/bin/sh"),
            vec!["-c".into(), "echo about to fail; exit 3".into()],
            dir.path().join("sh.log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match proc.check_running() {
                Err(e) => break e,
                Ok(()) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(()) => panic!("sh did not exit"),
            }
        };
        let text = err.to_string();
        assert!(
            text.contains("exit status: 3") && text.contains("about to fail"),
            "{text}"
        );
    }
}
