//! `arena-tokio`: the arena server as a tokio programmer writes it (the peer that
//! percore's arena server must beat).
//!
//! ```text
//! arena-tokio --listen 127.0.0.1:7000 --data DIR [--design tasks|rooms_rt]
//!             [--tick-hz 20] [--workers N] [--room-threads 2]
//! ```
//! Prints `gold_total N` after recovering DIR, then `listening ADDR`; SIGINT stops it.

use std::net::SocketAddr;
use std::path::PathBuf;

use percore_arena::cli::Args;
use percore_arena::tokio_peer::{self, Config, Design};

fn main() {
    if let Err(e) = run() {
        eprintln!("arena-tokio: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = Args::parse(std::env::args().skip(1))?;
    let listen: SocketAddr = args.get("listen", "127.0.0.1:7000".parse().expect("valid"))?;
    let data: PathBuf = args
        .opt("data")?
        .ok_or("--data DIR is required (the durable ledger lives there)")?;
    let mut config = Config::new(listen, data);
    config.design = args.get::<Design>("design", config.design)?;
    config.tick_hz = args.get("tick-hz", config.tick_hz)?;
    config.workers = args.get("workers", config.workers)?;
    config.room_threads = args.get("room-threads", config.room_threads)?;
    args.finish()?;
    if !(1..=1000).contains(&config.tick_hz) {
        return Err(format!("--tick-hz {}: expected 1..=1000", config.tick_hz));
    }
    tokio_peer::run(config).map_err(|e| e.to_string())
}
