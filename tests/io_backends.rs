//! `--io`: which I/O backend `echokit serve` runs on, and what happens
//! where io_uring cannot be set up. The tests take io_uring away the way
//! container runtimes do: a seccomp filter, installed in the child
//! before it runs echokit, fails `io_uring_setup` with EPERM (as Docker's
//! default profile does).

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use testkit::process::finish_within;
use testkit::{Build, ServerProcess, StderrTo, Target};

/// `io_uring_setup`'s number: the same on every architecture (the
/// syscalls added since 5.1 share one table).
const IO_URING_SETUP: u32 = 425;

/// The audit architecture of this build, as seccomp reports it.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xc000_00b7;

/// Makes `cmd`'s process unable to set up io_uring: `io_uring_setup`
/// fails with EPERM, every other system call is allowed.
fn without_io_uring(cmd: &mut Command) {
    const LOAD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_IF_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: the system call's number at offset 0, the
    // architecture at 4.
    let filter = [
        op(LOAD_WORD, 0, 0, 4),
        op(JUMP_IF_EQUAL, 0, 3, ARCH),
        op(LOAD_WORD, 0, 0, 0),
        op(JUMP_IF_EQUAL, 0, 1, IO_URING_SETUP),
        op(RETURN, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RETURN, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: the hook runs in the child between fork and exec and only
    // makes two prctl system calls (async-signal-safe) on a filter that
    // lives on its stack for the duration of the call; the kernel copies
    // the program.
    unsafe {
        cmd.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `echokit serve --io IO -v` on a free loopback port, with io_uring
/// taken away when `filtered`.
fn serve(io: &str, filtered: bool) -> Command {
    let mut cmd = Target::new(Build::Native).must();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "-v", "--io", io]);
    if filtered {
        without_io_uring(&mut cmd);
    }
    cmd
}

/// The backend a started server logged it uses (`-v` logs it first).
fn backend(server: &ServerProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stderr = server.stderr();
        let logged = stderr
            .lines()
            .find_map(|l| l.strip_prefix("echokit: I/O backend: "));
        if let Some(name) = logged {
            return name.to_string();
        }
        assert!(Instant::now() < deadline, "no backend logged: {stderr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `cmd`, checks that it echoes, and returns the backend it named.
fn serving_backend(cmd: Command) -> String {
    let server = ServerProcess::start(cmd, StderrTo::Keep, Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err}"));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(b"hello").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    stream.read_to_end(&mut echo).unwrap();
    assert_eq!(echo, b"hello");
    backend(&server)
}

#[test]
fn auto_picks_io_uring_where_the_kernel_allows_it() {
    assert_eq!(serving_backend(serve("auto", false)), "io_uring");
}

#[test]
fn auto_serves_on_epoll_where_io_uring_is_filtered_out() {
    assert_eq!(serving_backend(serve("auto", true)), "epoll");
}

#[test]
fn epoll_is_chosen_as_asked() {
    assert_eq!(serving_backend(serve("epoll", false)), "epoll");
}

#[test]
fn io_uring_where_it_is_filtered_out_fails_saying_what_to_do() {
    let mut cmd = serve("uring", true);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let finished = finish_within(cmd.spawn().unwrap(), Duration::from_secs(10));
    assert_eq!(
        finished.status.and_then(|status| status.code()),
        Some(3),
        "{finished:?}"
    );
    let stderr = &finished.stderr;
    assert!(
        stderr.contains("io_uring cannot be set up here: Operation not permitted")
            && stderr.contains("seccomp")
            && stderr.contains("use --io epoll"),
        "{stderr}"
    );
    assert!(!finished.stdout.contains("listening on"), "{finished:?}");
}
