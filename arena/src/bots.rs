//! The bot swarm: N real TCP connections playing the arena, measuring the server.
//!
//! Each bot joins its home room (`1 + index / room_size`), sends a movement input at
//! the tick rate, now and then a chat line or a trade with a player it saw in its
//! room, and (if asked) moves to the plaza (room 0) at a scripted moment. For each
//! of its inputs it measures the time until the first broadcast whose entry for it
//! carries that input's sequence number:
//!
//! - `raw_*`: send → receive, which includes the wait for the room's tick (the
//!   server's choice, uniform over a tick period);
//! - `p50_us`, `p99_us`, `p999_us`: the same less the entry's `hold_us` (the time the
//!   room held the applied input before its tick), so what is left is queueing and
//!   transport inside and around the server: the figure servers are compared on.
//!
//! An input overtaken by a later one before a tick is counted as `inputs_coalesced`,
//! not measured. Trades are measured from send to their durable acknowledgement.
//!
//! The bots share the machine with the server, so they are lean: `threads`
//! current-thread runtimes (1 by default), a task per bot, one write per bot per
//! tick carrying all its messages, reads drained into a reused buffer and decoded in
//! place: no allocation per message on the hot path.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::{self, ClientMsg, ServerMsg};

/// The plaza's room id.
pub const PLAZA_ROOM: u32 = 0;
/// Trades a bot keeps in flight at most.
pub const MAX_PENDING_TRADES: usize = 8;
/// Inputs remembered per bot for matching broadcasts (older ones are not measured).
const SENT_RING: usize = 64;
/// Highest latency recorded, in microseconds (higher values are clamped).
const LATENCY_MAX_US: u64 = 60_000_000;

const CHAT_LINES: [&[u8]; 4] = [b"gg", b"anyone trading?", b"meet at the plaza", b"brb"];

/// The swarm's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server.
    pub server: SocketAddr,
    /// Number of bots (connections); default 40.
    pub players: usize,
    /// Players per home room; default 50.
    pub room_size: usize,
    /// How long bots play (warm-up included); default 10 s.
    pub duration: Duration,
    /// Start of the run during which latencies are not recorded (joins); default 1 s.
    pub warmup: Duration,
    /// Inputs per second per bot; default 20.
    pub input_hz: u32,
    /// A bot chats on one input in `chat_every` on average (0: never); default 200.
    pub chat_every: u32,
    /// A bot trades on one input in `trade_every` on average (0: never); default 100.
    pub trade_every: u32,
    /// Runtimes (threads) the bots share; default 1.
    pub threads: usize,
    /// Id of the first bot's player; bots use `first_player..first_player + players`.
    pub first_player: u32,
    /// When the crowd gathers in the plaza (none by default).
    pub plaza_at: Option<Duration>,
    /// Percentage of bots that go to the plaza; default 50.
    pub plaza_pct: u32,
    /// Top 12 bits of every trade id, so runs on the same ledger never reuse one;
    /// default: from the clock.
    pub trade_nonce: u16,
    /// How long bots wait for outstanding trade acknowledgements at the end; default 3 s.
    pub drain: Duration,
    /// Write the ids of trades acknowledged as applied here, one per line.
    pub acked_trades: Option<PathBuf>,
    /// Print progress to stderr once a second.
    pub progress: bool,
    /// Report this process's CPU time beside the bots' (`server_cpu_*`).
    pub server_pid: Option<u32>,
}

impl Config {
    /// Defaults for everything but the server address.
    pub fn new(server: SocketAddr) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Config {
            server,
            players: 40,
            room_size: 50,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            input_hz: 20,
            chat_every: 200,
            trade_every: 100,
            threads: 1,
            first_player: 1,
            plaza_at: None,
            plaza_pct: 50,
            trade_nonce: (nanos % 4096) as u16,
            drain: Duration::from_secs(3),
            acked_trades: None,
            progress: false,
            server_pid: None,
        }
    }
}

/// Counters shared by every bot thread and the progress printer.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connect_errors: AtomicU64,
    disconnects: AtomicU64,
    protocol_errors: AtomicU64,
    server_errors: AtomicU64,
    welcomes: AtomicU64,
    inputs_sent: AtomicU64,
    inputs_measured: AtomicU64,
    inputs_coalesced: AtomicU64,
    deliveries: AtomicU64,
    deliveries_measured: AtomicU64,
    chats_sent: AtomicU64,
    chats_received: AtomicU64,
    trades_sent: AtomicU64,
    trades_acked: AtomicU64,
    trades_applied: AtomicU64,
    trades_refused: AtomicU64,
    /// p99 of the last second in µs, for the progress line (the last thread to report wins).
    window_p99_us: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// One thread's histograms.
struct Hists {
    latency: Histogram<u64>,
    raw: Histogram<u64>,
    trade_ack: Histogram<u64>,
    window: Histogram<u64>,
    acked_ids: Vec<u64>,
}

impl Hists {
    fn new() -> Self {
        Hists {
            latency: histogram(),
            raw: histogram(),
            trade_ack: histogram(),
            window: histogram(),
            acked_ids: Vec::new(),
        }
    }
}

/// What the swarm measured.
pub struct Report {
    /// Bots started.
    pub players: usize,
    /// Wall time of the run, warm-up excluded, in seconds.
    pub measured_s: f64,
    /// Input → broadcast latency less the room's hold, µs.
    pub latency: Histogram<u64>,
    /// Input → broadcast latency as received, µs.
    pub raw: Histogram<u64>,
    /// Trade → durable acknowledgement, µs.
    pub trade_ack: Histogram<u64>,
    /// Ids of trades acknowledged as applied (`Ok` or `Duplicate`).
    pub acked_trade_ids: Vec<u64>,
    /// Named counters, in print order.
    pub counters: Vec<(&'static str, u64)>,
    /// CPU seconds of this process (user + system) during the run.
    pub bot_cpu_s: f64,
    /// CPU seconds of the server process during the run, if its pid was given.
    pub server_cpu_s: Option<f64>,
    /// Wall seconds the CPU figures cover.
    pub wall_s: f64,
}

impl Report {
    /// A counter by name (0 if unknown).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// The result block: one `METRIC VALUE` line each.
    ///
    /// # Errors
    /// Writing to `w` failed.
    pub fn write_metrics(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "players {}", self.players)?;
        writeln!(w, "measured_s {:.2}", self.measured_s)?;
        let q = |h: &Histogram<u64>, p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        writeln!(w, "p50_us {}", q(&self.latency, 0.5))?;
        writeln!(w, "p99_us {}", q(&self.latency, 0.99))?;
        writeln!(w, "p999_us {}", q(&self.latency, 0.999))?;
        writeln!(w, "max_us {}", self.latency.max())?;
        writeln!(w, "raw_p50_us {}", q(&self.raw, 0.5))?;
        writeln!(w, "raw_p99_us {}", q(&self.raw, 0.99))?;
        writeln!(w, "raw_p999_us {}", q(&self.raw, 0.999))?;
        writeln!(w, "trade_ack_p50_us {}", q(&self.trade_ack, 0.5))?;
        writeln!(w, "trade_ack_p99_us {}", q(&self.trade_ack, 0.99))?;
        let per_s = self.counter("deliveries_measured") as f64 / self.measured_s.max(1e-9);
        writeln!(w, "delivered_per_s {per_s:.0}")?;
        for (name, v) in &self.counters {
            writeln!(w, "{name} {v}")?;
        }
        let unacked = self
            .counter("trades_sent")
            .saturating_sub(self.counter("trades_acked"));
        writeln!(w, "trades_unacked {unacked}")?;
        writeln!(w, "bot_cpu_s {:.2}", self.bot_cpu_s)?;
        writeln!(
            w,
            "bot_cpu_pct {:.1}",
            100.0 * self.bot_cpu_s / self.wall_s.max(1e-9)
        )?;
        if let Some(s) = self.server_cpu_s {
            writeln!(w, "server_cpu_s {s:.2}")?;
            writeln!(w, "server_cpu_pct {:.1}", 100.0 * s / self.wall_s.max(1e-9))?;
        }
        Ok(())
    }
}

/// Runs the swarm to the end of `duration` (plus the drain of outstanding trades)
/// and reports.
///
/// # Errors
/// A runtime cannot be built, or the acknowledged-trades file cannot be written.
pub fn run(config: Config) -> io::Result<Report> {
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let cpu0 = cpu::own_seconds();
    let server_cpu0 = config.server_pid.and_then(cpu::process_seconds);
    let threads = config.threads.clamp(1, config.players.max(1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let config = config.clone();
        let counters = counters.clone();
        let h = std::thread::Builder::new()
            .name(format!("bots-{t}"))
            .spawn(move || run_thread(t, threads, config, counters, start))?;
        handles.push(h);
    }
    if config.progress {
        let mut last = 0u64;
        let mut last_inputs = 0u64;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_secs(1));
            let c = &counters;
            let d = c.deliveries.load(Ordering::Relaxed);
            let i = c.inputs_sent.load(Ordering::Relaxed);
            eprintln!(
                "arena-bots t={:>3}s connected={} deliveries/s={} inputs/s={} p99_ms(1s)={:.2} trades_acked={}/{} errors={} disconnects={}",
                start.elapsed().as_secs(),
                c.connected.load(Ordering::Relaxed),
                d - last,
                i - last_inputs,
                c.window_p99_us.load(Ordering::Relaxed) as f64 / 1000.0,
                c.trades_acked.load(Ordering::Relaxed),
                c.trades_sent.load(Ordering::Relaxed),
                c.protocol_errors.load(Ordering::Relaxed) + c.server_errors.load(Ordering::Relaxed),
                c.disconnects.load(Ordering::Relaxed),
            );
            (last, last_inputs) = (d, i);
        }
    }
    let mut total = Hists::new();
    for h in handles {
        let hists = h
            .join()
            .map_err(|_| io::Error::other("a bot thread panicked"))??;
        total.latency.add(&hists.latency).expect("same bounds");
        total.raw.add(&hists.raw).expect("same bounds");
        total.trade_ack.add(&hists.trade_ack).expect("same bounds");
        total.acked_ids.extend_from_slice(&hists.acked_ids);
    }
    let wall_s = start.elapsed().as_secs_f64();
    let bot_cpu_s = cpu::own_seconds() - cpu0;
    let server_cpu_s = match (
        server_cpu0,
        config.server_pid.and_then(cpu::process_seconds),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    if let Some(path) = &config.acked_trades {
        let mut f = io::BufWriter::new(std::fs::File::create(path)?);
        for id in &total.acked_ids {
            writeln!(f, "{id}")?;
        }
        f.flush()?;
    }
    let c = &counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let counters = vec![
        ("connected", load(&c.connected)),
        ("connect_errors", load(&c.connect_errors)),
        ("disconnects", load(&c.disconnects)),
        ("protocol_errors", load(&c.protocol_errors)),
        ("server_errors", load(&c.server_errors)),
        ("welcomes", load(&c.welcomes)),
        ("inputs_sent", load(&c.inputs_sent)),
        ("inputs_measured", load(&c.inputs_measured)),
        ("inputs_coalesced", load(&c.inputs_coalesced)),
        ("deliveries", load(&c.deliveries)),
        ("deliveries_measured", load(&c.deliveries_measured)),
        ("chats_sent", load(&c.chats_sent)),
        ("chats_received", load(&c.chats_received)),
        ("trades_sent", load(&c.trades_sent)),
        ("trades_acked", load(&c.trades_acked)),
        ("trades_applied", load(&c.trades_applied)),
        ("trades_refused", load(&c.trades_refused)),
    ];
    Ok(Report {
        players: config.players,
        measured_s: config.duration.saturating_sub(config.warmup).as_secs_f64(),
        latency: total.latency,
        raw: total.raw,
        trade_ack: total.trade_ack,
        acked_trade_ids: total.acked_ids,
        counters,
        bot_cpu_s,
        server_cpu_s,
        wall_s,
    })
}

fn run_thread(
    t: usize,
    threads: usize,
    config: Config,
    counters: Arc<Counters>,
    start: Instant,
) -> io::Result<Hists> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let hists = Rc::new(RefCell::new(Hists::new()));
    let config = Rc::new(config);
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for index in (t..config.players).step_by(threads) {
            let bot = Bot::new(index, &config, start);
            tasks.push(tokio::task::spawn_local(bot.play(
                config.clone(),
                counters.clone(),
                hists.clone(),
            )));
        }
        // The per-second p99 for the progress line.
        let window = {
            let (hists, counters) = (hists.clone(), counters.clone());
            tokio::task::spawn_local(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    let mut h = hists.borrow_mut();
                    if !h.window.is_empty() {
                        counters
                            .window_p99_us
                            .store(h.window.value_at_quantile(0.99), Ordering::Relaxed);
                        h.window.reset();
                    }
                }
            })
        };
        for task in tasks {
            let _ = task.await;
        }
        window.abort();
    });
    drop(local);
    Ok(Rc::try_unwrap(hists)
        .map_err(|_| io::Error::other("histograms still shared"))?
        .into_inner())
}

/// A small xorshift generator: per-bot, seeded by the bot's index, no allocation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability 1 / `n` (never for 0).
    fn one_in(&mut self, n: u32) -> bool {
        n != 0 && self.next() % n as u64 == 0
    }
}

struct Bot {
    player: u32,
    home: u32,
    goes_to_plaza: bool,
    start: Instant,
    rng: Rng,
    seq: u32,
    sent_at: [Instant; SENT_RING],
    measured_upto: u32,
    welcomed: bool,
    partner: Option<u32>,
    trades: u32,
    pending: [Option<(u64, Instant)>; MAX_PENDING_TRADES],
}

impl Bot {
    fn new(index: usize, config: &Config, start: Instant) -> Self {
        Bot {
            player: config.first_player + index as u32,
            home: 1 + (index / config.room_size.max(1)) as u32,
            goes_to_plaza: config.plaza_at.is_some()
                && (index as u32 * 37) % 100 < config.plaza_pct,
            start,
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
            seq: 0,
            sent_at: [start; SENT_RING],
            measured_upto: 0,
            welcomed: false,
            partner: None,
            trades: 0,
            pending: [None; MAX_PENDING_TRADES],
        }
    }

    fn pending_trades(&self) -> usize {
        self.pending.iter().filter(|p| p.is_some()).count()
    }

    async fn play(
        mut self,
        config: Rc<Config>,
        counters: Arc<Counters>,
        hists: Rc<RefCell<Hists>>,
    ) {
        let mut stream = match TcpStream::connect(config.server).await {
            Ok(s) => s,
            Err(_) => return bump(&counters.connect_errors),
        };
        let _ = stream.set_nodelay(true);
        bump(&counters.connected);
        let mut wbuf = Vec::with_capacity(256);
        let mut rbuf: Vec<u8> = Vec::with_capacity(32 * 1024);
        ClientMsg::Join {
            player: self.player,
            room: self.home,
        }
        .encode_frame(&mut wbuf);
        if stream.write_all(&wbuf).await.is_err() {
            return bump(&counters.disconnects);
        }
        let period = Duration::from_micros(1_000_000 / config.input_hz.max(1) as u64);
        // Spread the bots' sends over the period.
        let phase = Duration::from_micros(self.rng.next() % period.as_micros() as u64);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = self.start + config.duration;
        let warm_end = self.start + config.warmup;
        let plaza_at = config.plaza_at.map(|d| self.start + d);
        let mut drain_until: Option<Instant> = None;
        loop {
            tokio::select! {
                r = stream.read_buf(&mut rbuf) => {
                    match r {
                        Ok(n) if n > 0 => {}
                        _ => return bump(&counters.disconnects),
                    }
                    let now = Instant::now();
                    let mut at = 0;
                    loop {
                        match proto::split_frame(&rbuf[at..]) {
                            Ok(Some((body, used))) => {
                                at += used;
                                if !self.on_message(body, now, warm_end, &counters, &hists) {
                                    return bump(&counters.protocol_errors);
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return bump(&counters.protocol_errors),
                        }
                    }
                    rbuf.drain(..at);
                    if rbuf.capacity() - rbuf.len() < 4096 {
                        rbuf.reserve(16 * 1024);
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    if let Some(until) = drain_until {
                        if self.pending_trades() == 0 || now >= until {
                            break;
                        }
                        continue;
                    }
                    if now >= end {
                        drain_until = Some(now + config.drain);
                        continue;
                    }
                    if !self.welcomed {
                        continue;
                    }
                    wbuf.clear();
                    self.tick(now, plaza_at, &config, &counters, &mut wbuf);
                    if stream.write_all(&wbuf).await.is_err() {
                        return bump(&counters.disconnects);
                    }
                }
            }
        }
        let _ = stream.shutdown().await;
    }

    /// Appends this tick's messages to `wbuf`.
    fn tick(
        &mut self,
        now: Instant,
        plaza_at: Option<Instant>,
        config: &Config,
        counters: &Counters,
        wbuf: &mut Vec<u8>,
    ) {
        self.seq += 1;
        self.sent_at[self.seq as usize % SENT_RING] = now;
        let r = self.rng.next();
        let (dx, dy) = ((r % 7) as i8 - 3, ((r >> 8) % 7) as i8 - 3);
        ClientMsg::Input {
            seq: self.seq,
            dx,
            dy,
        }
        .encode_frame(wbuf);
        bump(&counters.inputs_sent);
        if self.rng.one_in(config.chat_every) {
            let text = CHAT_LINES[(r >> 16) as usize % CHAT_LINES.len()];
            ClientMsg::Chat { text }.encode_frame(wbuf);
            bump(&counters.chats_sent);
        }
        if let (true, Some(to)) = (self.rng.one_in(config.trade_every), self.partner) {
            if let Some(slot) = self.pending.iter_mut().find(|p| p.is_none()) {
                self.trades += 1;
                let trade_id = (config.trade_nonce as u64 & 0xFFF) << 52
                    | (self.player as u64) << 20
                    | (self.trades as u64 & 0xF_FFFF);
                *slot = Some((trade_id, now));
                let gold = 1 + (r >> 24) as u32 % 5;
                let items = (r >> 32) as u32 % 2;
                ClientMsg::Trade {
                    trade_id,
                    to,
                    gold,
                    items,
                }
                .encode_frame(wbuf);
                bump(&counters.trades_sent);
            }
        }
        if self.goes_to_plaza && plaza_at.is_some_and(|t| now >= t) {
            self.goes_to_plaza = false;
            ClientMsg::Join {
                player: self.player,
                room: PLAZA_ROOM,
            }
            .encode_frame(wbuf);
        }
    }

    /// Handles one server message; false for a protocol error.
    fn on_message(
        &mut self,
        body: &[u8],
        now: Instant,
        warm_end: Instant,
        counters: &Counters,
        hists: &RefCell<Hists>,
    ) -> bool {
        let Ok(msg) = ServerMsg::decode(body) else {
            return false;
        };
        bump(&counters.deliveries);
        let measuring = now >= warm_end;
        if measuring {
            bump(&counters.deliveries_measured);
        }
        match msg {
            ServerMsg::Welcome { player, .. } => {
                if player != self.player {
                    return false;
                }
                self.welcomed = true;
                bump(&counters.welcomes);
            }
            ServerMsg::State(view) => {
                let n = view.len();
                let pick = if n > 1 {
                    (self.rng.next() % n as u64) as usize
                } else {
                    usize::MAX
                };
                for (i, e) in view.entries().enumerate() {
                    if e.player == self.player {
                        self.measure(e.last_seq, e.hold_us, now, warm_end, counters, hists);
                    } else if i == pick {
                        self.partner = Some(e.player);
                    }
                }
            }
            ServerMsg::Chat { .. } => bump(&counters.chats_received),
            ServerMsg::TradeAck {
                trade_id, status, ..
            } => {
                let Some(slot) = self
                    .pending
                    .iter_mut()
                    .find(|p| p.is_some_and(|(id, _)| id == trade_id))
                else {
                    return false;
                };
                let (_, sent) = slot.take().expect("found");
                bump(&counters.trades_acked);
                let mut h = hists.borrow_mut();
                let us = now
                    .duration_since(sent)
                    .as_micros()
                    .min(LATENCY_MAX_US as u128) as u64;
                h.trade_ack.record(us.max(1)).expect("clamped");
                if status.is_applied() {
                    bump(&counters.trades_applied);
                    h.acked_ids.push(trade_id);
                } else {
                    bump(&counters.trades_refused);
                }
            }
            ServerMsg::Error { .. } => bump(&counters.server_errors),
        }
        true
    }

    fn measure(
        &mut self,
        last_seq: u32,
        hold_us: u32,
        now: Instant,
        warm_end: Instant,
        counters: &Counters,
        hists: &RefCell<Hists>,
    ) {
        if last_seq <= self.measured_upto || last_seq > self.seq {
            return;
        }
        let skipped = last_seq - self.measured_upto - 1;
        self.measured_upto = last_seq;
        if self.seq - last_seq >= SENT_RING as u32 {
            return;
        }
        counters
            .inputs_coalesced
            .fetch_add(skipped as u64, Ordering::Relaxed);
        let sent = self.sent_at[last_seq as usize % SENT_RING];
        if sent < warm_end {
            return;
        }
        let raw = now
            .duration_since(sent)
            .as_micros()
            .min(LATENCY_MAX_US as u128) as u64;
        let net = raw.saturating_sub(hold_us as u64);
        let mut h = hists.borrow_mut();
        h.raw.record(raw.max(1)).expect("clamped");
        h.latency.record(net.max(1)).expect("clamped");
        h.window.record(net.max(1)).expect("clamped");
        bump(&counters.inputs_measured);
    }
}

/// CPU time of processes, for reporting the bots' cost beside the server's.
mod cpu {
    /// User + system CPU seconds of this process (`getrusage(RUSAGE_SELF)`).
    #[allow(unsafe_code)]
    pub fn own_seconds() -> f64 {
        // SAFETY: `rusage` is plain data for which all-zero bytes are valid, and
        // getrusage only writes into the struct we pass it.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }

    /// User + system CPU seconds of process `pid`, from `/proc/PID/stat`.
    #[allow(unsafe_code)]
    pub fn process_seconds(pid: u32) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
    }
}
