//! The open-files limit: 1000 connections need 1000 descriptors in this
//! process (and as many in the server, which inherits the limit).

use std::sync::Mutex;

/// Makes sure the soft `RLIMIT_NOFILE` is at least `needed`, raising it
/// towards the hard limit in-process if it is lower; fails with the remedy
/// when the hard limit is too low.
pub fn ensure_open_files(needed: usize) -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let needed = needed as libc::rlim_t;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(format!(
            "this test needs {needed} open files but `ulimit -n` is {} with a hard limit of {}: \
             raise the hard limit (e.g. `ulimit -Hn {needed}` as root, or LimitNOFILE in the \
             service or container settings) and run again",
            limit.rlim_cur, limit.rlim_max
        ));
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max.min(needed.max(8192)),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "raising the open-files limit from {} to {}: {}",
            limit.rlim_cur,
            raised.rlim_cur,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
