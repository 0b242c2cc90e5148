//! Crash test (contract §6): a child process runs durable traffic — the bank
//! example's accounts and transfers, on two shards with 1 MiB log segments
//! and a checkpoint every megabyte — and is killed with SIGKILL at random
//! points, many rounds on one data directory. After every kill the parent
//! starts the engine on that directory in-process and checks that:
//!
//! - the total (balances plus amounts in flight) is unchanged;
//! - every transfer the child reported as done — which it prints only after
//!   the client's `ask` returned, so after the output gate released the
//!   reply — is there: its source has issued its sequence number, its
//!   destination has credited it;
//! - no account went backwards: its change counter and sequence number are at
//!   least what was acknowledged or observed before.
//!
//! Kills land while flushes are in flight (transfers run nonstop, so some
//! reply is always waiting for its record), and the rounds run through
//! rotations and checkpoints: the test asserts that segments did rotate and
//! checkpoints did complete, and reports how many kills left a checkpoint
//! unfinished on disk or a torn tail. Those are rare: a checkpoint is written
//! as one batch and its deletions take microseconds, and a killed process's
//! submitted writes still complete. Every crash point inside a checkpoint is
//! covered deterministically by the simulated storage in `log_recovery.rs`.
//!
//! The child is this test binary run again with `CHILD_ENV` set: the test
//! function then acts as the child and never returns.

#[allow(dead_code)]
#[path = "../examples/bank.rs"]
mod bank;
mod common_durable;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use percore::log::{recover_data_dir, RecordType};

use bank::{Done, Options, XorShift, OPENING_BALANCE};
use common_durable::{guarded, DataDir, HANG_GUARD, SEGMENT_LEN_BYTES};

/// Set (to the data directory) in the child's environment.
const CHILD_ENV: &str = "PERCORE_DURABLE_CRASH_CHILD";
/// Overrides the seed of the kill schedule (to replay a failure).
const SEED_ENV: &str = "PERCORE_DURABLE_CRASH_SEED";
const SEED_DEFAULT: u64 = 0x5eed_c7a5_4e5f_0001;
/// This test's name, for the child's command line.
const TEST_NAME: &str = "acknowledged_transfers_survive_sigkill_at_random_points";

const ROUNDS: usize = 24;
const ACCOUNTS: u64 = 256;
const CLIENTS: usize = 4;
const SHARDS: usize = 2;
/// One round in this many kills the child at a random point of its start
/// (recovery, the `recovered` hooks' resends, the first settle).
const EARLY_KILL_ONE_IN: u64 = 4;
const EARLY_KILL_MS_MAX: u64 = 400;
/// Otherwise the child runs transfers for a random time up to this.
const TRAFFIC_MS_MAX: u64 = 1_200;
/// How often the child prints its log metrics.
const METRICS_EVERY: Duration = Duration::from_millis(5);

fn options() -> Options {
    Options {
        accounts: ACCOUNTS,
        clients: CLIENTS,
        shards: Some(SHARDS),
        segment_len_bytes: SEGMENT_LEN_BYTES,
        checkpoint_len_bytes: SEGMENT_LEN_BYTES,
        park: true,
        ..Options::default()
    }
}

#[test]
fn acknowledged_transfers_survive_sigkill_at_random_points() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED_DEFAULT);
    let dir = DataDir::new("crash");
    let path = dir.path().to_path_buf();
    let report = crash_rounds(&path, seed);
    eprintln!("seed {seed}: {report:#?}");
    assert!(report.done > 0, "no transfer was acknowledged in any round");
    assert!(
        report.rotations > 0,
        "no segment rotated during the rounds: {report:?}"
    );
    assert!(
        report.checkpoints > 0,
        "no checkpoint completed during the rounds: {report:?}"
    );
}

/// The child: recover, settle, report the total, then transfer until killed.
fn run_child(dir: &Path) -> ! {
    // The test harness has printed `test <name> ... ` without a newline: end
    // that line so the child's lines start clean.
    bank::say("");
    let opts = options();
    let engine = bank::start_engine(dir, &opts).expect("child engine starts");
    let ledger = bank::settle(&engine, ACCOUNTS, false).expect("child settles");
    bank::say(format_args!("total {}", ledger.total()));
    let seed = std::process::id() as u64;
    std::thread::scope(|scope| {
        scope.spawn(|| loop {
            let t = engine.metrics().total();
            bank::say(format_args!(
                "metrics {} {}",
                t.checkpoints, t.records_logged
            ));
            std::thread::sleep(METRICS_EVERY);
        });
        bank::run_transfers(
            &engine,
            ACCOUNTS,
            CLIENTS,
            Duration::from_secs(3600),
            seed,
            &|d| bank::say(d),
        );
    });
    unreachable!("the child runs until it is killed");
}

/// What the rounds saw, for the final assertions and the log.
#[derive(Debug, Default)]
struct Report {
    rounds: usize,
    early_kills: usize,
    /// Transfers acknowledged, all rounds.
    done: usize,
    /// Segments that began with an ordinary record or a checkpoint rather
    /// than the `Resume` marker of a restart: rotations within a life
    /// (largest number seen in the log at once).
    rotations: usize,
    /// Checkpoints the children reported complete, all rounds.
    checkpoints: u64,
    /// Kills that left a checkpoint unfinished in some shard's log (begun
    /// and not ended, or its superseded segments not all deleted).
    kills_during_checkpoint: usize,
    /// Torn tails recovery discarded, all rounds.
    torn_tails: u64,
}

fn crash_rounds(dir: &Path, seed: u64) -> Report {
    let mut rng = XorShift::new(seed);
    let mut report = Report::default();
    let mut acked: Vec<Done> = Vec::new();
    // Per account, the least its change counter / next sequence number may
    // be after a restart: the highest value acknowledged or observed.
    let mut ops_floor = vec![0u64; ACCOUNTS as usize];
    let mut seq_floor = vec![1u64; ACCOUNTS as usize];
    let mut all_exist = false;
    for round in 0..ROUNDS {
        let early = rng.below(EARLY_KILL_ONE_IN) == 0;
        let started = Instant::now();
        let child = run_round(dir, &mut rng, early)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        report.rounds += 1;
        report.early_kills += early as usize;
        report.done += child.done.len();
        report.checkpoints += child.checkpoints;
        for d in &child.done {
            let a = d.from as usize;
            ops_floor[a] = ops_floor[a].max(d.ops);
            seq_floor[a] = seq_floor[a].max(d.seq + 1);
        }
        acked.extend_from_slice(&child.done);

        let facts = inspect_log(dir);
        report.rotations = report.rotations.max(facts.rotations);
        report.kills_during_checkpoint += facts.checkpoint_open as usize;

        let killed = started.elapsed();
        let (ledger, recovered) = verify(dir, round, seed);
        eprintln!(
            "round {round}: {} kill after {killed:?}, {} transfers acknowledged, \
             checked after {:?}; recovery read {} records",
            if early { "early" } else { "late" },
            child.done.len(),
            started.elapsed(),
            recovered.records
        );
        report.torn_tails += recovered.torn_tails;
        if all_exist {
            assert_eq!(
                recovered.entities, ACCOUNTS,
                "round {round}: every account was durable before this round"
            );
        }
        all_exist = true;
        assert_eq!(
            ledger.total(),
            ACCOUNTS as i64 * OPENING_BALANCE,
            "round {round} (seed {seed}): money was created or destroyed"
        );
        if let Some(total) = child.total {
            assert_eq!(
                total,
                ACCOUNTS as i64 * OPENING_BALANCE,
                "round {round}: the child's own total after recovery"
            );
        }
        if let Err(e) = ledger.check_done(&acked) {
            panic!("round {round} (seed {seed}): an acknowledged transfer is missing: {e}");
        }
        for (a, s) in ledger.accounts.iter().enumerate() {
            assert!(
                s.ops >= ops_floor[a] && s.next_seq >= seq_floor[a],
                "round {round} (seed {seed}): account {a} went back to ops {} seq {} \
                 (acknowledged or seen: ops {} seq {})",
                s.ops,
                s.next_seq,
                ops_floor[a],
                seq_floor[a]
            );
            // What the verification read was durable (its replies were gated).
            ops_floor[a] = s.ops;
            seq_floor[a] = s.next_seq;
        }
    }
    report
}

/// What one child printed before it died.
struct ChildRun {
    total: Option<i64>,
    done: Vec<Done>,
    checkpoints: u64,
}

/// Starts a child on `dir`, kills it at a random point, and collects what it
/// printed.
fn run_round(dir: &Path, rng: &mut XorShift, early: bool) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let lines = read_lines(child.stdout.take().expect("piped"));
    let mut stderr = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut run = ChildRun {
        total: None,
        done: Vec::new(),
        checkpoints: 0,
    };
    let outcome = if early {
        std::thread::sleep(Duration::from_millis(rng.below(EARLY_KILL_MS_MAX)));
        Ok(())
    } else {
        wait_for_total(&lines, &mut run, &mut child).and_then(|()| {
            let until = Instant::now() + Duration::from_millis(1 + rng.below(TRAFFIC_MS_MAX));
            while let Some(wait) = until.checked_duration_since(Instant::now()) {
                match lines.recv_timeout(wait) {
                    Ok(line) => take_line(&line, &mut run),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err("the child exited before it was killed".into())
                    }
                }
            }
            Ok(())
        })
    };
    // SIGKILL: no destructor, no flush, no shutdown.
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    for line in lines.iter() {
        take_line(&line, &mut run);
    }
    let stderr = stderr.join().unwrap_or_default();
    if let Err(e) = outcome {
        return Err(format!("{e}; child {status}, stderr:\n{stderr}"));
    }
    use std::os::unix::process::ExitStatusExt;
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "the child ended on its own: {status}; stderr:\n{stderr}"
        ));
    }
    Ok(run)
}

fn wait_for_total(
    lines: &Receiver<String>,
    run: &mut ChildRun,
    child: &mut Child,
) -> Result<(), String> {
    let deadline = Instant::now() + HANG_GUARD;
    while run.total.is_none() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok(line) => take_line(&line, run),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("the child printed no total within {HANG_GUARD:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!("the child exited before its total: {status}"));
            }
        }
    }
    Ok(())
}

/// Complete lines (ending in a newline) from `out`, as they come; a line cut
/// short by the kill is dropped.
fn read_lines(out: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut line = String::new();
        loop {
            line.clear();
            match out.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with('\n') => {
                    if tx.send(line.trim_end().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    rx
}

fn take_line(line: &str, run: &mut ChildRun) {
    if let Some(d) = Done::parse(line) {
        run.done.push(d);
    } else if let Some(total) = line.strip_prefix("total ") {
        run.total = total.parse().ok();
    } else if let Some(m) = line.strip_prefix("metrics ") {
        if let Some(c) = m.split_whitespace().next().and_then(|c| c.parse().ok()) {
            run.checkpoints = run.checkpoints.max(c);
        }
    }
}

/// Starts the engine on `dir` in this process, lets in-flight transfers
/// settle, and reads every account.
fn verify(dir: &Path, round: usize, seed: u64) -> (bank::Ledger, percore::RecoveryReport) {
    let dir: PathBuf = dir.to_path_buf();
    guarded("verification after a kill", move || {
        let engine = bank::start_engine(&dir, &options()).unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}): recovery after a kill failed: {e}")
        });
        let recovered = engine.recovery();
        let ledger = bank::settle(&engine, ACCOUNTS, true)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): settling: {e}"));
        engine.shutdown().expect("verification engine shuts down");
        (ledger, recovered)
    })
}

/// What the log on disk shows right after a kill.
struct LogFacts {
    /// Segments whose first record is not a restart's `Resume` marker.
    rotations: usize,
    /// Some shard's log has a checkpoint begun and not ended, or one whose
    /// superseded segments are not all deleted yet.
    checkpoint_open: bool,
}

fn inspect_log(dir: &Path) -> LogFacts {
    let mut facts = LogFacts {
        rotations: 0,
        checkpoint_open: false,
    };
    let logs = recover_data_dir(dir).expect("the log after a kill is readable");
    for (_, log) in &logs {
        let mut segment = None;
        let (mut begun, mut ended) = (0, 0);
        for r in log.records() {
            if segment != Some(r.header.segment_seq) {
                segment = Some(r.header.segment_seq);
                if r.record_type() != RecordType::Resume {
                    facts.rotations += 1;
                }
            }
            match r.record_type() {
                RecordType::CheckpointBegin => begun = r.header.lsn,
                RecordType::CheckpointEnd => ended = r.header.lsn,
                _ => {}
            }
        }
        // Begun and not ended: killed while the checkpoint was written.
        // Superseded segments still there: killed while it deleted them.
        facts.checkpoint_open |= begun > ended || !log.resume().superseded.is_empty();
    }
    facts
}
