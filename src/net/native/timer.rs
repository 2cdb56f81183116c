//! Timeouts to the microsecond: epoll counts its timeout in whole
//! milliseconds (mio rounds up), so a wait for 150 µs would sleep 1 ms.
//! Short timeouts arm a timerfd registered with the poll instead, which
//! wakes it on time; an open-loop load generator sending a message every
//! 20 µs needs that, or its own lateness would count as the server's.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The poll token of the timer: no socket has it (slab keys are small).
pub(super) const TOKEN: Token = Token(usize::MAX);
/// Timeouts of at least this long keep epoll's millisecond: a late wake-up
/// of under a millisecond in so long does not matter.
const PRECISE_BELOW: Duration = Duration::from_millis(50);

/// A one-shot timerfd, registered with the poll once created.
pub(super) struct Timer {
    fd: OwnedFd,
    armed: bool,
}

impl Timer {
    /// Creates the timer and registers it with `registry`.
    pub(super) fn new(registry: &Registry) -> io::Result<Self> {
        // SAFETY: timerfd_create has no memory-safety preconditions.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), TOKEN, Interest::READABLE)?;
        Ok(Timer { fd, armed: false })
    }

    /// Whether a wait of `timeout` needs the timer to end on time.
    pub(super) fn wanted(timeout: Option<Duration>) -> Option<Duration> {
        timeout.filter(|t| !t.is_zero() && *t < PRECISE_BELOW && t.subsec_nanos() % 1_000_000 != 0)
    }

    /// Fires once, `after` from now (or never, for `None`).
    pub(super) fn set(&mut self, after: Option<Duration>) -> io::Result<()> {
        if after.is_none() && !self.armed {
            return Ok(());
        }
        let after = after.unwrap_or(Duration::ZERO);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime reads the spec we pass and writes no old
        // value (null).
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = !after.is_zero();
        Ok(())
    }

    /// The timer fired: takes its count, so that it can fire again.
    pub(super) fn fired(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: read writes at most the 8 bytes of the buffer we pass.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        self.armed = false;
    }
}
