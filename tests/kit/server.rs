//! A running `echokit serve`: started on a port, its `listening on` line
//! read, killed on drop.

use super::target::Target;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a server may take to print its `listening on` line.
const STARTUP: Duration = Duration::from_secs(60);

/// A server process; dropping it kills it.
pub struct Server {
    child: Child,
    /// The address from the `listening on` line.
    pub addr: SocketAddr,
    /// The `listening on` line itself.
    pub line: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    extra_stdout: Arc<Mutex<Vec<u8>>>,
    what: String,
}

impl Server {
    /// Runs `serve --listen LISTEN EXTRA...` and waits for `listening on`.
    pub fn start(target: &Target, listen: &str, extra: &[String]) -> Result<Server, String> {
        let mut cmd = target.command()?;
        cmd.args(["serve", "--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!(
            "{} serve --listen {listen} {}",
            target.build,
            extra.join(" ")
        );
        let mut child = cmd
            .spawn()
            .map_err(|err| format!("cannot start `{what}`: {err}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain(child.stderr.take(), stderr.clone());

        let extra_stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take();
        let rest = extra_stdout.clone();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            let mut buf = Vec::new();
            let _ = reader.read_to_end(&mut buf);
            lock(&rest).extend_from_slice(&buf);
        });

        let mut server = Server {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            line: String::new(),
            stderr,
            extra_stdout,
            what,
        };
        let line = match rx.recv_timeout(STARTUP) {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.wait().ok();
                thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "`{}` exited ({}) before printing `listening on`; stderr: {}",
                    server.what,
                    status.map_or("unknown status".to_owned(), |s| s.to_string()),
                    server.stderr()
                ));
            }
            Ok(Err(err)) => return Err(format!("reading `{}`'s stdout: {err}", server.what)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "`{}` printed nothing within {STARTUP:?}; stderr: {}",
                    server.what,
                    server.stderr()
                ))
            }
        };
        let line = line.trim_end_matches('\n').to_owned();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                format!(
                    "`{}` printed {line:?}, not `listening on IP:PORT`",
                    server.what
                )
            })?;
        server.addr = addr;
        server.line = line;
        Ok(server)
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Fails if the server exited, or printed more than its one line on
    /// stdout.
    pub fn ensure_alive(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(50));
            return Err(format!(
                "the server `{}` died ({status}); stderr: {}",
                self.what,
                self.stderr()
            ));
        }
        let extra = lock(&self.extra_stdout);
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn drain(from: Option<impl Read + Send + 'static>, into: Arc<Mutex<Vec<u8>>>) {
    let Some(mut from) = from else { return };
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&into).extend_from_slice(&buf[..n]);
        }
    });
}

/// Locks, ignoring poisoning (a panicking test thread must not hide output).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
