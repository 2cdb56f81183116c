//! Creating the ring: the setup flags tried, fewest last.

use io_uring::IoUring;
use std::io;

/// Submission queue entries.
const ENTRIES: u32 = 1024;
/// Completion queue entries: multishot operations post many per
/// submission, and the kernel keeps what overflows. Each ring's queue is
/// resident memory: 64 KiB here, half what 8,192 cost (a server of 16
/// event loops started at 8.0 MiB with those, 7.1 with these).
const COMPLETIONS: u32 = 4096;
/// The environment variable that names the first [`Setup`] to try:
/// `deferred`, `cooperative` or `plain`.
pub(super) const SETUP_VARIABLE: &str = "ECHOKIT_URING_SETUP";
/// The environment variable that sets the streams' [`Buffers`], as
/// `COUNTxSIZE` (`128x16384`), to measure others than the default.
const BUFFERS_VARIABLE: &str = "ECHOKIT_URING_BUFFERS";
/// The environment variable that turns splicing off (`off`): the engine
/// then reads and writes, copying each echoed byte twice more, to
/// measure what splicing saves.
const SPLICE_VARIABLE: &str = "ECHOKIT_URING_SPLICE";
/// The environment variable that turns bundled receives off (`off`).
const BUNDLES_VARIABLE: &str = "ECHOKIT_URING_BUNDLES";

/// The ring of buffers the streams of one event loop receive into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Buffers {
    /// How many (a power of two).
    pub(super) count: u16,
    /// Bytes each.
    pub(super) size: usize,
}

impl Buffers {
    /// The default, or what `ECHOKIT_URING_BUFFERS` says when it says
    /// it well (a power of two up to 32,768 buffers of 1 B to 1 MiB).
    pub(super) fn preferred(default: Buffers) -> Buffers {
        let Ok(value) = std::env::var(BUFFERS_VARIABLE) else {
            return default;
        };
        let parsed = value.split_once('x').and_then(|(count, size)| {
            let count: u16 = count.parse().ok()?;
            let size: usize = size.parse().ok()?;
            let fits = count.is_power_of_two() && count <= 1 << 15 && (1..=1 << 20).contains(&size);
            fits.then_some(Buffers { count, size })
        });
        parsed.unwrap_or(default)
    }
}

/// Whether streams splice: unless `ECHOKIT_URING_SPLICE` is `off`.
pub(super) fn splicing() -> bool {
    std::env::var(SPLICE_VARIABLE).as_deref() != Ok("off")
}

/// Whether stream receives take bundles of buffers where the kernel
/// can: unless `ECHOKIT_URING_BUNDLES` is `off`.
pub(super) fn bundling() -> bool {
    std::env::var(BUNDLES_VARIABLE).as_deref() != Ok("off")
}

/// Which io_uring setup flags a ring was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `SINGLE_ISSUER | COOP_TASKRUN | DEFER_TASKRUN`: the kernel runs the
    /// completion work only when the event loop waits, on its thread,
    /// without interrupting it.
    Deferred,
    /// `COOP_TASKRUN`: completion work does not interrupt the loop, but
    /// runs whenever it enters the kernel.
    Cooperative,
    /// No flags.
    Plain,
}

impl Setup {
    /// The setup to try first: [`Setup::Deferred`], unless the
    /// `ECHOKIT_URING_SETUP` environment variable names another.
    pub(super) fn preferred() -> Setup {
        match std::env::var(SETUP_VARIABLE).as_deref() {
            Ok("cooperative") => Setup::Cooperative,
            Ok("plain") => Setup::Plain,
            _ => Setup::Deferred,
        }
    }

    /// The next setup to try when the kernel refuses this one.
    fn fewer(self) -> Option<Setup> {
        match self {
            Setup::Deferred => Some(Setup::Cooperative),
            Setup::Cooperative => Some(Setup::Plain),
            Setup::Plain => None,
        }
    }

    /// Creates a ring with this setup's flags or, where the kernel
    /// refuses them (`EINVAL`), with fewer; returns it and the setup used.
    pub(super) fn ring(self) -> io::Result<(IoUring, Setup)> {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(COMPLETIONS);
        match self {
            Setup::Deferred => {
                builder
                    .setup_single_issuer()
                    .setup_coop_taskrun()
                    .setup_defer_taskrun();
            }
            Setup::Cooperative => {
                builder.setup_coop_taskrun();
            }
            Setup::Plain => {}
        }
        match (builder.build(ENTRIES), self.fewer()) {
            (Ok(ring), _) => Ok((ring, self)),
            (Err(err), Some(fewer)) if err.raw_os_error() == Some(libc::EINVAL) => fewer.ring(),
            (Err(err), _) => Err(err),
        }
    }
}

/// The error for a ring that cannot be set up, with what to do.
pub(super) fn unavailable(err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!(
            "io_uring cannot be set up here: {err} (kernel.io_uring_disabled, seccomp or an old \
             kernel); use --io epoll"
        ),
    )
}
