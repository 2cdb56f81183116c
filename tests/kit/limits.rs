//! The open-files limit: 1000 connections need 1000 descriptors in this
//! process (and as many in the server, which inherits the limit).

use crate::support;
use std::sync::Mutex;

/// Makes sure the soft `RLIMIT_NOFILE` is at least `needed`, raising it
/// towards the hard limit in-process if it is lower; fails with the remedy
/// when the hard limit is too low.
pub fn ensure_open_files(needed: usize) -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = support::lock(&LOCK);
    let needed = needed as libc::rlim_t;
    let (soft, hard) =
        support::open_files_limit().map_err(|err| format!("getrlimit(RLIMIT_NOFILE): {err}"))?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "this test needs {needed} open files but `ulimit -n` is {soft} with a hard limit of \
             {hard}: raise the hard limit (e.g. `ulimit -Hn {needed}` as root, or LimitNOFILE in \
             the service or container settings) and run again"
        ));
    }
    let raised = hard.min(needed.max(8192));
    support::set_open_files_limit(raised, hard)
        .map_err(|err| format!("raising the open-files limit from {soft} to {raised}: {err}"))
}
