//! `arena-bots`: the bot swarm. Plays the arena against `--server` and prints a
//! result block of `METRIC VALUE` lines on stdout (progress goes to stderr).
//!
//! ```text
//! arena-bots --server 127.0.0.1:7000 [--players 40] [--room-size 50]
//!            [--duration 10] [--warmup 1] [--input-hz 20] [--chat-every 200]
//!            [--trade-every 100] [--threads 1] [--first-player 1]
//!            [--plaza-at SECS] [--plaza-pct 50] [--trade-nonce N] [--drain 3]
//!            [--acked-trades FILE] [--server-pid PID] [--quiet]
//! ```
//! Durations are in seconds (fractions allowed).

use std::net::SocketAddr;
use std::time::Duration;

use percore_arena::bots::{self, Config};
use percore_arena::cli::Args;

fn main() {
    if let Err(e) = run() {
        eprintln!("arena-bots: {e}");
        std::process::exit(2);
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

fn run() -> Result<(), String> {
    let mut args = Args::parse(std::env::args().skip(1))?;
    let server: SocketAddr = args.opt("server")?.ok_or("--server ADDR is required")?;
    let mut c = Config::new(server);
    c.players = args.get("players", c.players)?;
    c.room_size = args.get("room-size", c.room_size)?;
    c.duration = secs(args.get("duration", c.duration.as_secs_f64())?);
    c.warmup = secs(args.get("warmup", c.warmup.as_secs_f64())?);
    c.input_hz = args.get("input-hz", c.input_hz)?;
    c.chat_every = args.get("chat-every", c.chat_every)?;
    c.trade_every = args.get("trade-every", c.trade_every)?;
    c.threads = args.get("threads", c.threads)?;
    c.first_player = args.get("first-player", c.first_player)?;
    c.plaza_at = args.opt::<f64>("plaza-at")?.map(secs);
    c.plaza_pct = args.get("plaza-pct", c.plaza_pct)?;
    c.trade_nonce = args.get("trade-nonce", c.trade_nonce)?;
    c.drain = secs(args.get("drain", c.drain.as_secs_f64())?);
    c.acked_trades = args.opt("acked-trades")?;
    c.server_pid = args.opt("server-pid")?;
    c.progress = !args.get("quiet", false)?;
    args.finish()?;
    if c.players == 0 || c.room_size == 0 || c.input_hz == 0 || c.input_hz > 1000 {
        return Err("--players, --room-size must be > 0 and --input-hz in 1..=1000".into());
    }
    let report = bots::run(c).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    report.write_metrics(&mut out).map_err(|e| e.to_string())
}
