//! Helpers shared by the arena's integration tests: a server process on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use percore_arena::bots;

/// A fresh, empty directory under the system's temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arena-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An `arena-tokio` process; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub gold_total: u64,
    pub accounts: u64,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `arena-tokio --design DESIGN` on an ephemeral loopback port and waits
    /// for its `listening` line.
    pub fn start(design: &str, data: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_arena-tokio"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--design",
                design,
                "--workers",
                "2",
            ])
            .arg("--data")
            .arg(data)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start arena-tokio");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut gold_total, mut accounts) = (None, None);
        loop {
            let mut line = String::new();
            // The server either prints `listening` or exits, which ends the read.
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "arena-tokio exited before listening"
            );
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("gold_total"), Some(v)) => gold_total = Some(v.parse().unwrap()),
                (Some("accounts"), Some(v)) => accounts = Some(v.parse().unwrap()),
                (Some("listening"), Some(v)) => {
                    return Server {
                        child,
                        addr: v.parse().unwrap(),
                        gold_total: gold_total.expect("gold_total printed before listening"),
                        accounts: accounts.expect("accounts printed before listening"),
                        stdout,
                    }
                }
                _ => {}
            }
        }
    }

    /// Stops the server with SIGINT and returns what it printed until it exited,
    /// asserting that it exited successfully.
    pub fn interrupt(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut lines = Vec::new();
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        assert!(
            self.child.wait().unwrap().success(),
            "arena-tokio failed on SIGINT: {lines:?}"
        );
        lines
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small swarm's settings for tests: quick, every feature exercised.
pub fn small_swarm(server: SocketAddr, players: usize) -> bots::Config {
    let mut c = bots::Config::new(server);
    c.players = players;
    c.room_size = 20;
    c.duration = Duration::from_millis(2500);
    c.warmup = Duration::from_millis(500);
    c.chat_every = 20;
    c.trade_every = 10;
    c.plaza_at = Some(Duration::from_millis(1500));
    c.drain = Duration::from_secs(10);
    c
}

/// Asserts that a swarm met no error and had every trade acknowledged.
pub fn assert_clean(report: &bots::Report, players: usize) {
    let mut text = Vec::new();
    report.write_metrics(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let c = |name| report.counter(name);
    assert_eq!(c("connected"), players as u64, "{text}");
    assert!(c("welcomes") >= players as u64, "{text}");
    assert_eq!(c("protocol_errors"), 0, "{text}");
    assert_eq!(c("server_errors"), 0, "{text}");
    assert_eq!(c("disconnects"), 0, "{text}");
    assert!(
        c("inputs_measured") > 0 && !report.latency.is_empty(),
        "{text}"
    );
    assert!(c("chats_received") > 0, "{text}");
    assert!(c("trades_sent") > 0, "{text}");
    assert_eq!(
        c("trades_acked"),
        c("trades_sent"),
        "every trade acknowledged: {text}"
    );
}
