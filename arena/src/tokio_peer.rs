//! The tokio peer: the arena server as a Rust game programmer writes it without
//! percore, in the two common designs.
//!
//! - A multi-thread tokio runtime; a task per connection (a reader task and a writer
//!   task fed by a bounded channel, so a room never waits on a socket).
//! - Rooms as tasks owning their members, fed by a bounded `mpsc` channel, ticking
//!   on a `tokio::time::interval`: [`Design::Tasks`] spawns them on the main
//!   runtime; [`Design::RoomsRt`] on a runtime of their own (2 threads by default),
//!   the usual fix when rooms compete with sockets.
//! - Durable gold in a [`Ledger`] owned by one thread that applies requests in
//!   batches and syncs once per batch before answering (group commit), the way a
//!   typical project puts an embedded store behind a channel.
//!
//! A broadcast is encoded once per tick and shared (`Arc<[u8]>`) by every member's
//! writer; a member whose channel is full misses that broadcast (the next one
//! supersedes it), counted as `dropped_broadcasts`. Trade acknowledgements and
//! welcomes are never dropped: they wait for room in the channel.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::ledger::{Balance, Ledger};
use crate::proto::{
    self, ClientMsg, DecodeError, Entry, ErrorCode, ServerMsg, TradeStatus, LEN_PREFIX_BYTES,
    MAX_FRAME_BYTES, MAX_ROOM_PLAYERS, WORLD_SIZE,
};

/// Frames queued for one connection's writer before broadcasts are dropped for it.
pub const OUTBOUND_FRAMES: usize = 256;
/// Commands queued for one room before senders wait.
pub const ROOM_QUEUE: usize = 4096;
/// Ledger requests queued before connections wait.
pub const LEDGER_QUEUE: usize = 8192;
/// Most ledger requests applied under one sync.
pub const LEDGER_BATCH_MAX: usize = 1024;
/// Frames one writer gathers into one `write` call.
pub const WRITE_BATCH_FRAMES: usize = 64;

/// Where the rooms run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    /// Rooms as tasks on the main runtime, beside the connections.
    Tasks,
    /// Rooms on a runtime of their own.
    RoomsRt,
}

impl std::str::FromStr for Design {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tasks" => Ok(Self::Tasks),
            "rooms_rt" => Ok(Self::RoomsRt),
            other => Err(format!(
                "unknown design {other:?}: expected tasks or rooms_rt"
            )),
        }
    }
}

/// The server's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (port 0 picks one; the chosen one is printed).
    pub listen: SocketAddr,
    /// Directory of the durable ledger.
    pub data: PathBuf,
    /// Where rooms run.
    pub design: Design,
    /// Room broadcasts per second; default 20, range 1..=1000.
    pub tick_hz: u16,
    /// Worker threads of the main runtime; default: the number of CPUs.
    pub workers: usize,
    /// Worker threads of the rooms' runtime ([`Design::RoomsRt`]); default 2.
    pub room_threads: usize,
}

impl Config {
    /// Defaults for everything but the address and data directory.
    pub fn new(listen: SocketAddr, data: PathBuf) -> Self {
        Config {
            listen,
            data,
            design: Design::Tasks,
            tick_hz: 20,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            room_threads: 2,
        }
    }
}

type Frame = Arc<[u8]>;
type Outbound = mpsc::Sender<Frame>;

enum RoomCmd {
    Join {
        player: u32,
        out: Outbound,
        reply: oneshot::Sender<bool>,
    },
    Leave {
        player: u32,
    },
    Input {
        player: u32,
        seq: u32,
        dx: i8,
        dy: i8,
    },
    Chat {
        frame: Frame,
    },
}

enum LedgerReq {
    Open {
        player: u32,
        reply: oneshot::Sender<Balance>,
    },
    Trade {
        trade_id: u64,
        from: u32,
        to: u32,
        gold: u32,
        items: u32,
        reply: oneshot::Sender<(TradeStatus, Balance)>,
    },
    Flush {
        reply: oneshot::Sender<u64>,
    },
}

struct Shared {
    rooms: Mutex<HashMap<u32, mpsc::Sender<RoomCmd>>>,
    online: Mutex<HashSet<u32>>,
    rooms_rt: tokio::runtime::Handle,
    ledger: mpsc::Sender<LedgerReq>,
    tick_hz: u16,
    dropped_broadcasts: AtomicU64,
    protocol_errors: AtomicU64,
}

impl Shared {
    fn room(self: &Arc<Self>, room: u32) -> mpsc::Sender<RoomCmd> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        rooms
            .entry(room)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(ROOM_QUEUE);
                self.rooms_rt.spawn(run_room(room, rx, self.clone()));
                tx
            })
            .clone()
    }
}

/// Runs the server until SIGINT: recovers the ledger (printing `gold_total N`),
/// binds, prints `listening ADDR`, serves.
///
/// # Errors
/// The ledger cannot be opened or recovered, or the address cannot be bound.
pub fn run(config: Config) -> io::Result<()> {
    let (ledger, recovered) = Ledger::open(&config.data)?;
    println!("gold_total {}", ledger.gold_total());
    println!("accounts {}", ledger.accounts());
    println!("trades {}", ledger.trades());
    if recovered.truncated_bytes > 0 {
        println!("ledger_truncated_bytes {}", recovered.truncated_bytes);
    }
    let (ledger_tx, ledger_rx) = mpsc::channel(LEDGER_QUEUE);
    std::thread::Builder::new()
        .name("ledger".into())
        .spawn(move || run_ledger(ledger, ledger_rx))?;

    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.max(1))
        .thread_name("arena-net")
        .enable_all()
        .build()?;
    let rooms_rt = match config.design {
        Design::Tasks => None,
        Design::RoomsRt => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.room_threads.max(1))
                .thread_name("arena-rooms")
                .enable_all()
                .build()?,
        ),
    };
    let rooms_handle = rooms_rt
        .as_ref()
        .map_or_else(|| main_rt.handle().clone(), |rt| rt.handle().clone());
    let shared = Arc::new(Shared {
        rooms: Mutex::new(HashMap::new()),
        online: Mutex::new(HashSet::new()),
        rooms_rt: rooms_handle,
        ledger: ledger_tx,
        tick_hz: config.tick_hz.clamp(1, 1000),
        dropped_broadcasts: AtomicU64::new(0),
        protocol_errors: AtomicU64::new(0),
    });
    main_rt.block_on(async move {
        // Registered before `listening` is printed, so a SIGINT right after it is
        // a clean stop, not the default disposition's kill.
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let listener = TcpListener::bind(config.listen).await?;
        println!("listening {}", listener.local_addr()?);
        use std::io::Write as _;
        std::io::stdout().flush()?;
        let accept = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(stream, shared.clone()));
                    }
                    // Out of descriptors and the like: keep serving the others.
                    Err(e) => {
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = sigint.recv() => {}
            () = accept => {}
        }
        // Everything acknowledged is durable already; flush what is queued so the
        // closing total is the one the next start recovers.
        let (reply, total) = oneshot::channel();
        if shared.ledger.send(LedgerReq::Flush { reply }).await.is_ok() {
            if let Ok(total) = total.await {
                println!("shutdown gold_total {total}");
            }
        }
        println!(
            "dropped_broadcasts {}",
            shared.dropped_broadcasts.load(Ordering::Relaxed)
        );
        println!(
            "protocol_errors {}",
            shared.protocol_errors.load(Ordering::Relaxed)
        );
        io::Result::Ok(())
    })?;
    // Connections and rooms are dropped with their runtimes, without waiting.
    main_rt.shutdown_background();
    if let Some(rt) = rooms_rt {
        rt.shutdown_background();
    }
    Ok(())
}

/// The ledger thread: group commit. Apply every queued request, sync once, answer.
fn run_ledger(mut ledger: Ledger, mut rx: mpsc::Receiver<LedgerReq>) {
    let mut batch = Vec::with_capacity(LEDGER_BATCH_MAX);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < LEDGER_BATCH_MAX {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let mut answers = Vec::with_capacity(batch.len());
        for req in batch.drain(..) {
            match req {
                LedgerReq::Open { player, reply } => {
                    let b = ledger.open_account(player);
                    answers.push(Answer::Open(reply, b));
                }
                LedgerReq::Trade {
                    trade_id,
                    from,
                    to,
                    gold,
                    items,
                    reply,
                } => {
                    let r = ledger.trade(trade_id, from, to, gold, items);
                    answers.push(Answer::Trade(reply, r));
                }
                LedgerReq::Flush { reply } => answers.push(Answer::Flush(reply)),
            }
        }
        if let Err(e) = ledger.commit() {
            // Memory is now ahead of the disk: answer nothing, serve nothing.
            eprintln!("ledger: commit failed, stopping without acknowledging: {e}");
            std::process::exit(1);
        }
        for a in answers {
            match a {
                Answer::Open(reply, b) => drop(reply.send(b)),
                Answer::Trade(reply, r) => drop(reply.send(r)),
                Answer::Flush(reply) => drop(reply.send(ledger.gold_total())),
            }
        }
    }
}

enum Answer {
    Open(oneshot::Sender<Balance>, Balance),
    Trade(
        oneshot::Sender<(TradeStatus, Balance)>,
        (TradeStatus, Balance),
    ),
    Flush(oneshot::Sender<u64>),
}

struct Member {
    player: u32,
    x: u16,
    y: u16,
    last_seq: u32,
    applied_at: Instant,
    out: Outbound,
}

async fn run_room(room: u32, mut rx: mpsc::Receiver<RoomCmd>, shared: Arc<Shared>) {
    let mut members: Vec<Member> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut ticker =
        tokio::time::interval(Duration::from_micros(1_000_000 / shared.tick_hz as u64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick: u32 = 0;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    RoomCmd::Join { player, out, reply } => {
                        // A rejoin of the same room keeps the member (and one entry).
                        if let Some(&i) = index.get(&player) {
                            members[i].out = out;
                            let _ = reply.send(true);
                            continue;
                        }
                        if members.len() >= MAX_ROOM_PLAYERS {
                            let _ = reply.send(false);
                            continue;
                        }
                        let seed = player.wrapping_mul(2_654_435_761);
                        index.insert(player, members.len());
                        members.push(Member {
                            player,
                            x: (seed % WORLD_SIZE as u32) as u16,
                            y: ((seed >> 16) % WORLD_SIZE as u32) as u16,
                            last_seq: 0,
                            applied_at: Instant::now(),
                            out,
                        });
                        let _ = reply.send(true);
                    }
                    RoomCmd::Leave { player } => {
                        if let Some(i) = index.remove(&player) {
                            members.swap_remove(i);
                            if let Some(moved) = members.get(i) {
                                index.insert(moved.player, i);
                            }
                        }
                    }
                    RoomCmd::Input { player, seq, dx, dy } => {
                        if let Some(&i) = index.get(&player) {
                            let m = &mut members[i];
                            m.x = (m.x as i32 + dx as i32).clamp(0, WORLD_SIZE as i32 - 1) as u16;
                            m.y = (m.y as i32 + dy as i32).clamp(0, WORLD_SIZE as i32 - 1) as u16;
                            m.last_seq = seq;
                            m.applied_at = Instant::now();
                        }
                    }
                    RoomCmd::Chat { frame } => {
                        for m in &members {
                            if m.out.try_send(frame.clone()).is_err() {
                                shared.dropped_broadcasts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            _ = ticker.tick() => {
                if members.is_empty() {
                    continue;
                }
                tick = tick.wrapping_add(1);
                let now = Instant::now();
                entries.clear();
                entries.extend(members.iter().map(|m| Entry {
                    player: m.player,
                    x: m.x,
                    y: m.y,
                    last_seq: m.last_seq,
                    hold_us: now.saturating_duration_since(m.applied_at).as_micros().min(u32::MAX as u128) as u32,
                }));
                buf.clear();
                proto::framed(&mut buf, |out| proto::encode_state(room, tick, &entries, out));
                let frame: Frame = Arc::from(buf.as_slice());
                for m in &members {
                    // Full: this member misses one broadcast; the next supersedes it.
                    if m.out.try_send(frame.clone()).is_err() {
                        shared.dropped_broadcasts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn frame_of(msg: ServerMsg<'_>) -> Frame {
    let mut buf = Vec::with_capacity(32);
    msg.encode_frame(&mut buf);
    Arc::from(buf)
}

/// One connection's protocol state, shared by both transports.
struct Session {
    shared: Arc<Shared>,
    out: Outbound,
    player: Option<u32>,
    room: Option<(u32, mpsc::Sender<RoomCmd>)>,
}

/// What a session wants after a message.
enum Next {
    Continue,
    Close,
}

impl Session {
    async fn send(&self, msg: ServerMsg<'_>) {
        let _ = self.out.send(frame_of(msg)).await;
    }

    async fn reject(&self, err: DecodeError) -> Next {
        self.shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
        let code = match err {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::Malformed,
        };
        self.send(ServerMsg::Error { code }).await;
        Next::Close
    }

    async fn handle(&mut self, body: &[u8]) -> Next {
        let msg = match ClientMsg::decode(body) {
            Ok(m) => m,
            Err(e) => return self.reject(e).await,
        };
        match msg {
            ClientMsg::Join { player, room } => self.join(player, room).await,
            _ if self.player.is_none() => {
                self.send(ServerMsg::Error {
                    code: ErrorCode::NotJoined,
                })
                .await;
                Next::Continue
            }
            ClientMsg::Input { seq, dx, dy } => {
                if let (Some((_, tx)), Some(player)) = (&self.room, self.player) {
                    let _ = tx
                        .send(RoomCmd::Input {
                            player,
                            seq,
                            dx,
                            dy,
                        })
                        .await;
                }
                Next::Continue
            }
            ClientMsg::Chat { text } => {
                if let (Some((_, tx)), Some(from)) = (&self.room, self.player) {
                    let frame = frame_of(ServerMsg::Chat { from, text });
                    let _ = tx.send(RoomCmd::Chat { frame }).await;
                }
                Next::Continue
            }
            ClientMsg::Trade {
                trade_id,
                to,
                gold,
                items,
            } => {
                let from = self.player.expect("joined");
                let (reply, answer) = oneshot::channel();
                let req = LedgerReq::Trade {
                    trade_id,
                    from,
                    to,
                    gold,
                    items,
                    reply,
                };
                if self.shared.ledger.send(req).await.is_err() {
                    return Next::Close;
                }
                // The answer comes after a sync; keep reading inputs meanwhile.
                let out = self.out.clone();
                tokio::spawn(async move {
                    if let Ok((status, b)) = answer.await {
                        let ack = ServerMsg::TradeAck {
                            trade_id,
                            status,
                            gold: b.gold,
                            items: b.items,
                        };
                        let _ = out.send(frame_of(ack)).await;
                    }
                });
                Next::Continue
            }
        }
    }

    async fn join(&mut self, player: u32, room: u32) -> Next {
        match self.player {
            Some(p) if p != player => {
                self.send(ServerMsg::Error {
                    code: ErrorCode::PlayerBusy,
                })
                .await;
                return Next::Continue;
            }
            Some(_) => {}
            None => {
                if !self
                    .shared
                    .online
                    .lock()
                    .expect("online lock")
                    .insert(player)
                {
                    self.send(ServerMsg::Error {
                        code: ErrorCode::PlayerBusy,
                    })
                    .await;
                    return Next::Continue;
                }
                self.player = Some(player);
            }
        }
        let (reply, balance) = oneshot::channel();
        if self
            .shared
            .ledger
            .send(LedgerReq::Open { player, reply })
            .await
            .is_err()
        {
            return Next::Close;
        }
        let Ok(balance) = balance.await else {
            return Next::Close;
        };
        let tx = self.shared.room(room);
        let (reply, accepted) = oneshot::channel();
        let _ = tx
            .send(RoomCmd::Join {
                player,
                out: self.out.clone(),
                reply,
            })
            .await;
        if accepted.await != Ok(true) {
            self.send(ServerMsg::Error {
                code: ErrorCode::RoomFull,
            })
            .await;
            return Next::Continue;
        }
        if let Some((old_room, old)) = self.room.replace((room, tx)) {
            if old_room != room {
                let _ = old.send(RoomCmd::Leave { player }).await;
            }
        }
        let welcome = ServerMsg::Welcome {
            player,
            room,
            gold: balance.gold,
            items: balance.items,
            tick_hz: self.shared.tick_hz,
        };
        self.send(welcome).await;
        Next::Continue
    }

    async fn close(self) {
        if let Some(player) = self.player {
            if let Some((_, tx)) = &self.room {
                let _ = tx.send(RoomCmd::Leave { player }).await;
            }
            self.shared
                .online
                .lock()
                .expect("online lock")
                .remove(&player);
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // A raw client's first frame is a Join, whose length prefix starts with 9; a
    // browser's starts "GET". Anything else is served as raw TCP and fails framing.
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return,
    }
    let (out, rx) = mpsc::channel(OUTBOUND_FRAMES);
    let session = Session {
        shared,
        out,
        player: None,
        room: None,
    };
    if first[0] == b'G' {
        serve_websocket(stream, session, rx).await;
    } else {
        serve_tcp(stream, session, rx).await;
    }
}

async fn serve_tcp(stream: TcpStream, mut session: Session, rx: mpsc::Receiver<Frame>) {
    let (mut reader, writer) = stream.into_split();
    let writer_task = tokio::spawn(write_tcp(writer, rx));
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    'read: loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut at = 0;
        loop {
            match proto::split_frame(&buf[at..]) {
                Ok(Some((body, used))) => {
                    at += used;
                    if let Next::Close = session.handle(body).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    session.reject(e).await;
                    break 'read;
                }
            }
        }
        buf.drain(..at);
        if buf.capacity() > 2 * (LEN_PREFIX_BYTES + MAX_FRAME_BYTES) {
            buf.shrink_to(LEN_PREFIX_BYTES + MAX_FRAME_BYTES);
        }
    }
    session.close().await;
    // The writer ends once every sender (ours, the room's) is gone and it has
    // written what was queued; an abrupt peer ends it sooner.
    let _ = writer_task.await;
}

async fn write_tcp(mut writer: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>) {
    let mut frames = Vec::with_capacity(WRITE_BATCH_FRAMES);
    let mut buf = Vec::with_capacity(16 * 1024);
    while rx.recv_many(&mut frames, WRITE_BATCH_FRAMES).await > 0 {
        buf.clear();
        for f in frames.drain(..) {
            buf.extend_from_slice(&f);
        }
        if writer.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn serve_websocket(stream: TcpStream, mut session: Session, mut rx: mpsc::Receiver<Frame>) {
    // Refuse oversize messages inside tungstenite, before it buffers them.
    let limits = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(limits)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let writer_task = tokio::spawn(async move {
        let mut frames = Vec::with_capacity(WRITE_BATCH_FRAMES);
        while rx.recv_many(&mut frames, WRITE_BATCH_FRAMES).await > 0 {
            for f in frames.drain(..) {
                // A WebSocket message is the body: drop the TCP length prefix.
                if sink
                    .feed(Message::binary(f[LEN_PREFIX_BYTES..].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(msg) = source.next().await {
        let next = match msg {
            Ok(Message::Binary(body)) => session.handle(&body).await,
            Ok(Message::Ping(_) | Message::Pong(_)) => Next::Continue,
            Ok(Message::Text(_)) => session.reject(DecodeError::UnknownTag(0)).await,
            Ok(Message::Close(_) | Message::Frame(_)) | Err(_) => Next::Close,
        };
        if let Next::Close = next {
            break;
        }
    }
    session.close().await;
    let _ = writer_task.await;
}
