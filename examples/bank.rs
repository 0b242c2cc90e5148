//! Bank: durable accounts and transfers between them, across shards, without
//! distributed transactions.
//!
//! Every account is a durable entity. A transfer touches two of them, usually
//! on different shards, and no lock or two-phase commit spans both. Instead
//! (Pat Helland, "Life beyond distributed transactions"):
//!
//! 1. The **source** account debits itself and records the transfer in its own
//!    durable outbox, under its next sequence number. That is one change to
//!    one entity: atomic. The client's reply (and the credit request) leave
//!    the shard only once this change is durable (the output gate).
//! 2. The source *asks* the **destination** to credit the amount. The
//!    destination credits **idempotently**: it remembers, per source, the
//!    highest sequence number it applied, and ignores anything at or below it.
//!    This stays bounded (one entry per account that ever paid it) because a
//!    source never has two credits in flight to the same destination: later
//!    transfers to a busy destination wait in the outbox behind the first, so
//!    each destination sees one source's transfers in sequence order.
//! 3. The destination's reply comes back to the source as a message (a
//!    continuation); the source removes the entry and sends the next one
//!    queued for that destination. A failed credit is retried after a pause.
//! 4. After a crash, every account comes back at its last durable state and
//!    its `recovered` hook resends the head of its outbox for each
//!    destination; destinations drop what they had already applied.
//!
//! Money is never created or destroyed: the **total** — every balance plus
//! every amount still in an outbox (in flight) — stays `accounts × 1000`
//! whenever the program is killed and restarted. A transfer reported as done
//! has reached the source's log, so it is never lost: it completes on this
//! run or after the next start.
//!
//! ```text
//! cargo run --release --example bank -- --seconds 3
//! cargo run --release --example bank -- --data /tmp/bank --log-done > done.txt   # kill -9 it
//! cargo run --release --example bank -- --data /tmp/bank --verify done.txt --seconds 0
//! ```
//!
//! Options: `--data DIR` (reuse a directory to recover it; default a fresh
//! temporary one, removed at the end), `--accounts N` (1000; keep it the same
//! for one directory), `--seconds S` (3), `--clients C` (client threads, 4),
//! `--shards N` (default: one per core), `--segment-mib M` (log segment size,
//! 64), `--checkpoint-mib M` (log bytes between checkpoints, 256), `--park`
//! (idle shards park at once), `--log-done` (print `done <transfer id> …` for
//! every transfer acknowledged, as it happens), `--verify FILE` (check that
//! every `done` line of FILE is in the recovered state).
//!
//! Output: `total <amount>` after recovery and again after the transfers have
//! settled (no outbox holds anything), plus counts.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use percore::{
    AskError, Cores, Ctx, DurableState, Engine, EngineConfig, Entity, IdlePolicy, Metrics,
};

/// What a fresh account holds.
pub const OPENING_BALANCE: i64 = 1_000;
/// Most transfers one account may have in flight; more are refused (busy).
pub const OUTBOX_CAP: usize = 64;
/// Largest amount a client transfers.
pub const AMOUNT_MAX: i64 = 250;
/// Pause before a failed credit is sent again.
pub const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest the program waits for in-flight transfers to settle.
pub const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// A transfer debited from its source and not yet acknowledged by its
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The source's sequence number of this transfer (its id, with the source).
    pub seq: u64,
    /// Destination account.
    pub to: u64,
    /// Amount, > 0.
    pub amount: i64,
}

/// A durable bank account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Never negative.
    balance: i64,
    /// Sequence number of this account's next outgoing transfer (from 1).
    next_seq: u64,
    /// Changes applied to this account (debits, credits, acknowledgements);
    /// only ever grows, so a recovered account can be checked for going back.
    ops: u64,
    /// Transfers in flight, by increasing `seq`; at most [`OUTBOX_CAP`].
    /// For each destination only the first entry has been sent.
    outbox: Vec<Pending>,
    /// Per source account, the highest transfer `seq` credited here; sorted by
    /// source, at most one entry per account.
    applied: Vec<(u64, u64)>,
}

/// Messages to an [`Account`].
pub enum AccountMsg {
    /// Report the account (activating it if it is new).
    Inspect {
        /// Include the per-source applied sequence numbers.
        with_applied: bool,
    },
    /// From a client: move `amount` from this account to `to`.
    Transfer {
        /// Destination account.
        to: u64,
        /// Amount to move.
        amount: i64,
    },
    /// From another account: credit transfer `seq` of `from`, once.
    Credit {
        /// Source account.
        from: u64,
        /// The source's sequence number of the transfer.
        seq: u64,
        /// Amount.
        amount: i64,
    },
    /// Continuation: the destination answered the credit of transfer `seq`.
    Acked {
        /// The transfer.
        seq: u64,
        /// The destination's answer.
        result: Result<(), AskError>,
    },
    /// Timer: send the credit of transfer `seq` again.
    Resend {
        /// The transfer.
        seq: u64,
    },
}

/// What an account reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Balance.
    pub balance: i64,
    /// Sum of the amounts in the outbox.
    pub in_flight: i64,
    /// Entries in the outbox.
    pub outbox_len: usize,
    /// Next outgoing sequence number.
    pub next_seq: u64,
    /// Changes applied so far.
    pub ops: u64,
    /// `(source, highest seq credited)`, if asked for.
    pub applied: Vec<(u64, u64)>,
}

impl Summary {
    /// The highest sequence number of `source` credited to this account.
    pub fn applied_from(&self, source: u64) -> u64 {
        match self.applied.binary_search_by_key(&source, |e| e.0) {
            Ok(i) => self.applied[i].1,
            Err(_) => 0,
        }
    }
}

/// Why a transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The balance is below the amount.
    InsufficientFunds,
    /// [`OUTBOX_CAP`] transfers are already in flight.
    Busy,
    /// Zero or negative amount, or source and destination are the same.
    Invalid,
}

/// Replies of an [`Account`].
pub enum AccountReply {
    /// To `Inspect`.
    Summary(Summary),
    /// To `Transfer`: debited and recorded durably.
    Sent {
        /// The transfer's sequence number.
        seq: u64,
        /// The source's `ops` after the debit.
        ops: u64,
    },
    /// To `Transfer`: nothing changed.
    Refused(Refusal),
    /// To `Credit` (applied now or before), and to internal messages.
    Ok,
}

impl Account {
    /// Asks the destination of `p` to credit it; the answer comes back as
    /// [`AccountMsg::Acked`].
    fn send_credit(p: Pending, ctx: &mut Ctx<'_, Self>) {
        let seq = p.seq;
        let credit = AccountMsg::Credit {
            from: ctx.key(),
            seq,
            amount: p.amount,
        };
        let sent = ctx.ask::<Account, _>(p.to, credit, move |reply| AccountMsg::Acked {
            seq,
            result: reply.map(|_| ()),
        });
        if sent.is_err() {
            // The queue to that shard is at its cap: try again later.
            ctx.after(RETRY_DELAY, AccountMsg::Resend { seq });
        }
    }

    fn transfer(&mut self, to: u64, amount: i64, ctx: &mut Ctx<'_, Self>) -> AccountReply {
        if amount <= 0 || to == ctx.key() {
            return AccountReply::Refused(Refusal::Invalid);
        }
        if self.outbox.len() >= OUTBOX_CAP {
            return AccountReply::Refused(Refusal::Busy);
        }
        if self.balance < amount {
            return AccountReply::Refused(Refusal::InsufficientFunds);
        }
        let seq = self.next_seq;
        let entry = Pending { seq, to, amount };
        // One credit in flight per destination keeps each destination's view
        // of this source in sequence order.
        let first_for_dest = !self.outbox.iter().any(|p| p.to == to);
        self.balance -= amount;
        self.next_seq += 1;
        self.ops += 1;
        self.outbox.push(entry);
        if first_for_dest {
            Self::send_credit(entry, ctx);
        }
        AccountReply::Sent { seq, ops: self.ops }
    }

    fn credit(&mut self, from: u64, seq: u64, amount: i64) {
        match self.applied.binary_search_by_key(&from, |e| e.0) {
            Ok(i) if self.applied[i].1 >= seq => return, // a resend: already applied
            Ok(i) => self.applied[i].1 = seq,
            Err(i) => self.applied.insert(i, (from, seq)),
        }
        self.balance += amount;
        self.ops += 1;
    }

    fn acked(&mut self, seq: u64, result: Result<(), AskError>, ctx: &mut Ctx<'_, Self>) {
        let Some(i) = self.outbox.iter().position(|p| p.seq == seq) else {
            return; // acknowledged before
        };
        if result.is_err() {
            ctx.after(RETRY_DELAY, AccountMsg::Resend { seq });
            return;
        }
        let done = self.outbox.remove(i);
        self.ops += 1;
        if let Some(&next) = self.outbox.iter().find(|p| p.to == done.to) {
            Self::send_credit(next, ctx);
        }
    }

    fn summary(&self, with_applied: bool) -> Summary {
        Summary {
            balance: self.balance,
            in_flight: self.outbox.iter().map(|p| p.amount).sum(),
            outbox_len: self.outbox.len(),
            next_seq: self.next_seq,
            ops: self.ops,
            applied: if with_applied {
                self.applied.clone()
            } else {
                Vec::new()
            },
        }
    }
}

impl Entity for Account {
    const KIND: &'static str = "bank.account";
    type Msg = AccountMsg;
    type Reply = AccountReply;

    fn activate(_key: u64) -> Self {
        Account {
            balance: OPENING_BALANCE,
            next_seq: 1,
            ops: 0,
            outbox: Vec::new(),
            applied: Vec::new(),
        }
    }

    fn handle(&mut self, msg: AccountMsg, ctx: &mut Ctx<'_, Self>) -> AccountReply {
        match msg {
            AccountMsg::Inspect { with_applied } => {
                return AccountReply::Summary(self.summary(with_applied))
            }
            AccountMsg::Transfer { to, amount } => return self.transfer(to, amount, ctx),
            AccountMsg::Credit { from, seq, amount } => self.credit(from, seq, amount),
            AccountMsg::Acked { seq, result } => self.acked(seq, result, ctx),
            AccountMsg::Resend { seq } => {
                if let Some(&p) = self.outbox.iter().find(|p| p.seq == seq) {
                    Self::send_credit(p, ctx);
                }
            }
        }
        AccountReply::Ok
    }

    /// Back from the log: whatever was in flight may or may not have reached
    /// its destination, so send the first entry per destination again.
    fn recovered(&mut self, ctx: &mut Ctx<'_, Self>) {
        let mut seen: Vec<u64> = Vec::new();
        for &p in &self.outbox {
            if !seen.contains(&p.to) {
                seen.push(p.to);
                Self::send_credit(p, ctx);
            }
        }
    }
}

/// The account's log record, little-endian:
///
/// ```text
/// 0   balance     i64
/// 8   next_seq    u64
/// 16  ops         u64
/// 24  outbox_len  u32
/// 28  applied_len u32
/// 32  outbox:  outbox_len  × (seq u64, to u64, amount i64)   24 B each
/// ..  applied: applied_len × (source u64, seq u64)           16 B each
/// ```
impl DurableState for Account {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.balance.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.extend_from_slice(&self.ops.to_le_bytes());
        out.extend_from_slice(&(self.outbox.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.applied.len() as u32).to_le_bytes());
        for p in &self.outbox {
            out.extend_from_slice(&p.seq.to_le_bytes());
            out.extend_from_slice(&p.to.to_le_bytes());
            out.extend_from_slice(&p.amount.to_le_bytes());
        }
        for &(source, seq) in &self.applied {
            out.extend_from_slice(&source.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
        }
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        const HEAD: usize = 32;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if bytes.len() < HEAD {
            return Err(percore::DecodeError::new(format!(
                "{} bytes, shorter than the 32-byte head",
                bytes.len()
            )));
        }
        let outbox_len = u32_at(24) as usize;
        let applied_len = u32_at(28) as usize;
        let expected = HEAD + outbox_len * 24 + applied_len * 16;
        if bytes.len() != expected || outbox_len > OUTBOX_CAP {
            return Err(percore::DecodeError::new(format!(
                "{} bytes for {outbox_len} outbox and {applied_len} applied entries \
                 (expected {expected}, outbox at most {OUTBOX_CAP})",
                bytes.len()
            )));
        }
        let account = Account {
            balance: u64_at(0) as i64,
            next_seq: u64_at(8),
            ops: u64_at(16),
            outbox: (0..outbox_len)
                .map(|i| {
                    let at = HEAD + i * 24;
                    Pending {
                        seq: u64_at(at),
                        to: u64_at(at + 8),
                        amount: u64_at(at + 16) as i64,
                    }
                })
                .collect(),
            applied: (0..applied_len)
                .map(|i| {
                    let at = HEAD + outbox_len * 24 + i * 16;
                    (u64_at(at), u64_at(at + 8))
                })
                .collect(),
        };
        account.check(key)?;
        Ok(account)
    }
}

impl Account {
    /// The invariants on the fields.
    fn check(&self, key: u64) -> Result<(), String> {
        let bad = |what: &str| Err(format!("account {key}: {what}"));
        if self.balance < 0 {
            return bad("negative balance");
        }
        if self.next_seq == 0 {
            return bad("sequence numbers start at 1");
        }
        let ordered = self.outbox.windows(2).all(|w| w[0].seq < w[1].seq);
        let valid = self
            .outbox
            .iter()
            .all(|p| p.amount > 0 && p.seq < self.next_seq && p.to != key);
        if !ordered || !valid {
            return bad("outbox out of order or with an invalid entry");
        }
        if !self.applied.windows(2).all(|w| w[0].0 < w[1].0) {
            return bad("applied sequence numbers not sorted by source");
        }
        Ok(())
    }
}

/// A transfer the client was told is done (its debit is durable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// Source account.
    pub from: u64,
    /// Its sequence number at the source: `(from, seq)` is the transfer id.
    pub seq: u64,
    /// Destination account.
    pub to: u64,
    /// Amount.
    pub amount: i64,
    /// The source's `ops` right after the debit.
    pub ops: u64,
}

impl fmt::Display for Done {
    /// `done <from>:<seq> to <to> amount <amount> ops <ops>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "done {}:{} to {} amount {} ops {}",
            self.from, self.seq, self.to, self.amount, self.ops
        )
    }
}

impl Done {
    /// Parses a line written by `Display`; `None` for anything else (other
    /// output, or a line cut short by a kill).
    pub fn parse(line: &str) -> Option<Done> {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 8 || w[0] != "done" || w[2] != "to" || w[4] != "amount" || w[6] != "ops" {
            return None;
        }
        let (from, seq) = w[1].split_once(':')?;
        Some(Done {
            from: from.parse().ok()?,
            seq: seq.parse().ok()?,
            to: w[3].parse().ok()?,
            amount: w[5].parse().ok()?,
            ops: w[7].parse().ok()?,
        })
    }
}

/// Every account's report, taken when nothing is in flight.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// By account key.
    pub accounts: Vec<Summary>,
}

impl Ledger {
    /// Balances plus amounts in flight.
    pub fn total(&self) -> i64 {
        self.accounts.iter().map(|a| a.balance + a.in_flight).sum()
    }

    /// Checks that every transfer in `done` is in this ledger: its source has
    /// issued its sequence number and not gone back below its `ops`, and its
    /// destination has credited it.
    ///
    /// # Errors
    ///
    /// The first transfer that is missing, and why.
    pub fn check_done(&self, done: &[Done]) -> Result<(), String> {
        for d in done {
            let (Some(src), Some(dst)) = (
                self.accounts.get(d.from as usize),
                self.accounts.get(d.to as usize),
            ) else {
                return Err(format!("{d}: account out of range"));
            };
            if src.next_seq <= d.seq {
                return Err(format!("{d}: the source's next seq is {}", src.next_seq));
            }
            if src.ops < d.ops {
                return Err(format!("{d}: the source went back to ops {}", src.ops));
            }
            if dst.applied_from(d.from) < d.seq {
                return Err(format!(
                    "{d}: the destination credited the source only through seq {}",
                    dst.applied_from(d.from)
                ));
            }
        }
        Ok(())
    }
}

/// Starts the engine on `data` with the account kind registered as durable.
///
/// # Errors
///
/// The engine's start error (a corrupt log names the file and offset).
pub fn start_engine(data: &Path, opts: &Options) -> Result<Engine, percore::Error> {
    let config = EngineConfig {
        cores: opts.shards.map_or(Cores::All, Cores::Count),
        oversubscribe: opts.shards.is_some(),
        idle: if opts.park {
            IdlePolicy::Park
        } else {
            IdlePolicy::default()
        },
        data_dir: Some(data.to_path_buf()),
        segment_len_bytes: opts.segment_len_bytes,
        checkpoint_len_bytes: opts.checkpoint_len_bytes,
        // Client threads block on full rings rather than seeing `Full`.
        send_wait_us_max: 60_000_000,
        ..EngineConfig::default()
    };
    Engine::builder()
        .config(config)
        .register_durable::<Account>()
        .build()
}

/// Reads every account (activating new ones) once nothing is in flight: it
/// repeats until one full pass finds every outbox empty — after that, with
/// no new transfers, nothing can move — and then reads the ledger.
///
/// # Errors
///
/// An ask that failed, or transfers still in flight after [`SETTLE_WAIT`].
pub fn settle(engine: &Engine, accounts: u64, with_applied: bool) -> Result<Ledger, String> {
    let client = engine.client().map_err(|e| e.to_string())?;
    // Activate every account in one batch: their first records are then
    // synced together instead of one ask at a time.
    let touch = (0..accounts).map(|key| {
        (
            key,
            AccountMsg::Inspect {
                with_applied: false,
            },
        )
    });
    client
        .tell_batch::<Account, _>(touch)
        .map_err(|e| format!("activating accounts: {e}"))?;
    let read = |with_applied: bool| -> Result<Ledger, String> {
        let mut ledger = Ledger::default();
        for key in 0..accounts {
            match client.ask::<Account>(key, AccountMsg::Inspect { with_applied }) {
                Ok(AccountReply::Summary(s)) => ledger.accounts.push(s),
                Ok(_) => return Err(format!("account {key}: unexpected reply")),
                Err(e) => return Err(format!("account {key}: {e}")),
            }
        }
        Ok(ledger)
    };
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let pass = read(false)?;
        if pass.accounts.iter().all(|a| a.outbox_len == 0) {
            break;
        }
        if Instant::now() > deadline {
            let in_flight: usize = pass.accounts.iter().map(|a| a.outbox_len).sum();
            return Err(format!(
                "{in_flight} transfers still in flight after {SETTLE_WAIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ledger = read(with_applied)?;
    if ledger.accounts.iter().any(|a| a.outbox_len != 0) {
        return Err("a transfer started while settling".into());
    }
    Ok(ledger)
}

/// Counts of a run of transfers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    /// Transfers acknowledged.
    pub done: u64,
    /// Refused for insufficient funds.
    pub refused: u64,
    /// Refused because the source had [`OUTBOX_CAP`] in flight.
    pub busy: u64,
}

/// xorshift64*: a small seeded generator, enough to pick accounts.
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Runs transfers between random pairs of `accounts` from `clients` threads
/// for `duration`; calls `on_done` for each one acknowledged, after its ask
/// returned.
///
/// # Panics
///
/// If an ask fails (the engine shut down or a log failed).
pub fn run_transfers(
    engine: &Engine,
    accounts: u64,
    clients: usize,
    duration: Duration,
    seed: u64,
    on_done: &(dyn Fn(&Done) + Sync),
) -> Traffic {
    assert!(accounts >= 2, "transfers need two accounts");
    let deadline = Instant::now() + duration;
    let (done, refused, busy) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        for thread in 0..clients {
            let client = engine.client().expect("a client slot");
            let (done, refused, busy) = (&done, &refused, &busy);
            scope.spawn(move || {
                let mut rng = XorShift::new(seed ^ ((thread as u64 + 1) << 32));
                while Instant::now() < deadline {
                    let from = rng.below(accounts);
                    let to = (from + 1 + rng.below(accounts - 1)) % accounts;
                    let amount = 1 + rng.below(AMOUNT_MAX as u64) as i64;
                    let msg = AccountMsg::Transfer { to, amount };
                    match client.ask::<Account>(from, msg) {
                        Ok(AccountReply::Sent { seq, ops }) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            on_done(&Done {
                                from,
                                seq,
                                to,
                                amount,
                                ops,
                            });
                        }
                        Ok(AccountReply::Refused(Refusal::Busy)) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(AccountReply::Refused(_)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => panic!("unexpected reply to a transfer"),
                        Err(e) => panic!("transfer from {from} failed: {e}"),
                    }
                }
            });
        }
    });
    Traffic {
        done: done.into_inner(),
        refused: refused.into_inner(),
        busy: busy.into_inner(),
    }
}

/// Prints `line` to stdout and flushes it, whole, at once.
pub fn say(line: impl fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// Data directory; `None`: a fresh temporary one, removed at the end.
    pub data: Option<PathBuf>,
    /// Accounts 0 ..< this.
    pub accounts: u64,
    /// How long to run transfers.
    pub seconds: f64,
    /// Client threads.
    pub clients: usize,
    /// Shard count; `None`: one per core.
    pub shards: Option<usize>,
    /// Log segment size.
    pub segment_len_bytes: u64,
    /// Log bytes between checkpoints.
    pub checkpoint_len_bytes: u64,
    /// Idle shards park at once.
    pub park: bool,
    /// Print a `done` line per acknowledged transfer.
    pub log_done: bool,
    /// A file of `done` lines to check after recovery.
    pub verify: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data: None,
            accounts: 1_000,
            seconds: 3.0,
            clients: 4,
            shards: None,
            segment_len_bytes: 64 << 20,
            checkpoint_len_bytes: 256 << 20,
            park: false,
            log_done: false,
            verify: None,
        }
    }
}

impl Options {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    ///
    /// What is wrong with them.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        fn value<T: std::str::FromStr>(name: &str, v: Option<String>) -> Result<T, String> {
            let v = v.ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: cannot parse {v:?}"))
        }
        let mut o = Options::default();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--data" => o.data = Some(value::<PathBuf>(&arg, args.next())?),
                "--accounts" => o.accounts = value(&arg, args.next())?,
                "--seconds" => o.seconds = value(&arg, args.next())?,
                "--clients" => o.clients = value(&arg, args.next())?,
                "--shards" => o.shards = Some(value(&arg, args.next())?),
                "--segment-mib" => o.segment_len_bytes = value::<u64>(&arg, args.next())? << 20,
                "--checkpoint-mib" => {
                    o.checkpoint_len_bytes = value::<u64>(&arg, args.next())? << 20
                }
                "--park" => o.park = true,
                "--log-done" => o.log_done = true,
                "--verify" => o.verify = Some(value::<PathBuf>(&arg, args.next())?),
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown option {other:?}\n{USAGE}")),
            }
        }
        if o.accounts < 2 || o.clients == 0 || o.seconds.is_nan() || o.seconds < 0.0 {
            return Err(format!(
                "need --accounts >= 2, --clients >= 1, --seconds >= 0\n{USAGE}"
            ));
        }
        o.checkpoint_len_bytes = o.checkpoint_len_bytes.max(o.segment_len_bytes);
        Ok(o)
    }
}

const USAGE: &str = "usage: bank [--data DIR] [--accounts N] [--seconds S] [--clients C] \
    [--shards N] [--segment-mib M] [--checkpoint-mib M] [--park] [--log-done] [--verify FILE]";

fn log_line(m: &Metrics) -> String {
    let t = m.total();
    format!(
        "log {} records, {} checkpoints, {} outputs released after their records were durable",
        t.records_logged, t.checkpoints, t.gated_released
    )
}

fn run(opts: &Options) -> Result<(), String> {
    let (data, temporary) = match &opts.data {
        Some(dir) => (dir.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir =
                std::env::temp_dir().join(format!("percore-bank-{}-{nanos}", std::process::id()));
            (dir, true)
        }
    };
    let engine = start_engine(&data, opts).map_err(|e| e.to_string())?;
    let r = engine.recovery();
    say(format_args!(
        "data {} ({} shards): recovered {} accounts from {} records ({} bytes of log, {} torn tails)",
        data.display(),
        engine.shard_count(),
        r.entities,
        r.records,
        r.log_bytes,
        r.torn_tails
    ));
    let ledger = settle(&engine, opts.accounts, opts.verify.is_some())?;
    let before = ledger.total();
    say(format_args!("total {before}"));
    if let Some(file) = &opts.verify {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let done: Vec<Done> = text.lines().filter_map(Done::parse).collect();
        ledger.check_done(&done)?;
        say(format_args!("verified {} done transfers", done.len()));
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let log_done = opts.log_done;
    let started = Instant::now();
    let traffic = run_transfers(
        &engine,
        opts.accounts,
        opts.clients,
        Duration::from_secs_f64(opts.seconds),
        seed,
        &|d| {
            if log_done {
                say(d);
            }
        },
    );
    let secs = started.elapsed().as_secs_f64();
    say(format_args!(
        "transfers {} done, {} refused (insufficient funds), {} busy, in {secs:.2} s ({:.0} done/s)",
        traffic.done,
        traffic.refused,
        traffic.busy,
        traffic.done as f64 / secs.max(1e-9)
    ));
    let ledger = settle(&engine, opts.accounts, false)?;
    let after = ledger.total();
    say(format_args!("total {after}"));
    let metrics = engine.shutdown().map_err(|e| e.to_string())?;
    say(log_line(&metrics));
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    if before != after {
        return Err(format!("the total changed from {before} to {after}"));
    }
    Ok(())
}

fn main() {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("bank: {e}");
        std::process::exit(1);
    }
}
