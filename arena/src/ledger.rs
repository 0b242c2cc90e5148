//! The tokio peer's durable ledger: every player's gold and items, kept the way a
//! typical Rust game server would without an engine — in memory, with an
//! append-only log file that is `fdatasync`ed before anything it holds is
//! acknowledged.
//!
//! A trade is one log record naming both sides, so it is applied whole or not at
//! all: a crash can cut the log only between records (a torn last record fails its
//! checksum and is dropped), never between a debit and its credit. Trade ids are kept,
//! so a resent trade is answered `Duplicate` instead of being applied twice.
//! (percore's arena server will do the same with an outbox and an idempotent credit
//! between two player entities, like `examples/bank.rs`.)
//!
//! Record layout, little-endian: `len: u32` (payload bytes), `crc32c: u32` (of the
//! payload), payload. Payloads: `1, player: u32, gold: u64, items: u32` opens an
//! account with its starting balance; `2, trade_id: u64, from: u32, to: u32,
//! gold: u32, items: u32` is an applied trade.
//!
//! The [`Ledger`] does no I/O until [`Ledger::commit`]: changes are applied in
//! memory and their records queued, so a caller can apply a batch and sync once
//! (group commit). Nobody may be told about a change before the `commit` that
//! follows it has returned `Ok`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::proto::TradeStatus;

/// Gold of a new account.
pub const STARTING_GOLD: u64 = 1_000;
/// Items of a new account.
pub const STARTING_ITEMS: u32 = 10;
/// The log's file name inside the data directory.
pub const LOG_FILE: &str = "ledger.log";
/// Largest record payload (a trade).
const MAX_PAYLOAD_BYTES: usize = 25;
const HEADER_BYTES: usize = 8;

const KIND_ACCOUNT: u8 = 1;
const KIND_TRADE: u8 = 2;

/// One player's durable holdings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    /// Gold.
    pub gold: u64,
    /// Items.
    pub items: u32,
}

/// What recovery found in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records applied.
    pub records: u64,
    /// Bytes cut from the end of the log: a torn write that was never acknowledged.
    pub truncated_bytes: u64,
}

/// A record that cannot be applied: the log is corrupt, not merely torn.
#[derive(Debug)]
pub struct CorruptLog {
    /// The log file.
    pub path: PathBuf,
    /// Byte offset of the record.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for CorruptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: corrupt record at offset {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )
    }
}

impl std::error::Error for CorruptLog {}

/// Gold and items of every player, durable through an append-only log.
pub struct Ledger {
    accounts: HashMap<u32, Balance>,
    trades: HashSet<u64>,
    file: File,
    path: PathBuf,
    /// Encoded records applied in memory but not yet written and synced.
    pending: Vec<u8>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir` and recovers its state.
    ///
    /// A record that is incomplete or fails its checksum ends the log: it and
    /// everything after it is cut off (it was never acknowledged, since every
    /// acknowledgement waits for a sync that covers it).
    ///
    /// # Errors
    /// I/O errors, and [`CorruptLog`] (as `io::ErrorKind::InvalidData`) for a record
    /// with a valid checksum that cannot be applied.
    pub fn open(dir: &Path) -> io::Result<(Self, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut ledger = Ledger {
            accounts: HashMap::new(),
            trades: HashSet::new(),
            file,
            path,
            pending: Vec::new(),
        };
        let mut at = 0usize;
        let mut recovered = Recovered::default();
        while bytes.len() - at >= HEADER_BYTES {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4"));
            let end = at + HEADER_BYTES + len;
            if len == 0 || len > MAX_PAYLOAD_BYTES || end > bytes.len() {
                break;
            }
            let payload = &bytes[at + HEADER_BYTES..end];
            if crc32c::crc32c(payload) != crc {
                break;
            }
            ledger.replay(payload).map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    CorruptLog {
                        path: ledger.path.clone(),
                        offset: at as u64,
                        reason,
                    },
                )
            })?;
            recovered.records += 1;
            at = end;
        }
        if at < bytes.len() {
            recovered.truncated_bytes = (bytes.len() - at) as u64;
            ledger.file.set_len(at as u64)?;
            ledger.file.sync_all()?;
        }
        ledger.file.seek(SeekFrom::End(0))?;
        Ok((ledger, recovered))
    }

    fn replay(&mut self, p: &[u8]) -> Result<(), &'static str> {
        let u32_at = |at: usize| u32::from_le_bytes(p[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().expect("8"));
        match (p[0], p.len()) {
            (KIND_ACCOUNT, 17) => {
                let balance = Balance {
                    gold: u64_at(5),
                    items: u32_at(13),
                };
                if self.accounts.insert(u32_at(1), balance).is_some() {
                    return Err("account opened twice");
                }
                Ok(())
            }
            (KIND_TRADE, 25) => {
                let (id, from, to) = (u64_at(1), u32_at(9), u32_at(13));
                let (gold, items) = (u32_at(17), u32_at(21));
                if !self.trades.insert(id) {
                    return Err("trade applied twice");
                }
                match self.transfer(from, to, gold, items) {
                    TradeStatus::Ok => Ok(()),
                    _ => Err("trade that cannot apply"),
                }
            }
            _ => Err("unknown record kind or length"),
        }
    }

    /// Moves the holdings if the trade is valid; changes nothing otherwise.
    fn transfer(&mut self, from: u32, to: u32, gold: u32, items: u32) -> TradeStatus {
        if from == to || (gold == 0 && items == 0) {
            return TradeStatus::Invalid;
        }
        if !self.accounts.contains_key(&to) {
            return TradeStatus::UnknownPeer;
        }
        let Some(src) = self.accounts.get_mut(&from) else {
            return TradeStatus::Invalid;
        };
        if src.gold < gold as u64 || src.items < items {
            return TradeStatus::Insufficient;
        }
        src.gold -= gold as u64;
        src.items -= items;
        let dst = self.accounts.get_mut(&to).expect("checked above");
        dst.gold += gold as u64;
        dst.items += items;
        TradeStatus::Ok
    }

    fn queue(&mut self, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        self.pending.extend_from_slice(payload);
    }

    /// The player's balance, opening the account with the starting balance if it
    /// has none (durable at the next [`commit`](Self::commit)).
    pub fn open_account(&mut self, player: u32) -> Balance {
        if let Some(b) = self.accounts.get(&player) {
            return *b;
        }
        let b = Balance {
            gold: STARTING_GOLD,
            items: STARTING_ITEMS,
        };
        self.accounts.insert(player, b);
        let mut p = [0u8; 17];
        p[0] = KIND_ACCOUNT;
        p[1..5].copy_from_slice(&player.to_le_bytes());
        p[5..13].copy_from_slice(&b.gold.to_le_bytes());
        p[13..17].copy_from_slice(&b.items.to_le_bytes());
        self.queue(&p);
        b
    }

    /// Applies a trade from `from` (durable at the next [`commit`](Self::commit)) and
    /// returns its outcome with `from`'s balance after it.
    pub fn trade(
        &mut self,
        trade_id: u64,
        from: u32,
        to: u32,
        gold: u32,
        items: u32,
    ) -> (TradeStatus, Balance) {
        let status = if self.trades.contains(&trade_id) {
            TradeStatus::Duplicate
        } else {
            self.transfer(from, to, gold, items)
        };
        if status == TradeStatus::Ok {
            self.trades.insert(trade_id);
            let mut p = [0u8; 25];
            p[0] = KIND_TRADE;
            p[1..9].copy_from_slice(&trade_id.to_le_bytes());
            p[9..13].copy_from_slice(&from.to_le_bytes());
            p[13..17].copy_from_slice(&to.to_le_bytes());
            p[17..21].copy_from_slice(&gold.to_le_bytes());
            p[21..25].copy_from_slice(&items.to_le_bytes());
            self.queue(&p);
        }
        let balance = self
            .accounts
            .get(&from)
            .copied()
            .unwrap_or(Balance { gold: 0, items: 0 });
        (status, balance)
    }

    /// Writes the queued records and syncs them (`fdatasync`); a no-op when nothing
    /// is queued.
    ///
    /// # Errors
    /// The write or sync failed. The in-memory state is then ahead of the log and
    /// must not be trusted: the caller acknowledges nothing more and stops (a
    /// failed sync is never retried, as PostgreSQL learned).
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.pending)?;
        self.file.sync_data()?;
        self.pending.clear();
        Ok(())
    }

    /// Sum of every account's gold (constant across trades and crashes; it grows
    /// only by [`STARTING_GOLD`] per opened account).
    pub fn gold_total(&self) -> u64 {
        self.accounts.values().map(|b| b.gold).sum()
    }

    /// Sum of every account's items.
    pub fn items_total(&self) -> u64 {
        self.accounts.values().map(|b| b.items as u64).sum()
    }

    /// Number of accounts.
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Number of applied trades.
    pub fn trades(&self) -> usize {
        self.trades.len()
    }

    /// Whether the trade was applied.
    pub fn contains_trade(&self, trade_id: u64) -> bool {
        self.trades.contains(&trade_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("arena-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn trades_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = temp_dir("torn");
        {
            let (mut l, _) = Ledger::open(&dir).unwrap();
            l.open_account(1);
            l.open_account(2);
            assert_eq!(l.trade(7, 1, 2, 100, 1).0, TradeStatus::Ok);
            assert_eq!(l.trade(7, 1, 2, 100, 1).0, TradeStatus::Duplicate);
            assert_eq!(l.trade(8, 1, 3, 1, 0).0, TradeStatus::UnknownPeer);
            assert_eq!(l.trade(9, 2, 1, 5_000, 0).0, TradeStatus::Insufficient);
            l.commit().unwrap();
        }
        // Half a record at the end, as a crash during a write leaves it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(LOG_FILE))
            .unwrap();
        f.write_all(&[25, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (l, rec) = Ledger::open(&dir).unwrap();
        assert_eq!(
            rec,
            Recovered {
                records: 3,
                truncated_bytes: 7
            }
        );
        assert_eq!(l.gold_total(), 2 * STARTING_GOLD);
        assert_eq!(l.items_total(), 2 * STARTING_ITEMS as u64);
        assert!(l.contains_trade(7) && !l.contains_trade(9));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
