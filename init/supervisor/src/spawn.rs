//! Starting a service process with fork + execve, so that nothing but the
//! reaper ever waits on it (std's `Command::spawn` waits on a child whose
//! exec failed, which would race the reaper). Everything the child needs is
//! prepared before the fork: after it, only async-signal-safe calls.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::{fork, ForkResult};

/// What to run and where its output goes.
pub(crate) struct Launch {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: Option<CString>,
    /// stdout and stderr both go here.
    pub output: OwnedFd,
    /// `cgroup.procs` of the service's cgroup, opened for writing.
    pub cgroup_procs: Option<OwnedFd>,
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    EmptyCommand,
    #[error("argument or environment contains a NUL byte")]
    Nul,
    #[error("{0}: {1}")]
    Sys(&'static str, nix::Error),
    #[error("exec {program}: {errno}")]
    Exec { program: String, errno: nix::Error },
}

/// Forks and execs; returns the pid once the exec succeeded.
pub(crate) fn spawn(l: &Launch) -> Result<i32, SpawnError> {
    if l.argv.is_empty() {
        return Err(SpawnError::EmptyCommand);
    }
    // The child reports an exec failure through this pipe; a successful
    // exec closes it (O_CLOEXEC), so the parent reads EOF.
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Sys("pipe", e))?;
    let devnull = c"/dev/null";
    let argv: Vec<*const libc::c_char> = l
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = l
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let out_fd = l.output.as_raw_fd();
    let cg_fd = l.cgroup_procs.as_ref().map(|f| f.as_raw_fd());
    let cwd = l.cwd.as_ref().map(|c| c.as_ptr());
    let err_fd = err_w.as_raw_fd();

    // SAFETY: after fork the child only makes async-signal-safe calls
    // (setsid, open, dup2, write, chdir, sigprocmask, execve, _exit) on data
    // prepared before the fork, and never returns into Rust code.
    match unsafe { fork() }.map_err(|e| SpawnError::Sys("fork", e))? {
        ForkResult::Child => {
            // SAFETY: see above; every pointer refers to memory owned by the
            // parent's stack frame, which the child's copy still holds.
            unsafe {
                let fail = |step: libc::c_int| -> ! {
                    let errno = *libc::__errno_location();
                    let msg = [step, errno];
                    libc::write(err_fd, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
                    libc::_exit(127)
                };
                // Signals PID 1 blocks or handles must be default in services.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                if libc::setsid() < 0 {
                    fail(1);
                }
                if let Some(fd) = cg_fd {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        fail(2);
                    }
                }
                let null = libc::open(devnull.as_ptr(), libc::O_RDONLY);
                if null < 0
                    || libc::dup2(null, 0) < 0
                    || libc::dup2(out_fd, 1) < 0
                    || libc::dup2(out_fd, 2) < 0
                {
                    fail(3);
                }
                if let Some(dir) = cwd {
                    if libc::chdir(dir) < 0 {
                        fail(4);
                    }
                }
                libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
                fail(5)
            }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(&err_r, &mut buf).unwrap_or(0);
            if n == 8 {
                let step = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let errno =
                    nix::Error::from_raw(i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
                let what = ["", "setsid", "join cgroup", "set up stdio", "chdir", "exec"];
                let program = l.argv[0].to_string_lossy().into_owned();
                return Err(match step {
                    5 => SpawnError::Exec { program, errno },
                    s => SpawnError::Sys(what.get(s as usize).copied().unwrap_or("start"), errno),
                });
            }
            Ok(child.as_raw())
        }
    }
}
