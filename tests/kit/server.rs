//! A running `echokit serve`: started on a port, its `listening on` line
//! read, killed on drop (a [`ServerProcess`] with the kit's messages).

use super::target::Target;
use crate::support::{ServerProcess, StartError, StderrTo};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

pub use crate::support::lock;

/// How long a server may take to print its `listening on` line.
const STARTUP: Duration = Duration::from_secs(60);

/// A server process; dropping it kills it.
pub struct Server {
    process: ServerProcess,
    /// The address from the `listening on` line.
    pub addr: SocketAddr,
    /// The `listening on` line itself.
    pub line: String,
    what: String,
}

impl Server {
    /// Runs `serve --listen LISTEN EXTRA...` and waits for `listening on`.
    pub fn start(target: &Target, listen: &str, extra: &[String]) -> Result<Server, String> {
        let mut cmd = target.command()?;
        cmd.args(["serve", "--listen", listen]).args(extra);
        let what = format!(
            "{} serve --listen {listen} {}",
            target.build,
            extra.join(" ")
        );
        let mut process = ServerProcess::spawn(cmd, StderrTo::Keep)
            .map_err(|err| format!("cannot start `{what}`: {err}"))?;
        match process.wait_listening(STARTUP) {
            Ok(addr) => Ok(Server {
                addr,
                line: process.line.clone(),
                process,
                what,
            }),
            Err(StartError::NoLine) => {
                let status = process.child.wait().ok();
                thread::sleep(Duration::from_millis(50));
                Err(format!(
                    "`{what}` exited ({}) before printing `listening on`; stderr: {}",
                    status.map_or("unknown status".to_owned(), |s| s.to_string()),
                    process.stderr()
                ))
            }
            Err(StartError::Read(err)) => Err(format!("reading `{what}`'s stdout: {err}")),
            Err(StartError::Timeout) => Err(format!(
                "`{what}` printed nothing within {STARTUP:?}; stderr: {}",
                process.stderr()
            )),
            Err(StartError::NotListening(line)) => Err(format!(
                "`{what}` printed {line:?}, not `listening on IP:PORT`"
            )),
        }
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Fails if the server exited, or printed more than its one line on
    /// stdout.
    pub fn ensure_alive(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.process.child.try_wait() {
            thread::sleep(Duration::from_millis(50));
            return Err(format!(
                "the server `{}` died ({status}); stderr: {}",
                self.what,
                self.stderr()
            ));
        }
        let extra = self.process.extra_stdout();
        if !extra.is_empty() {
            return Err(format!(
                "the server printed more than its `listening on` line on stdout: {:?}",
                String::from_utf8_lossy(&extra)
            ));
        }
        Ok(())
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    /// For failure messages: the command and its stderr.
    pub fn describe(&self) -> String {
        format!(
            "server `{}` on {}; its stderr: {:?}",
            self.what,
            self.addr,
            self.stderr()
        )
    }
}
