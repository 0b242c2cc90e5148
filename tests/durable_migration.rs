//! A durable entity that moves between shards is logged by each new owner
//! with a higher version; killed with SIGKILL at any moment and restarted,
//! the engine recovers it exactly once, at its latest acknowledged state —
//! with the same shard count or another.
//!
//! The child is this test binary run again with `CHILD_ENV` set: it adds to
//! one account (moving it between shards every few changes) and to filler
//! accounts (so logs grow and checkpoint), printing every acknowledged value,
//! until the parent kills it.

mod common_durable;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use percore::{Ctx, DurableState, Engine, Entity};

use common_durable::{durable_engine, guarded, keys_on_shard, DataDir};

const CHILD_ENV: &str = "PERCORE_DURABLE_MIGRATION_CHILD";
const CHILD_TEST: &str = "a_moved_durable_entity_is_recovered_once_at_its_latest_state";
/// Filler accounts beside the moving one.
const FILLERS: u64 = 40;
const SHARDS: usize = 2;

/// A durable account.
struct Account {
    balance: u64,
}

impl Entity for Account {
    const KIND: &'static str = "durable_migration.account";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Account { balance: 0 }
    }

    fn handle(&mut self, add: u64, _ctx: &mut Ctx<'_, Self>) -> u64 {
        self.balance += add;
        self.balance
    }
}

impl DurableState for Account {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.balance.to_le_bytes());
        // Padding, so the logs fill and checkpoint while the child runs.
        out.extend_from_slice(&[0u8; 200]);
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        let balance = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("account {key}: {} bytes", bytes.len()))?;
        Ok(Account {
            balance: u64::from_le_bytes(balance),
        })
    }
}

fn start(dir: &Path, shards: usize) -> Engine {
    durable_engine(dir, shards, 1 << 20)
        .register_durable::<Account>()
        .build()
        .expect("the engine starts")
}

/// The moving account: the first key from 1000 whose home is shard 0 (of
/// the child's shards; the child says which it is).
fn mover_key(engine: &Engine) -> u64 {
    keys_on_shard::<Account>(engine, 0, 1_000, 1)[0]
}

#[test]
fn a_moved_durable_entity_is_recovered_once_at_its_latest_state() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    let dir = DataDir::new("migration");
    let path = dir.path().to_path_buf();
    guarded("kill and recover a moving durable entity", move || {
        let mut last_acked = 0;
        let mut key = None;
        for round in 0..4u64 {
            let exe = std::env::current_exe().unwrap();
            let mut child = Command::new(exe)
                .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning the child");
            let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
            // Kill after a varying number of acknowledged changes.
            let kill_after = 150 + round * 97;
            let mut acks = 0;
            let mut moves = 0;
            for line in lines {
                let line = line.expect("the child's output");
                if let Some(k) = line.strip_prefix("key ") {
                    key = Some(k.trim().parse::<u64>().unwrap());
                } else if let Some(v) = line.strip_prefix("ack ") {
                    let v: u64 = v.trim().parse().unwrap();
                    assert!(v > last_acked, "round {round}: the account went backwards");
                    last_acked = v;
                    acks += 1;
                    if acks == kill_after {
                        break;
                    }
                } else if line.starts_with("moved") {
                    moves += 1;
                }
            }
            assert_eq!(acks, kill_after, "round {round}: the child ended early");
            assert!(
                moves > 0,
                "round {round}: the child never moved the account"
            );
            child.kill().unwrap();
            child.wait().unwrap();

            // Restart on the same directory (another shard count every other
            // round): every acknowledged change is there, the account once.
            let shards = if round % 2 == 0 { SHARDS } else { 1 };
            let engine = start(&path, shards);
            let report = engine.recovery();
            assert_eq!(report.entities, FILLERS + 1, "round {round}: {report:?}");
            let client = engine.client().unwrap();
            let key = key.expect("the child names its moving account");
            let balance = client.ask::<Account>(key, 0).unwrap();
            // At most the one change in flight when it was killed is extra.
            assert!(
                (last_acked..=last_acked + 1).contains(&balance),
                "round {round}: recovered {balance}, last acknowledged {last_acked}"
            );
            last_acked = balance;
            drop(client);
            engine.shutdown().unwrap();
        }
    });
}

/// The child: moves the account between the shards every few changes while
/// changing fillers too, printing each acknowledged balance of the account.
fn run_child(dir: &Path) -> ! {
    let engine = start(dir, SHARDS);
    let client = engine.client().unwrap();
    let key = mover_key(&engine);
    println!("\nkey {key}");
    let mut i = 0u64;
    loop {
        let balance = client.ask::<Account>(key, 1).unwrap();
        println!("ack {balance}");
        for f in 0..4 {
            client.ask::<Account>((i * 4 + f) % FILLERS, 1).unwrap();
        }
        if i % 7 == 3 {
            client
                .migrate::<Account>(key, (i / 7) as usize % SHARDS)
                .unwrap();
            println!("moved");
        }
        i += 1;
    }
}
