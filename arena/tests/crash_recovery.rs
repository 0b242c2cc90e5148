//! A trade storm, the server killed with SIGKILL, restarted on the same data: gold
//! and items are conserved and every trade the bots saw acknowledged is there.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{temp_dir, Server};
use percore_arena::bots;
use percore_arena::ledger::{Ledger, LOG_FILE, STARTING_GOLD, STARTING_ITEMS};

const PLAYERS: usize = 30;
/// Bytes of a trade record in the ledger log (header and payload).
const TRADE_RECORD_BYTES: u64 = 8 + 25;

fn storm_then_sigkill(design: &str) {
    let dir = temp_dir(&format!("crash-{design}"));

    // Accounts first, with a clean stop: the baseline the crash must keep.
    let server = Server::start(design, &dir);
    let mut c = bots::Config::new(server.addr);
    c.players = PLAYERS;
    c.duration = Duration::from_millis(500);
    c.warmup = Duration::ZERO;
    c.trade_every = 0;
    let report = bots::run(c).unwrap();
    assert_eq!(report.counter("welcomes"), PLAYERS as u64);
    server.interrupt();
    let server = Server::start(design, &dir);
    assert_eq!(
        (server.gold_total, server.accounts),
        (PLAYERS as u64 * STARTING_GOLD, PLAYERS as u64)
    );
    let log = dir.join(LOG_FILE);
    let base_len = std::fs::metadata(&log).unwrap().len();

    // The storm: every bot trades on every tick, through the bots binary.
    let acked_file = dir.join("acked.txt");
    let bots = Command::new(env!("CARGO_BIN_EXE_arena-bots"))
        .args([
            "--server",
            &server.addr.to_string(),
            "--players",
            &PLAYERS.to_string(),
        ])
        .args([
            "--duration",
            "4",
            "--warmup",
            "0",
            "--trade-every",
            "1",
            "--trade-nonce",
            "7",
        ])
        .args(["--drain", "1", "--quiet", "--acked-trades"])
        .arg(&acked_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once the log holds a good number of trades (bounded wait, no timing claim).
    for _ in 0..600 {
        if std::fs::metadata(&log).unwrap().len() >= base_len + 200 * TRADE_RECORD_BYTES {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let out = bots.wait_with_output().unwrap();
    assert!(out.status.success());
    let metrics = String::from_utf8(out.stdout).unwrap();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("protocol_errors"), 0, "{metrics}");
    assert!(metric("disconnects") > 0, "the crash was seen: {metrics}");
    let acked: Vec<u64> = std::fs::read_to_string(&acked_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(acked.len() as u64, metric("trades_applied"));
    assert!(!acked.is_empty(), "{metrics}");

    // Restart on the same data: nothing created or destroyed.
    let server = Server::start(design, &dir);
    assert_eq!(server.gold_total, PLAYERS as u64 * STARTING_GOLD);
    assert_eq!(server.accounts, PLAYERS as u64);
    server.interrupt();
    let (ledger, _) = Ledger::open(&dir).unwrap();
    assert_eq!(ledger.items_total(), PLAYERS as u64 * STARTING_ITEMS as u64);
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !ledger.contains_trade(**id))
        .collect();
    assert!(missing.is_empty(), "acknowledged trades lost: {missing:?}");
    assert!(ledger.trades() >= acked.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigkill_during_a_trade_storm_keeps_gold_and_every_acked_trade_tasks() {
    storm_then_sigkill("tasks");
}

#[test]
fn sigkill_during_a_trade_storm_keeps_gold_and_every_acked_trade_rooms_rt() {
    storm_then_sigkill("rooms_rt");
}
