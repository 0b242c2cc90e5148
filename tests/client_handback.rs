//! Contract §4 and §9 for client sends: a message a client could not send is
//! never dropped, it comes back to the sender. `ask` (blocking and async)
//! hands it back in `ClientAskError` when the ring stays full or the engine
//! is shutting down; `tell_batch` hands back every unsent message, in batch
//! order, with its key.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use percore::{AskError, ClientAskError, Ctx, Engine, Entity, TellError};

use common::{recv, test_engine};

/// A message that counts its drops, so a test sees one dropped in the engine.
struct Note {
    seq: u64,
    drops: Arc<AtomicU64>,
}

impl Drop for Note {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

enum Msg {
    Note(Note),
    /// Block the shard until `release` yields, after saying so on `started`.
    Block {
        started: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    },
}

/// Records the notes it handles, in order.
#[derive(Default)]
struct Keeper {
    seen: Vec<u64>,
}

impl Entity for Keeper {
    const KIND: &'static str = "handback.keeper";
    type Msg = Msg;
    type Reply = Vec<u64>;

    fn activate(_key: u64) -> Self {
        Keeper::default()
    }

    fn handle(&mut self, msg: Msg, _ctx: &mut Ctx<'_, Self>) -> Vec<u64> {
        match msg {
            Msg::Note(n) => self.seen.push(n.seq),
            Msg::Block { started, release } => {
                let _ = started.send(());
                let _ = release.recv();
            }
        }
        self.seen.clone()
    }
}

/// A kind never registered.
struct Stranger;

impl Entity for Stranger {
    const KIND: &'static str = "handback.stranger";
    type Msg = Msg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Stranger
    }

    fn handle(&mut self, _msg: Msg, _ctx: &mut Ctx<'_, Self>) {}
}

fn note(seq: u64, drops: &Arc<AtomicU64>) -> Msg {
    Msg::Note(Note {
        seq,
        drops: drops.clone(),
    })
}

fn seq_of(msg: &Msg) -> u64 {
    match msg {
        Msg::Note(n) => n.seq,
        Msg::Block { .. } => panic!("a block message"),
    }
}

/// One shard with two-slot rings, blocked in a handler until the returned
/// sender is used or dropped; client sends wait 10 ms for room.
fn blocked_engine() -> (Engine, mpsc::Sender<()>) {
    let engine = test_engine(1)
        .ring_capacity(2)
        .send_wait(Duration::from_millis(10))
        .register::<Keeper>()
        .build()
        .unwrap();
    let (started, started_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let client = engine.client().unwrap();
    client
        .tell::<Keeper>(
            99,
            Msg::Block {
                started,
                release: release_rx,
            },
        )
        .unwrap();
    recv(&started_rx, "the blocking handler to start");
    (engine, release)
}

/// Fills the (blocked) shard's ring from `client`; returns how many it took.
fn fill(client: &percore::Client, drops: &Arc<AtomicU64>) -> u64 {
    let mut accepted = 0;
    loop {
        match client.try_tell::<Keeper>(1, note(accepted, drops)) {
            Ok(()) => accepted += 1,
            Err(TellError::Full(_)) => return accepted,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(accepted <= 2, "a 2-slot ring took {accepted} messages");
    }
}

/// Asks keeper 1, sending the handed-back message again while the ring is
/// full (sends wait only 10 ms, and the shard may be descheduled).
fn ask_until_sent(client: &percore::Client, mut msg: Msg) -> Vec<u64> {
    for _ in 0..10_000 {
        match client.ask::<Keeper>(1, msg) {
            Ok(seen) => return seen,
            Err(ClientAskError::Full(back)) => msg = back,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    panic!("the shard never drained its ring");
}

#[test]
fn ask_on_a_full_ring_hands_the_message_back() {
    let (engine, release) = blocked_engine();
    let client = engine.client().unwrap();
    let drops = Arc::new(AtomicU64::new(0));
    let accepted = fill(&client, &drops);
    let dropped_before = drops.load(Ordering::Relaxed);

    let err = client.ask::<Keeper>(1, note(100, &drops)).unwrap_err();
    assert_eq!(err.error(), AskError::Full);
    let back = err.into_message().expect("the unsent message comes back");
    assert_eq!(seq_of(&back), 100);

    let err = futures_lite::future::block_on(client.ask_async::<Keeper>(1, note(101, &drops)))
        .unwrap_err();
    assert!(matches!(&err, ClientAskError::Full(m) if seq_of(m) == 101));

    let err = client
        .ask_timeout::<Keeper>(1, note(102, &drops), Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(&err, ClientAskError::Full(m) if seq_of(m) == 102));
    // The three handed-back messages are still alive: nothing was dropped
    // beyond the rejected `try_tell` probe of `fill`.
    assert_eq!(drops.load(Ordering::Relaxed), dropped_before);
    drop((back, err));

    release.send(()).unwrap();
    let seen = ask_until_sent(&client, note(103, &drops));
    assert_eq!(seen, (0..accepted).chain([103]).collect::<Vec<_>>());
    drop(client);
    engine.shutdown().unwrap();
}

#[test]
fn ask_after_shutdown_began_hands_the_message_back() {
    let engine = test_engine(1).register::<Keeper>().build().unwrap();
    let client = engine.client().unwrap();
    let drops = Arc::new(AtomicU64::new(0));
    assert_eq!(client.ask::<Keeper>(1, note(0, &drops)).unwrap(), vec![0]);
    engine.shutdown().unwrap();

    let err = client.ask::<Keeper>(1, note(1, &drops)).unwrap_err();
    assert!(matches!(&err, ClientAskError::ShuttingDown(m) if seq_of(m) == 1));
    let err =
        futures_lite::future::block_on(client.ask_async::<Keeper>(1, note(2, &drops))).unwrap_err();
    assert!(matches!(&err, ClientAskError::ShuttingDown(m) if seq_of(m) == 2));
    let err = client.ask::<Stranger>(1, note(3, &drops)).unwrap_err();
    assert!(matches!(&err, ClientAskError::UnknownKind(m) if seq_of(m) == 3));
}

#[test]
fn tell_batch_on_a_full_ring_hands_back_the_unsent_rest_in_order() {
    let (engine, release) = blocked_engine();
    let client = engine.client().unwrap();
    let drops = Arc::new(AtomicU64::new(0));
    // 200 messages: more than one chunk (64), far more than the ring holds.
    let batch: Vec<(u64, Msg)> = (0..200).map(|i| (1, note(i, &drops))).collect();
    let err = client.tell_batch::<Keeper, _>(batch).unwrap_err();
    assert!(matches!(err.reason, TellError::Full(())));
    assert!(err.sent <= 2, "a 2-slot ring took {}", err.sent);
    let sent = err.sent as u64;
    let unsent = err.into_unsent();
    assert_eq!(
        unsent.iter().map(|(_, m)| seq_of(m)).collect::<Vec<_>>(),
        (sent..200).collect::<Vec<_>>(),
        "every unsent message comes back, in order"
    );
    assert!(unsent.iter().all(|(key, _)| *key == 1));
    assert_eq!(drops.load(Ordering::Relaxed), 0, "nothing was dropped");

    release.send(()).unwrap();
    // Sending the rest again completes the batch in order. The ring has two
    // slots and sends wait 10 ms: a descheduled shard may refuse some again,
    // handing them back again.
    let mut rest = unsent;
    let mut resent = 0;
    for _ in 0..10_000 {
        match client.tell_batch::<Keeper, _>(std::mem::take(&mut rest)) {
            Ok(n) => {
                resent += n;
                break;
            }
            Err(e) => {
                assert!(matches!(e.reason, TellError::Full(())));
                resent += e.sent;
                rest = e.into_unsent();
            }
        }
    }
    assert!(rest.is_empty(), "the shard never drained its ring");
    assert_eq!(resent, 200 - sent as usize);
    let seen = ask_until_sent(&client, note(200, &drops));
    assert_eq!(seen, (0..=200).collect::<Vec<_>>());
    drop(client);
    engine.shutdown().unwrap();
}

#[test]
fn tell_batch_after_shutdown_hands_back_the_whole_batch() {
    let engine = test_engine(1).register::<Keeper>().build().unwrap();
    let client = engine.client().unwrap();
    engine.shutdown().unwrap();
    let drops = Arc::new(AtomicU64::new(0));
    let err = client
        .tell_batch::<Keeper, _>((0..5).map(|i| (i, note(i, &drops))))
        .unwrap_err();
    assert!(matches!(err.reason, TellError::ShuttingDown(())));
    assert_eq!(err.sent, 0);
    let unsent = err.into_unsent();
    assert_eq!(
        unsent
            .iter()
            .map(|(k, m)| (*k, seq_of(m)))
            .collect::<Vec<_>>(),
        (0..5).map(|i| (i, i)).collect::<Vec<_>>()
    );
    assert_eq!(drops.load(Ordering::Relaxed), 0);
}
