//! Starting a process with fork + execve. Not `std::process::Command`: on an
//! exec failure std waits on that child itself (and asserts it succeeds),
//! which would race the [`crate::reaper`] and could panic PID 1. Everything
//! the child needs is prepared before the fork; after it the child makes only
//! async-signal-safe calls.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where a program is looked up when its name has no `/` and the command's
/// environment has no `PATH`.
const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// A process to start: always in its own session, stdin from /dev/null,
/// stdout and stderr into one descriptor (or /dev/null).
#[derive(Debug)]
pub struct Command {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    output: Option<OwnedFd>,
    cgroup_procs: Option<OwnedFd>,
}

impl Command {
    /// `argv[0]` is a path, or a name looked up in the command's `PATH`.
    /// The environment starts empty.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            output: None,
            cgroup_procs: None,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (String, String)>) -> Self {
        self.env.extend(vars.into_iter().cloned());
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Where stdout and stderr go (one descriptor keeps their order).
    pub fn output(mut self, fd: OwnedFd) -> Self {
        self.output = Some(fd);
        self
    }

    /// A cgroup's `cgroup.procs`, opened for writing: the child moves itself
    /// there before exec, so nothing it runs escapes the cgroup.
    pub fn cgroup_procs(mut self, fd: OwnedFd) -> Self {
        self.cgroup_procs = Some(fd);
        self
    }
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    EmptyCommand,
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    #[error("{program}: not found in PATH {path:?}")]
    NotFound { program: String, path: String },
    #[error("{0}: {1}")]
    Sys(&'static str, nix::Error),
    #[error("exec {program}: {errno}")]
    Exec { program: String, errno: nix::Error },
}

/// A forked child whose exec outcome is still to be read.
pub(crate) struct Forked {
    pub pid: i32,
    program: String,
    /// Read end of the child's error pipe: EOF once exec succeeded.
    errors: OwnedFd,
}

/// The steps the child reports failing, by number.
const STEPS: [&str; 6] = [
    "start",
    "setsid",
    "join cgroup",
    "set up stdio",
    "chdir",
    "exec",
];
const STEP_EXEC: i32 = 5;
/// One past the highest signal number on Linux.
const NSIG: libc::c_int = 65;

/// Forks; the child sets itself up and execs. Call [`Forked::finish`] next.
pub(crate) fn fork_exec(cmd: &Command) -> Result<Forked, SpawnError> {
    let Some(program) = cmd.argv.first() else {
        return Err(SpawnError::EmptyCommand);
    };
    let cstr = |s: &str| CString::new(s).map_err(|_| SpawnError::Nul(s.to_string()));
    let path = resolve(program, &cmd.env)?;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SpawnError::Nul(path.display().to_string()))?;
    let argv = cmd
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = cmd
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = match &cmd.cwd {
        Some(d) => Some(
            CString::new(d.as_os_str().as_bytes())
                .map_err(|_| SpawnError::Nul(d.display().to_string()))?,
        ),
        None => None,
    };
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // The child reports a failed step through this pipe; a successful exec
    // closes it (O_CLOEXEC), so the parent reads EOF.
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Sys("pipe", e))?;
    let out_fd = cmd.output.as_ref().map(|f| f.as_raw_fd());
    let cg_fd = cmd.cgroup_procs.as_ref().map(|f| f.as_raw_fd());
    let cwd_ptr = cwd.as_ref().map(|c| c.as_ptr());
    let err_fd = err_w.as_raw_fd();

    // SAFETY: fork has no memory-safety preconditions; the child branch
    // below only makes async-signal-safe calls and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Sys("fork", nix::Error::last()));
    }
    if pid == 0 {
        // SAFETY: in the child of a (possibly multithreaded) process: only
        // async-signal-safe calls (sigaction, sigprocmask, setsid, write,
        // open, dup2, chdir, execve, _exit) on memory prepared before the
        // fork, which the child's copy of the address space still holds.
        unsafe {
            child(
                path.as_ptr(),
                &argv_ptrs,
                &env_ptrs,
                out_fd,
                cg_fd,
                cwd_ptr,
                err_fd,
            )
        }
    }
    Ok(Forked {
        pid,
        program: program.clone(),
        errors: err_r,
    })
}

impl Forked {
    /// Waits for the exec (EOF on the error pipe: a short blocking read, as
    /// in any spawn) and turns a failure report into an error. A child that
    /// failed has exited; the reaper collects it.
    pub(crate) fn finish(self) -> Result<i32, SpawnError> {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&self.errors, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(SpawnError::Sys("read exec status", e)),
            }
        }
        if got < buf.len() {
            return Ok(self.pid);
        }
        let step = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let errno = nix::Error::from_raw(i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
        Err(if step == STEP_EXEC {
            SpawnError::Exec {
                program: self.program,
                errno,
            }
        } else {
            let what = usize::try_from(step)
                .ok()
                .and_then(|s| STEPS.get(s))
                .copied()
                .unwrap_or("start");
            SpawnError::Sys(what, errno)
        })
    }
}

/// The child's side of the fork. Never returns.
///
/// # Safety
/// Must only run in a freshly forked child; every pointer must be valid.
unsafe fn child(
    path: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    out_fd: Option<libc::c_int>,
    cg_fd: Option<libc::c_int>,
    cwd: Option<*const libc::c_char>,
    err_fd: libc::c_int,
) -> ! {
    // SAFETY: (whole body) the caller guarantees a fresh child and valid
    // pointers; each call is async-signal-safe.
    unsafe {
        let fail = |step: i32| -> ! {
            let msg = [step, *libc::__errno_location()];
            libc::write(err_fd, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
            libc::_exit(127)
        };
        // Dispositions PID 1 set to "ignore" (Rust ignores SIGPIPE) survive
        // exec; services start with every signal at its default and unblocked.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..NSIG {
            // SIGKILL, SIGSTOP and libc's reserved signals refuse: harmless.
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Own session: signals to PID 1's process group do not reach it.
        if libc::setsid() < 0 {
            fail(1);
        }
        if let Some(fd) = cg_fd {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(2);
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            fail(3);
        }
        let out = out_fd.unwrap_or(null);
        if libc::dup2(null, 0) < 0 || libc::dup2(out, 1) < 0 || libc::dup2(out, 2) < 0 {
            fail(3);
        }
        if let Some(dir) = cwd {
            if libc::chdir(dir) < 0 {
                fail(4);
            }
        }
        libc::execve(path, argv.as_ptr(), envp.as_ptr());
        fail(STEP_EXEC)
    }
}

/// The file to exec: `program` itself when it names a path, else the first
/// executable match in the command's `PATH` (looked up before the fork).
fn resolve(program: &str, env: &[(String, String)]) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
        .ok_or_else(|| SpawnError::NotFound {
            program: program.to_string(),
            path: path.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_through_path() {
        let env = vec![("PATH".to_string(), "/nonexistent:/bin".to_string())];
        assert_eq!(resolve("sh", &env).unwrap(), Path::new("/bin/sh"));
        assert_eq!(resolve("./x", &env).unwrap(), Path::new("./x"));
        let err = resolve("no-such-program-kiln", &env).unwrap_err();
        assert!(err.to_string().contains("no-such-program-kiln"), "{err}");
    }
}
