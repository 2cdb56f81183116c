//! Child processes: clients run to completion, and servers that print
//! `listening on IP:PORT` first and are killed when dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Locks, ignoring poisoning (a panicking test thread must not hide output).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// Reads `pipe` to the end on a thread.
fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// A child's exit status (`None`: killed at its deadline) and output.
#[derive(Debug)]
pub struct Finished {
    /// How it exited, unless it had to be killed.
    pub status: Option<ExitStatus>,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

/// Waits up to `limit` for a started `child` with piped stdout and stderr,
/// killing it then; collects its output.
pub fn finish_within(mut child: Child, limit: Duration) -> Finished {
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = wait_deadline(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = |reader: JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned()
    };
    Finished {
        status,
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

/// Runs `cmd` with `input` on its stdin, waiting up to `limit` as
/// [`finish_within`] does.
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> io::Result<Finished> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that exits without reading closes the pipe: not an error.
        let _ = stdin.write_all(input);
    }
    Ok(finish_within(child, limit))
}

/// How a command is shown in messages: its program and arguments.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What happens to a server's stderr.
pub enum StderrTo {
    /// Passed through to ours.
    Inherit,
    /// Kept, for [`ServerProcess::stderr`].
    Keep,
    /// Kept, and each line also printed on our stderr after this prefix.
    EchoAndKeep(String),
}

/// Why a server did not report its address.
#[derive(Debug)]
pub enum StartError {
    /// Its stdout ended before a line (it exited, most likely).
    NoLine,
    /// Reading its stdout failed.
    Read(io::Error),
    /// No line within the time allowed.
    Timeout,
    /// The first line, which is not `listening on IP:PORT`.
    NotListening(String),
}

/// A server process (anything printing `listening on IP:PORT` first on
/// stdout); killed on drop unless it has been seen to exit.
pub struct ServerProcess {
    child: Child,
    /// The address from the `listening on` line, once read.
    pub addr: SocketAddr,
    /// The `listening on` line, without its newline.
    pub line: String,
    /// The command, for messages.
    pub what: String,
    status: Option<ExitStatus>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    extra_stdout: Arc<Mutex<Vec<u8>>>,
    first_line: mpsc::Receiver<io::Result<String>>,
}

impl ServerProcess {
    /// Starts `cmd` (stdin null, stdout piped) and the threads that read
    /// its output; [`ServerProcess::wait_listening`] then reads its address.
    pub fn spawn(mut cmd: Command, stderr_to: StderrTo) -> io::Result<ServerProcess> {
        let what = describe(&cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(match stderr_to {
            StderrTo::Inherit => Stdio::inherit(),
            _ => Stdio::piped(),
        });
        let mut child = cmd.spawn()?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let into = Arc::clone(&stderr);
            let prefix = match stderr_to {
                StderrTo::EchoAndKeep(prefix) => Some(prefix),
                _ => None,
            };
            thread::spawn(move || {
                for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                    if let Some(prefix) = &prefix {
                        eprintln!("{prefix}{}", String::from_utf8_lossy(&line));
                    }
                    let mut kept = lock(&into);
                    kept.extend_from_slice(&line);
                    kept.push(b'\n');
                }
            })
        });
        // The first stdout line is the address; the rest is kept, so that
        // the server never blocks on a full pipe.
        let extra_stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, first_line) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let rest = Arc::clone(&extra_stdout);
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let _ = tx.send(reader.read_line(&mut line).map(|_| line));
                // Line by line, so that later lines (more `listening on`
                // lines, say) can be read while the server runs.
                let mut buf = Vec::new();
                while matches!(reader.read_until(b'\n', &mut buf), Ok(1..)) {
                    lock(&rest).extend_from_slice(&buf);
                    buf.clear();
                }
            });
        }
        Ok(ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            line: String::new(),
            what,
            status: None,
            stderr,
            stderr_reader,
            extra_stdout,
            first_line,
        })
    }

    /// [`ServerProcess::spawn`] and [`ServerProcess::wait_listening`], with
    /// a message that says what went wrong and what the server said.
    pub fn start(cmd: Command, stderr_to: StderrTo, within: Duration) -> Result<Self, String> {
        let what = describe(&cmd);
        let mut server = ServerProcess::spawn(cmd, stderr_to)
            .map_err(|err| format!("cannot start `{what}`: {err}"))?;
        match server.wait_listening(within) {
            Ok(_) => Ok(server),
            Err(StartError::NoLine) => {
                let status = server.wait_exit(Duration::from_secs(2));
                Err(format!(
                    "`{what}` exited ({}) before printing `listening on`; stderr: {}",
                    status.map_or("still running".to_owned(), |s| s.to_string()),
                    server.stderr()
                ))
            }
            Err(StartError::Read(err)) => Err(format!("reading `{what}`'s stdout: {err}")),
            Err(StartError::Timeout) => Err(format!(
                "`{what}` printed nothing within {within:?}; stderr: {}",
                server.stderr()
            )),
            Err(StartError::NotListening(line)) => Err(format!(
                "`{what}` printed {line:?}, not `listening on IP:PORT`"
            )),
        }
    }

    /// Waits up to `timeout` for the `listening on IP:PORT` line and sets
    /// [`ServerProcess::addr`] and [`ServerProcess::line`] from it.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr, StartError> {
        let line = match self.first_line.recv_timeout(timeout) {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StartError::NoLine)
            }
            Ok(Err(err)) => return Err(StartError::Read(err)),
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(StartError::Timeout),
        };
        let line = line.trim_end_matches('\n').to_owned();
        let addr = parse_listening(&line).ok_or_else(|| StartError::NotListening(line.clone()))?;
        self.addr = addr;
        self.line = line;
        Ok(addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote on stderr so far (nothing if inherited).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// What the server wrote on stdout after its first line, so far.
    pub fn extra_stdout(&self) -> Vec<u8> {
        lock(&self.extra_stdout).clone()
    }

    /// How the server exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Fails, with its stderr, if the server exited or printed more than
    /// its one line on stdout.
    pub fn ensure_alive(&mut self) -> Result<(), String> {
        if let Some(status) = self.exited() {
            self.join_stderr();
            return Err(format!(
                "the server `{}` died ({status}); stderr: {}",
                self.what,
                self.stderr()
            ));
        }
        let extra = self.extra_stdout();
        if !extra.is_empty() {
            return Err(format!(
                "the server printed more than its `listening on` line on stdout: {:?}",
                String::from_utf8_lossy(&extra)
            ));
        }
        Ok(())
    }

    /// Waits up to `limit` for the server to exit; then its stderr is
    /// complete.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_deadline(&mut self.child, limit);
        }
        if self.status.is_some() {
            self.join_stderr();
        }
        self.status
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child's, not yet reaped.
        match unsafe { libc::kill(self.pid() as libc::pid_t, signal) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Kills the server (SIGKILL) unless it has exited, and waits for it
    /// and for the rest of its stderr.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.join_stderr();
    }

    /// For failure messages: the command, its address and its stderr.
    pub fn describe(&self) -> String {
        format!(
            "server `{}` on {}; its stderr: {:?}",
            self.what,
            self.addr,
            self.stderr()
        )
    }

    fn join_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of a `listening on IP:PORT` line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
}
