//! A service binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The path of a workspace binary built beside the running test (`target/<profile>/<name>`)
/// or beside a binary of this crate. `cargo nextest run --workspace` builds every
/// binary before any test runs.
pub fn workspace_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.parent().expect("target/<profile>[/deps]");
    let path = [Some(beside), beside.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(name))
        .find(|path| path.exists());
    let Some(path) = path else {
        panic!(
            "{name} is not built beside {}: build the whole workspace (cargo nextest run --workspace, or cargo build --workspace --bins)",
            exe.display()
        );
    };
    path.to_string_lossy().into_owned()
}

/// Runs the command-line binary `bin` with `args` to its end, in an environment of the
/// local stack's variables and `env` only; returns its exit code (`None` if a signal
/// ended it) and its standard output followed by its standard error.
pub fn run_command(bin: &str, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(crate::stack::service_env())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// A running service with its stdout lines collected.
pub struct ServiceProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl ServiceProcess {
    /// Starts `binary` with the local stack's env plus `env`, logging JSON and
    /// serving health on a free loopback port.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logged(binary, env, None)
    }

    /// Like [`ServiceProcess::start`], also appending each stdout line to `log`.
    pub fn start_logged(binary: &str, env: &[(&str, &str)], log: Option<&std::path::Path>) -> Self {
        Self::start_with_args(binary, &[], env, log)
    }

    /// Like [`ServiceProcess::start_logged`], with command-line arguments (a
    /// `pipelinectl` subcommand that serves, say).
    pub fn start_with_args(binary: &str, args: &[&str], env: &[(&str, &str)], log: Option<&std::path::Path>) -> Self {
        let mut log = log.map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        });
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(crate::stack::service_env())
            .env("LOG_FORMAT", "json")
            .env("HEALTH_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start service");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = &mut log {
                    use std::io::Write;
                    let _ = writeln!(file, "{line}");
                }
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line for which `matches` holds, and returns it.
    pub fn wait_for_line(&mut self, timeout: Duration, matches: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| matches(l)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Every stdout line read so far (and any waiting; after the exit, all of them),
    /// as JSON where it parses.
    pub fn json_lines(&mut self) -> Vec<Value> {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            // The reader thread can lag the exit: read up to the pipe's end (it closes
            // with the process) so the last lines, such as a final metrics flush, count.
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                self.seen.push(line);
            }
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Each JSON log line's message and error, one string per line: what the service
    /// said, to assert on.
    pub fn messages(&mut self) -> Vec<String> {
        self.json_lines()
            .iter()
            .map(|l| format!("{} {}", l["message"], l["error"]))
            .collect()
    }

    /// Waits up to `timeout` for the process to exit; whether it failed (exited
    /// non-zero), and its messages, a line each.
    pub fn failed_within(&mut self, timeout: Duration) -> (bool, String) {
        let status = self.wait_exit(timeout);
        (status.is_some_and(|s| !s.success()), self.messages().join("\n"))
    }

    /// The health endpoint's address, from the "service started" log line.
    pub fn health_addr(&mut self, timeout: Duration) -> SocketAddr {
        let line = self
            .wait_for_line(timeout, |l| l.contains("\"service started\""))
            .expect("the service logs that it started");
        let log: Value = serde_json::from_str(&line).expect("log lines are JSON");
        log["health_addr"]
            .as_str()
            .expect("health_addr field")
            .parse()
            .expect("socket address")
    }

    /// Polls `path` until it answers `status` or `timeout` passes.
    pub fn wait_for_status(&mut self, addr: SocketAddr, path: &str, status: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_status(addr, path) == Some(status) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends SIGTERM, as ECS does on a stop.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process with SIGKILL: no flush, no checkpoint, no lease release.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer: status, headers (names in lower case) and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` over plain HTTP/1.1 with no body and reads the whole answer (the
/// server closes the connection after it; a chunked body is not decoded).
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Option<HttpAnswer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
        .collect();
    Some(HttpAnswer {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    })
}

/// GETs `path` over plain HTTP/1.1 and returns the status code.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// GETs `path` and returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
