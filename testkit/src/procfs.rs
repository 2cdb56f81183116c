//! What a process costs, from /proc.

use std::time::Duration;

/// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`; `None` if
/// the process is gone or the field missing.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// User plus system CPU time of the whole process `pid` (all threads),
/// from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|err| format!("reading /proc/{pid}/stat: {err}"))?;
    // Fields after the command name, which is in parentheses: the state is
    // field 3, utime field 14 and stime field 15.
    let rest = &stat[stat.rfind(')').ok_or("/proc/PID/stat: no comm")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} is not a number", i + 3))
    };
    let ticks = tick(11)? + tick(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}
