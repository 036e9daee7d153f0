//! Helpers for tests that drive the real `hookflash` binary.
#![allow(dead_code)]

pub mod http;
pub mod media_phone;
pub mod rtp;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Generous: the CI machine may be a loaded 2-core box.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hookflash"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("hookflash runs")
}

pub fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A copy of the example config and metaflows in a temporary folder, on free ports.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The SIP (UDP and TCP) and API ports the config was given.
    pub sip_port: u16,
    pub api_port: u16,
}

impl Sandbox {
    pub fn from_example() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (sip, api) = (free_port(), free_port());
        let config = std::fs::read_to_string(root.join("config.example.yaml"))
            .unwrap()
            .replace("127.0.0.1:5060", &format!("127.0.0.1:{sip}"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{api}"));
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        std::fs::create_dir(dir.path().join("metaflows")).unwrap();
        std::fs::create_dir(dir.path().join("media")).unwrap();
        for folder in ["metaflows", "media"] {
            for entry in std::fs::read_dir(root.join(folder)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    std::fs::copy(
                        &path,
                        dir.path().join(folder).join(path.file_name().unwrap()),
                    )
                    .unwrap();
                }
            }
        }
        Sandbox {
            dir,
            sip_port: sip,
            api_port: api,
        }
    }

    /// The config for calls between sipp phones: 60 media ports of its own, INVITEs not
    /// challenged, and each `(extension, port)` rung at a sipp callee on that port.
    pub fn config_for_callees(&self, callees: &[(&str, u16)]) -> String {
        let rtp_base = free_port() & !1;
        let mut config = std::fs::read_to_string(self.path("config.yaml"))
            .unwrap()
            .replace(
                "ports: 20000-29999",
                &format!("ports: {}-{}", rtp_base, rtp_base + 59),
            )
            .replace("challenge_invites: true", "challenge_invites: false");
        for (extension, port) in callees {
            config = config.replace(
                &format!("password: pass{extension}"),
                &format!(
                    "password: pass{extension}\n        contact: \"sip:{extension}@127.0.0.1:{port}\""
                ),
            );
        }
        config
    }

    /// The example config with `lines` (each indented as a key of `sip`) added to `sip`.
    pub fn with_sip(lines: &str) -> Sandbox {
        let sandbox = Sandbox::from_example();
        let text = std::fs::read_to_string(sandbox.path("config.yaml"))
            .unwrap()
            .replace(
                "  challenge_invites: true",
                &format!("  challenge_invites: true\n{lines}"),
            );
        sandbox.write("config.yaml", &text);
        sandbox
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }
}

/// A running `hookflash run`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    pub log: Vec<String>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with(config, bin())
    }

    /// [`Daemon::start`] with at most `files` open file descriptors (RLIMIT_NOFILE), to try
    /// what running out of them does.
    pub fn start_with_file_limit(config: &Path, files: u64) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut command = bin();
        // SAFETY: setrlimit(2) only, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: files,
                    rlim_max: files,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Daemon::start_with(config, command)
    }

    fn start_with(config: &Path, mut command: Command) -> Daemon {
        let mut child = command
            .args(["run", "--config"])
            .arg(config)
            // Relative paths the daemon writes (recordings) land in the sandbox.
            .current_dir(config.parent().unwrap_or(Path::new(".")))
            .env(
                "RUST_LOG",
                std::env::var("HOOKFLASH_TEST_LOG")
                    .unwrap_or_else(|_| "info,rsipstack=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines: rx,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`; returns it. Panics with the log so far.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no log line with {needle:?}; log so far:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    /// A log line containing `needle`, already seen or still to come.
    /// Waits for the call event line of `kind` (`"event":"kind"`) and returns it as JSON.
    #[allow(dead_code)]
    pub fn event(&mut self, kind: &str) -> serde_json::Value {
        let line = self.seen_or_wait(&format!("\"event\":\"{kind}\""));
        let json = &line[line.find('{').expect("a JSON event")..];
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad event line {line}: {e}"))
    }

    /// Takes the log lines written so far into `log`.
    pub fn read_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    pub fn seen_or_wait(&mut self, needle: &str) -> String {
        match self.log.iter().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => self.wait_for(needle),
        }
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "signal delivered");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader may still hold the last lines: read the pipe to its end.
                while let Ok(line) = self.lines.recv_timeout(WAIT) {
                    self.log.push(line);
                }
                return status.code();
            }
            // Drain the log meanwhile; this is waiting on the process, not a sleep for sync.
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.log.push(line);
            }
        }
        panic!("daemon did not exit; log:\n{}", self.log.join("\n"));
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs sipp against `target` with a scenario from tests/e2e/sipp; returns its output. sipp comes
/// from Debian's `sip-tester` package (.ci/run installs it).
///
/// Its SIP port (and its `-mp` media port, if given: nobody else needs to know it, the SDP says
/// it) are picked free, then sipp binds them: another process may take one in between (tests run
/// in parallel beside other daemons and phones), so a run that could not bind is run again on
/// fresh ports.
pub fn sipp(scenario: &str, target: &str, transport: &str, args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for attempt in 1.. {
        let local_port = free_port().to_string();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(i) = args.iter().position(|a| a == "-mp")
            && i + 1 < args.len()
        {
            args[i + 1] = free_port().to_string();
        }
        let mut cmd = Command::new("sipp");
        cmd.arg(target)
            .arg("-sf")
            .arg(root.join("tests/e2e/sipp").join(scenario))
            .args(["-i", "127.0.0.1", "-p", &local_port, "-t", transport])
            .args([
                "-m",
                "1",
                "-l",
                "1",
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
            ])
            .args(&args)
            .current_dir(std::env::temp_dir());
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("cannot run sipp ({e}); install it: apt-get install sip-tester"),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("Unable to bind") || attempt == 5 {
            return out;
        }
    }
    unreachable!("the loop returns")
}

/// Waits for a file a sipp scenario writes (`exec`), and returns its text.
pub fn written(file: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && !text.trim().is_empty()
        {
            return text.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            file.display()
        );
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The port a sipp scenario wrote to `file` (from an SDP it received), on 127.0.0.1.
pub fn port_written(file: &Path) -> std::net::SocketAddr {
    let port: u16 = written(file).parse().expect("a port");
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// uac_media_until_bye.xml changed to write, once answered, the `Replaces` value that names its
/// dialog at hookflash (hookflash's tag as to-tag, its own as from-tag) to `dialog_file`; written
/// as `scenario_file`.
pub fn caller_writing_its_dialog(dialog_file: &Path, scenario_file: &Path) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sipp/uac_media_until_bye.xml"),
    )
    .unwrap()
    .replace(
        "<ereg regexp=\"m=audio ([0-9]+) RTP/AVP\" search_in=\"body\" check_it=\"true\" assign_to=\"whole,port\"/>",
        "<ereg regexp=\"m=audio ([0-9]+) RTP/AVP\" search_in=\"body\" check_it=\"true\" assign_to=\"whole,port\"/>\n      <ereg regexp=\"tag=([^;> ]+)\" search_in=\"hdr\" header=\"To:\" assign_to=\"twhole,ttag\"/>",
    )
    .replace(
        "echo [$port] > {{PORT_FILE}}.tmp ; mv {{PORT_FILE}}.tmp {{PORT_FILE}}",
        &format!(
            "echo '[call_id];to-tag=[$ttag];from-tag=[pid]SIPpTag00[call_number]' > {f}.tmp ; mv {f}.tmp {f}",
            f = dialog_file.display()
        ),
    )
    .replace(
        "<Reference variables=\"whole\"/>",
        "<Reference variables=\"whole,twhole,port\"/>",
    );
    std::fs::write(scenario_file, text).unwrap();
    scenario_file.to_path_buf()
}

/// Whether process `pid` holds a socket bound to 127.0.0.1:`port` (UDP, or a listening TCP
/// one): the port is taken by it, not by another process.
fn holds_port(pid: u32, port: u16, tcp: bool) -> bool {
    let table = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    let wanted = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == wanted && (!tcp || f[3] == "0A")).then(|| f[9].to_string())
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            inodes.iter().any(|i| t == format!("socket:[{i}]"))
        })
    })
}

/// A sipp running in the background (a callee), killed when dropped.
pub struct SippProcess {
    child: Option<Child>,
    pub port: u16,
}

impl SippProcess {
    /// Starts sipp with a scenario from tests/e2e/sipp (or a path) listening on a free port; returns
    /// once it listens there.
    pub fn spawn(scenario: &Path, transport: &str, args: &[&str]) -> SippProcess {
        // The port is picked free, then sipp binds it: if another process took it in between,
        // sipp exits, and it is started again on another port.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("sipp")
                .arg("-sf")
                .arg(scenario)
                .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", transport])
                .args([
                    "-m",
                    "1",
                    "-nostdin",
                    "-timeout",
                    "60s",
                    "-timeout_error",
                    "-trace_err",
                ])
                .args(args)
                .current_dir(std::env::temp_dir())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run sipp ({e}); apt-get install sip-tester"));
            let tcp = transport.starts_with('t');
            let deadline = Instant::now() + WAIT;
            loop {
                if holds_port(child.id(), port, tcp) {
                    return SippProcess {
                        child: Some(child),
                        port,
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("sipp could not listen on a free port in five tries");
    }

    /// Waits for sipp to finish; returns its output.
    pub fn finish(mut self) -> Output {
        let child = self.child.take().unwrap();
        let pid = child.id() as i32;
        // A watchdog: sipp's own -timeout ends it; this only guards against a hung process.
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + WAIT * 2;
            while Instant::now() < deadline {
                std::thread::park_timeout(Duration::from_millis(200));
                if unsafe { libc::kill(pid, 0) } != 0 {
                    return;
                }
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let out = child.wait_with_output().unwrap();
        watchdog.thread().unpark();
        out
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls until something listens on 127.0.0.1:`port` (TCP: accepts connections; UDP: the port
/// is taken).
pub fn wait_listening(port: u16, tcp: bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let up = if tcp {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        } else {
            UdpSocket::bind(("127.0.0.1", port)).is_err()
        };
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

/// sipp's verdict, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
