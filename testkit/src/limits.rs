//! The open-files limit: a thousand connections need a thousand
//! descriptors in the test and as many in the server, which inherits it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

/// This process's `RLIMIT_NOFILE` as (soft, hard).
pub fn open_files() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set_open_files(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes sure the soft limit is at least `needed`, raising it towards the
/// hard limit if it is lower; fails with the remedy when the hard limit is
/// too low.
pub fn ensure_open_files(needed: u64) -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = crate::lock(&LOCK);
    let (soft, hard) = open_files().map_err(|err| format!("getrlimit(RLIMIT_NOFILE): {err}"))?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "this needs {needed} open files but `ulimit -n` is {soft} with a hard limit of \
             {hard}: raise the hard limit (e.g. `ulimit -Hn {needed}` as root, or LimitNOFILE in \
             the service or container settings) and run again"
        ));
    }
    let raised = hard.min(needed.max(8192));
    set_open_files(raised, hard)
        .map_err(|err| format!("raising the open-files limit from {soft} to {raised}: {err}"))
}

/// Raises the soft limit to the hard one; returns the soft limit now in
/// force.
pub fn raise_open_files_to_hard() -> io::Result<u64> {
    let (soft, hard) = open_files()?;
    if soft < hard {
        set_open_files(hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// Makes `cmd`'s process start with `RLIMIT_NOFILE` set to `n` (soft and
/// hard).
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe,
    // and allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
