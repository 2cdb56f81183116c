//! The server's log on stderr: the engine's events in users' words.

use echokit::engine::guard::{self, DropReason};
use echokit::engine::{Closed, Event, Observer};

/// How much `serve` says on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    /// Nothing at all (`-q`).
    Silent,
    /// Server-level errors only (the default).
    Errors,
    /// Also every connection's open and close (`-v`).
    Connections,
}

impl Level {
    /// The level `-q` and `-v` ask for.
    pub(super) fn from_flags(quiet: bool, verbose: bool) -> Level {
        match (quiet, verbose) {
            (true, _) => Level::Silent,
            (false, true) => Level::Connections,
            (false, false) => Level::Errors,
        }
    }

    /// Prints `message` as echokit's when `level` is wanted.
    pub(super) fn say(self, level: Level, message: std::fmt::Arguments) {
        if self >= level {
            eprintln!("echokit: {message}");
        }
    }
}

/// Prints a server's events at a [`Level`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Log(pub Level);

impl Observer for Log {
    fn observe(&mut self, event: Event<'_>) {
        let Log(level) = *self;
        match event {
            Event::Opened { peer } => level.say(Level::Connections, format_args!("open {peer}")),
            Event::Proxied { peer, header } => {
                level.say(Level::Connections, format_args!("proxy {peer}: {header}"))
            }
            Event::Closed {
                peer,
                echoed,
                lasted,
                why,
            } => {
                let why = match why {
                    Closed::Finished => "closed by peer".to_owned(),
                    Closed::Failed(err) => err.to_string(),
                    Closed::IdleTimeout => "idle timeout".to_owned(),
                    Closed::ShutdownTimeout => "shutdown timeout".to_owned(),
                    Closed::HeaderRefused(reason) => {
                        format!("PROXY header refused: {reason}; nothing echoed")
                    }
                };
                let seconds = lasted.as_secs_f64();
                level.say(
                    Level::Connections,
                    format_args!("close {peer}: echoed {echoed} bytes in {seconds:.3}s ({why})"),
                );
            }
            Event::Refused { peer, .. } => level.say(
                Level::Connections,
                format_args!("refused {peer}: --max-connections reached"),
            ),
            Event::AcceptFailed { error, .. } => level.say(
                Level::Errors,
                format_args!("accept failed: {error}; pausing"),
            ),
            Event::Dropping { from, reason } => {
                let why = match reason {
                    DropReason::ServicePort => "its source port is below 1024, a service's \
                        (further drops of this kind are only counted)"
                        .to_owned(),
                    DropReason::Loop => format!(
                        "it keeps returning what it was just sent, an echo loop; \
                         no echo to it for {} s",
                        guard::LOOP_PAUSE.as_secs_f64()
                    ),
                    DropReason::Rate => "it sends more than --udp-peer-rate".to_owned(),
                };
                level.say(
                    Level::Connections,
                    format_args!("udp: dropping datagrams from {from}: {why}"),
                )
            }
            Event::DatagramFailed { error } => {
                level.say(Level::Connections, format_args!("udp: {error}"))
            }
        }
    }
}
