//! Shutdown on the real engine: with clients sending while
//! `Engine::shutdown` runs on another thread, every message is either refused
//! (`TellError::ShuttingDown`, message handed back) or handled exactly once,
//! in order — including what handlers send while the engine drains; the
//! shard threads are joined (their entities are dropped before `shutdown`
//! returns) and nothing hangs. Afterwards clients are refused, and dropping
//! an engine without calling `shutdown` does the same work.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use percore::{AskError, ClientAskError, Ctx, Entity, TellError};

use common::{guarded, recv, test_engine};

/// Where entities record what they handled, shared with the test. Entities
/// keep an `Arc` of it and count their own drops, so the test can tell
/// that the shards let go of them.
#[derive(Default)]
struct Log {
    /// `(stage, sender, front key)` → sequence numbers in the order handled.
    /// Order is only promised per (sender, entity), so it is kept per key.
    handled: Mutex<HashMap<(u8, u64, u64), Vec<u64>>>,
    drops: AtomicU64,
}

impl Log {
    fn record(&self, stage: u8, sender: u64, key: u64, seq: u64) {
        let mut handled = self.handled.lock().unwrap();
        handled.entry((stage, sender, key)).or_default().push(seq);
    }

    /// What entities of `stage` handled from `sender`, by front key.
    fn of(&self, stage: u8, sender: u64) -> HashMap<u64, Vec<u64>> {
        let handled = self.handled.lock().unwrap();
        handled
            .iter()
            .filter(|((st, se, _), _)| (*st, *se) == (stage, sender))
            .map(|((_, _, key), seqs)| (*key, seqs.clone()))
            .collect()
    }

    fn total(&self) -> u64 {
        let handled = self.handled.lock().unwrap();
        handled.values().map(|v| v.len() as u64).sum()
    }
}

/// An entity's hold on the log; counts the entity's drop.
#[derive(Default)]
struct Holder(Option<Arc<Log>>);

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(log) = &self.0 {
            log.drops.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct Hit {
    sender: u64,
    seq: u64,
    log: Arc<Log>,
}

/// Records each hit and forwards it to a `Back` entity (likely on another
/// shard), so handler sends are in flight during the drain too.
#[derive(Default)]
struct Front(Holder);

/// Records each hit forwarded to it.
#[derive(Default)]
struct Back(Holder);

/// Keys of `Back` are `Front` keys plus this.
const BACK_OFFSET: u64 = 1_000;

impl Entity for Front {
    const KIND: &'static str = "shutdown.front";
    type Msg = Hit;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Front::default()
    }

    fn handle(&mut self, hit: Hit, ctx: &mut Ctx<'_, Self>) -> u64 {
        hit.log.record(0, hit.sender, ctx.key(), hit.seq);
        self.0 .0.get_or_insert_with(|| hit.log.clone());
        let seq = hit.seq;
        ctx.tell::<Back>(ctx.key() + BACK_OFFSET, hit)
            .expect("room to forward");
        seq
    }
}

impl Entity for Back {
    const KIND: &'static str = "shutdown.back";
    type Msg = Hit;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Back::default()
    }

    fn handle(&mut self, hit: Hit, ctx: &mut Ctx<'_, Self>) {
        hit.log
            .record(1, hit.sender, ctx.key() - BACK_OFFSET, hit.seq);
        self.0 .0.get_or_insert(hit.log);
    }
}

const KEYS: u64 = 8;

/// Sequence numbers `0..n` sent round-robin to keys `0..KEYS`, by key: what
/// each entity must have handled, in this order.
fn by_key(seqs: impl IntoIterator<Item = u64>) -> HashMap<u64, Vec<u64>> {
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for seq in seqs {
        by_key.entry(seq % KEYS).or_default().push(seq);
    }
    by_key
}

/// Checks `handled` against `expected` key by key, reporting the first
/// difference briefly.
fn assert_handled(what: &str, handled: &HashMap<u64, Vec<u64>>, expected: &HashMap<u64, Vec<u64>>) {
    for key in 0..KEYS {
        let (h, e) = (handled.get(&key), expected.get(&key));
        let (h, e) = (h.map_or(&[][..], |v| &v[..]), e.map_or(&[][..], |v| &v[..]));
        if h != e {
            let at = h
                .iter()
                .zip(e)
                .position(|(a, b)| a != b)
                .unwrap_or(h.len().min(e.len()));
            panic!(
                "{what}, key {key}: handled {} messages, expected {}; first difference at \
                 position {at}: handled {:?}, expected {:?}",
                h.len(),
                e.len(),
                h.get(at),
                e.get(at)
            );
        }
    }
}
/// Messages a sender sends once it has seen the engine run, before the
/// shutdown starts.
const WARM_UP: u64 = 500;
/// A bound on each sender's loop, far beyond what it sends before the
/// shutdown refuses it.
const MAX_PER_SENDER: u64 = 10_000_000;

/// What one sender thread saw.
struct Sent {
    sender: u64,
    /// Sequence numbers the engine accepted (tells) or answered (asks).
    accepted: Vec<u64>,
    /// The sequence number refused with `ShuttingDown`, if one was.
    refused: Option<u64>,
}

#[test]
fn shutdown_with_messages_in_flight_handles_each_accepted_message_exactly_once() {
    let engine = test_engine(2)
        .ring_capacity(16)
        .register::<Front>()
        .register::<Back>()
        .build()
        .unwrap();
    let log = Arc::new(Log::default());
    let (warm, warmed) = mpsc::channel();
    let mut senders = Vec::new();

    // Three telling threads and one asking thread.
    for sender in 0..4u64 {
        let client = engine.client().unwrap();
        let log = log.clone();
        let warm = warm.clone();
        senders.push(std::thread::spawn(move || {
            let mut sent = Sent {
                sender,
                accepted: Vec::new(),
                refused: None,
            };
            for seq in 0..MAX_PER_SENDER {
                if seq == WARM_UP {
                    warm.send(()).unwrap();
                }
                let key = seq % KEYS;
                let hit = Hit {
                    sender,
                    seq,
                    log: log.clone(),
                };
                if sender == 3 {
                    match client.ask::<Front>(key, hit) {
                        Ok(echo) => {
                            assert_eq!(echo, seq, "an ask got another's reply");
                            sent.accepted.push(seq);
                        }
                        Err(ClientAskError::ShuttingDown(back)) => {
                            assert_eq!(back.seq, seq, "the refused ask's message comes back");
                            sent.refused = Some(seq);
                            break;
                        }
                        Err(e) => panic!("unexpected ask error {e:?}"),
                    }
                } else {
                    match client.tell::<Front>(key, hit) {
                        Ok(()) => sent.accepted.push(seq),
                        Err(TellError::ShuttingDown(back)) => {
                            assert_eq!(back.seq, seq, "the refused message is handed back");
                            sent.refused = Some(seq);
                            break;
                        }
                        Err(e) => panic!("unexpected tell error {e:?}"),
                    }
                }
            }
            // Once refused, always refused.
            let hit = Hit {
                sender,
                seq: u64::MAX,
                log: log.clone(),
            };
            assert!(matches!(
                client.tell::<Front>(0, hit),
                Err(TellError::ShuttingDown(_))
            ));
            let hit = Hit {
                sender,
                seq: u64::MAX,
                log: log.clone(),
            };
            assert_eq!(
                client.ask::<Front>(0, hit).map_err(AskError::from),
                Err(AskError::ShuttingDown)
            );
            sent
        }));
    }
    drop(warm);
    for _ in 0..senders.len() {
        recv(&warmed, "a sender to warm up");
    }

    // Shut down while all four are still sending.
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(engine.shutdown());
    });
    let metrics = recv(&finished, "shutdown to finish").expect("clean shutdown");
    let sent: Vec<Sent> = senders
        .into_iter()
        .map(|t| t.join().expect("sender thread"))
        .collect();

    for s in &sent {
        assert!(
            s.refused.is_some(),
            "sender {} finished before the shutdown",
            s.sender
        );
        assert!(s.accepted.len() as u64 >= WARM_UP);
        let front = log.of(0, s.sender);
        let back = log.of(1, s.sender);
        let mut expected = by_key(s.accepted.iter().copied());
        if s.sender == 3 {
            // An ask refused with `ShuttingDown` may have been handled (its
            // reply lost to the stop); nothing else may be.
            let refused = s.refused.unwrap();
            let key = refused % KEYS;
            if front.get(&key).and_then(|v| v.last()) == Some(&refused) {
                expected.entry(key).or_default().push(refused);
            }
        }
        let who = format!("sender {}", s.sender);
        assert_handled(&format!("{who}, accepted = handled"), &front, &expected);
        assert_handled(&format!("{who}, forwards drained"), &back, &expected);
    }

    let total = metrics.total();
    assert_eq!(total.handled, log.total(), "metrics agree with the log");
    // The shard threads are gone: every entity they held has been dropped.
    assert_eq!(log.drops.load(Ordering::SeqCst), total.activations);
    assert_eq!(total.activations, 2 * KEYS);
}

#[test]
fn client_of_a_shut_down_engine_is_refused_and_gets_its_message_back() {
    let engine = test_engine(2)
        .register::<Front>()
        .register::<Back>()
        .build()
        .unwrap();
    let client = engine.client().unwrap();
    let log = Arc::new(Log::default());
    let hit = |seq| Hit {
        sender: 0,
        seq,
        log: log.clone(),
    };
    client.tell::<Front>(0, hit(0)).unwrap();
    engine.shutdown().unwrap();
    let first = by_key([0]);
    assert_handled("queued before the shutdown", &log.of(0, 0), &first);
    assert!(matches!(
        client.tell::<Front>(1, hit(1)),
        Err(TellError::ShuttingDown(Hit { seq: 1, .. }))
    ));
    assert!(matches!(
        client.try_tell::<Front>(1, hit(2)),
        Err(TellError::ShuttingDown(Hit { seq: 2, .. }))
    ));
    let batch = client
        .tell_batch::<Front, _>([(1, hit(3)), (2, hit(4))])
        .unwrap_err();
    assert_eq!(
        (batch.sent, &batch.reason),
        (0, &TellError::ShuttingDown(()))
    );
    assert!(matches!(
        batch.unsent.as_slice(),
        [(1, Hit { seq: 3, .. }), (2, Hit { seq: 4, .. })]
    ));
    assert!(matches!(
        client.ask::<Front>(1, hit(5)),
        Err(ClientAskError::ShuttingDown(Hit { seq: 5, .. }))
    ));
    let future = client.ask_async::<Front>(1, hit(6));
    assert!(matches!(
        futures_lite::future::block_on(future),
        Err(ClientAskError::ShuttingDown(Hit { seq: 6, .. }))
    ));
    assert_handled("after the shutdown", &log.of(0, 0), &first);
}

#[test]
fn dropping_the_engine_handles_what_was_sent_and_stops_its_shards() {
    let log = Arc::new(Log::default());
    let client = guarded("dropping the engine", {
        let log = log.clone();
        move || {
            let engine = test_engine(2)
                .ring_capacity(4)
                .register::<Front>()
                .register::<Back>()
                .build()
                .unwrap();
            let client = engine.client().unwrap();
            for seq in 0..1_000 {
                let hit = Hit {
                    sender: 0,
                    seq,
                    log: log.clone(),
                };
                client.tell::<Front>(seq % KEYS, hit).unwrap();
            }
            drop(engine);
            client
        }
    });
    let all = by_key(0..1_000);
    assert_handled("sent before the drop", &log.of(0, 0), &all);
    assert_handled("sent by handlers before the drop", &log.of(1, 0), &all);
    assert_eq!(
        log.drops.load(Ordering::SeqCst),
        2 * KEYS,
        "the shards dropped their entities: their threads ended"
    );
    let hit = Hit {
        sender: 0,
        seq: 1_000,
        log: log.clone(),
    };
    assert!(matches!(
        client.tell::<Front>(0, hit),
        Err(TellError::ShuttingDown(_))
    ));
}

#[test]
fn shutdown_of_an_idle_engine_joins_its_threads() {
    let log = Arc::new(Log::default());
    let engine = test_engine(4)
        .register::<Front>()
        .register::<Back>()
        .build()
        .unwrap();
    let client = engine.client().unwrap();
    for key in 0..KEYS {
        let hit = Hit {
            sender: 0,
            seq: key,
            log: log.clone(),
        };
        assert_eq!(
            client.ask::<Front>(key, hit).map_err(AskError::from),
            Ok(key)
        );
    }
    let metrics = guarded("shutdown", move || engine.shutdown()).unwrap();
    assert_eq!(metrics.shards.len(), 4);
    assert_eq!(metrics.total().handled, 2 * KEYS);
    assert_eq!(log.drops.load(Ordering::SeqCst), 2 * KEYS);
}
