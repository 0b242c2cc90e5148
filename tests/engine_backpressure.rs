//! Backpressure on the real engine (contract §4): with two-slot rings, bursts
//! of 100 000 messages from a client (whose `tell` waits for room) and from a
//! handler (whose sends wait in the shard's overflow queue) all arrive, once
//! each, in order. When there is no room, the sender is told and gets its
//! message back: `try_tell` and a bounded `tell` give `TellError::Full`, a
//! handler past `overflow_cap` gets `SendError::Overflow`.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use percore::{AskError, Ctx, Engine, Entity, SendError, TellError};

use common::{guarded, keys_on_shard, recv, test_engine};

const BURST: u64 = 100_000;

/// What a sink saw from one sender.
#[derive(Clone, Debug, Default, PartialEq)]
struct SenderReport {
    received: u64,
    out_of_order: u64,
    first_problem: Option<String>,
}

/// Checks that each sender's numbers arrive exactly as 0, 1, 2, …
#[derive(Default)]
struct Sink {
    senders: HashMap<u64, SenderReport>,
}

enum SinkMsg {
    /// Number `seq` from `sender`; when `last` is set, report on it.
    Seq {
        sender: u64,
        seq: u64,
        last: Option<mpsc::Sender<SenderReport>>,
    },
    /// Block the shard until `release` yields, after saying so on `started`.
    Block {
        started: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    },
}

impl Entity for Sink {
    const KIND: &'static str = "backpressure.sink";
    type Msg = SinkMsg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Sink::default()
    }

    fn handle(&mut self, msg: SinkMsg, _ctx: &mut Ctx<'_, Self>) {
        match msg {
            SinkMsg::Seq { sender, seq, last } => {
                let r = self.senders.entry(sender).or_default();
                if seq != r.received {
                    r.out_of_order += 1;
                    r.first_problem.get_or_insert_with(|| {
                        format!("sender {sender}: got {seq} after {} messages", r.received)
                    });
                }
                r.received += 1;
                if let Some(last) = last {
                    let _ = last.send(r.clone());
                }
            }
            SinkMsg::Block { started, release } => {
                started.send(()).unwrap();
                let _ = release.recv();
            }
        }
    }
}

/// Sends from inside a handler.
struct Burster;

enum BursterMsg {
    /// Send `n` messages numbered from `from` to sink `target` in one
    /// handler call, the last one carrying `report`. Replies with how many
    /// were accepted.
    Burst {
        target: u64,
        sender: u64,
        from: u64,
        n: u64,
        report: mpsc::Sender<SenderReport>,
    },
    /// Try to send `n` numbered messages to `target` in one handler call and
    /// an ask after them; reply with what each send returned.
    Flood { target: u64, sender: u64, n: u64 },
}

/// What a flood saw: sequence numbers accepted, sequence numbers handed back
/// by `SendError::Overflow`, and whether the ask after them was refused with
/// the message handed back.
#[derive(Debug, Default, PartialEq)]
struct Flooded {
    accepted: Vec<u64>,
    handed_back: Vec<u64>,
    ask_refused: bool,
}

enum BurstReply {
    Accepted(u64),
    Flooded(Flooded),
}

impl Entity for Burster {
    const KIND: &'static str = "backpressure.burster";
    type Msg = BursterMsg;
    type Reply = BurstReply;

    fn activate(_key: u64) -> Self {
        Burster
    }

    fn handle(&mut self, msg: BursterMsg, ctx: &mut Ctx<'_, Self>) -> BurstReply {
        match msg {
            BursterMsg::Burst {
                target,
                sender,
                from,
                n,
                report,
            } => {
                let mut accepted = 0;
                for seq in from..from + n {
                    let last = (seq + 1 == from + n).then(|| report.clone());
                    if ctx
                        .tell::<Sink>(target, SinkMsg::Seq { sender, seq, last })
                        .is_ok()
                    {
                        accepted += 1;
                    }
                }
                BurstReply::Accepted(accepted)
            }
            BursterMsg::Flood { target, sender, n } => {
                let mut out = Flooded::default();
                for seq in 0..n {
                    let msg = SinkMsg::Seq {
                        sender,
                        seq,
                        last: None,
                    };
                    match ctx.tell::<Sink>(target, msg) {
                        Ok(()) => out.accepted.push(seq),
                        Err(SendError::Overflow(SinkMsg::Seq { seq, .. })) => {
                            out.handed_back.push(seq)
                        }
                        Err(e) => panic!("unexpected send error {e:?}"),
                    }
                }
                let ask = SinkMsg::Seq {
                    sender,
                    seq: u64::MAX,
                    last: None,
                };
                let asked = ctx.ask::<Sink, _>(target, ask, |_: Result<(), AskError>| {
                    unreachable!("a refused ask's continuation is never called")
                });
                out.ask_refused = matches!(
                    asked,
                    Err(SendError::Overflow(SinkMsg::Seq { seq: u64::MAX, .. }))
                );
                BurstReply::Flooded(out)
            }
        }
    }
}

fn two_slot_engine() -> Engine {
    test_engine(2)
        .ring_capacity(2)
        .overflow_cap(1 << 17)
        .register::<Sink>()
        .register::<Burster>()
        .build()
        .unwrap()
}

fn clean(received: u64) -> SenderReport {
    SenderReport {
        received,
        ..SenderReport::default()
    }
}

/// A client sends `n` numbered messages to `sink` with `tell`, the last
/// carrying a report channel; returns the sink's report on that sender.
fn client_burst(engine: &Engine, sink: u64, sender: u64, n: u64) -> SenderReport {
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    for seq in 0..n {
        let last = (seq + 1 == n).then(|| report.clone());
        client
            .tell::<Sink>(sink, SinkMsg::Seq { sender, seq, last })
            .expect("tell waits for room");
    }
    recv(&reports, "the sink's report")
}

#[test]
fn client_burst_through_two_slot_rings_arrives_complete_and_in_order() {
    let engine = two_slot_engine();
    let sink = keys_on_shard::<Sink>(&engine, 1, 0, 1)[0];
    let report = guarded("a client burst", move || {
        client_burst(&engine, sink, 0, BURST)
    });
    assert_eq!(report, clean(BURST));
}

/// A handler sends a burst of `BURST` to a sink on `sink_shard` (the burster
/// is on shard 0); returns the sink's report and the final metrics.
fn handler_burst(sink_shard: usize) -> (SenderReport, percore::Metrics) {
    let engine = two_slot_engine();
    let burster = keys_on_shard::<Burster>(&engine, 0, 0, 1)[0];
    let sink = keys_on_shard::<Sink>(&engine, sink_shard, 0, 1)[0];
    guarded("a handler burst", move || {
        let client = engine.client().unwrap();
        let (report, reports) = mpsc::channel();
        let burst = BursterMsg::Burst {
            target: sink,
            sender: 7,
            from: 0,
            n: BURST,
            report,
        };
        match client.ask::<Burster>(burster, burst) {
            Ok(BurstReply::Accepted(n)) => assert_eq!(n, BURST, "every send accepted"),
            _ => panic!("burst failed"),
        }
        let report = recv(&reports, "the sink's report");
        drop(client);
        (report, engine.shutdown().unwrap())
    })
}

#[test]
fn handler_burst_to_another_shard_waits_in_the_overflow_queue_and_arrives_in_order() {
    let (report, metrics) = handler_burst(1);
    assert_eq!(report, clean(BURST));
    let shard0 = metrics.shards[0];
    assert_eq!(shard0.sent, BURST);
    assert!(
        shard0.overflowed > 0 && shard0.ring_full > 0,
        "a 2-slot ring cannot take a burst at once: {shard0:?}"
    );
    assert_eq!(metrics.shards[1].handled, BURST);
}

#[test]
fn handler_burst_to_its_own_shard_arrives_complete_and_in_order() {
    let (report, metrics) = handler_burst(0);
    assert_eq!(report, clean(BURST));
    assert_eq!(metrics.shards[0].sent, BURST);
    // The burst itself, the ask that started it.
    assert_eq!(metrics.shards[0].handled, BURST + 1);
}

#[test]
fn client_and_handler_bursts_to_one_entity_keep_each_senders_order() {
    let engine = two_slot_engine();
    let burster = keys_on_shard::<Burster>(&engine, 0, 0, 1)[0];
    let sink = keys_on_shard::<Sink>(&engine, 1, 0, 1)[0];
    let (client_report, handler_report) = guarded("concurrent bursts", move || {
        let (report, reports) = mpsc::channel();
        let starter = engine.client().unwrap();
        starter
            .tell::<Burster>(
                burster,
                BursterMsg::Burst {
                    target: sink,
                    sender: 1,
                    from: 0,
                    n: BURST / 2,
                    report,
                },
            )
            .unwrap();
        let client_report = client_burst(&engine, sink, 2, BURST / 2);
        (client_report, recv(&reports, "the handler burst's report"))
    });
    assert_eq!(client_report, clean(BURST / 2));
    assert_eq!(handler_report, clean(BURST / 2));
}

/// An engine of one shard, blocked inside a handler until the returned sender
/// is used or dropped. Clients wait at most 10 ms for room.
fn blocked_engine() -> (Engine, mpsc::Sender<()>) {
    let engine = test_engine(1)
        .ring_capacity(2)
        .send_wait(Duration::from_millis(10))
        .register::<Sink>()
        .register::<Burster>()
        .build()
        .unwrap();
    let (started, started_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let client = engine.client().unwrap();
    client
        .tell::<Sink>(
            99,
            SinkMsg::Block {
                started,
                release: release_rx,
            },
        )
        .unwrap();
    recv(&started_rx, "the blocking handler to start");
    (engine, release)
}

#[test]
fn try_tell_hands_the_message_back_when_the_ring_is_full() {
    let (engine, release) = blocked_engine();
    let client = engine.client().unwrap();
    let seq_msg = |seq| SinkMsg::Seq {
        sender: 0,
        seq,
        last: None,
    };
    // Nothing drains the ring while the shard is blocked: it fills.
    let mut accepted = 0;
    let handed_back = loop {
        match client.try_tell::<Sink>(1, seq_msg(accepted)) {
            Ok(()) => accepted += 1,
            Err(TellError::Full(msg)) => break msg,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(accepted <= 2, "a 2-slot ring took {accepted} messages");
    };
    assert!(accepted >= 1, "the ring had room for at least one");
    assert!(matches!(handed_back, SinkMsg::Seq { seq, .. } if seq == accepted));
    // Still full: `tell` waits its 10 ms and gives up, `ask` too.
    assert!(matches!(
        client.tell::<Sink>(1, seq_msg(accepted)),
        Err(TellError::Full(SinkMsg::Seq { seq, .. })) if seq == accepted
    ));
    assert_eq!(
        client
            .ask::<Sink>(1, seq_msg(accepted))
            .map_err(AskError::from),
        Err(AskError::Full)
    );

    release.send(()).unwrap();
    // Sending the handed-back message again keeps the order.
    let (report, reports) = mpsc::channel();
    let mut msg = SinkMsg::Seq {
        sender: 0,
        seq: accepted,
        last: Some(report),
    };
    loop {
        match client.tell::<Sink>(1, msg) {
            Ok(()) => break,
            Err(TellError::Full(back)) => msg = back,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(recv(&reports, "the sink's report"), clean(accepted + 1));
}

fn flood(target_shard: usize) {
    let engine = test_engine(2)
        .overflow_cap(4)
        .register::<Sink>()
        .register::<Burster>()
        .build()
        .unwrap();
    let burster = keys_on_shard::<Burster>(&engine, 0, 0, 1)[0];
    let sink = keys_on_shard::<Sink>(&engine, target_shard, 0, 1)[0];
    let client = engine.client().unwrap();
    let flood = BursterMsg::Flood {
        target: sink,
        sender: 3,
        n: 10,
    };
    let Ok(BurstReply::Flooded(flooded)) = client.ask::<Burster>(burster, flood) else {
        panic!("flood failed");
    };
    assert_eq!(
        flooded,
        Flooded {
            accepted: vec![0, 1, 2, 3],
            handed_back: vec![4, 5, 6, 7, 8, 9],
            ask_refused: true,
        }
    );
    // The four accepted ones, and nothing else, reach the sink: a later
    // message from the same sender numbered 4 is exactly the fifth it sees.
    let (report, reports) = mpsc::channel();
    let again = BursterMsg::Burst {
        target: sink,
        sender: 3,
        from: 4,
        n: 1,
        report,
    };
    client.tell::<Burster>(burster, again).unwrap();
    assert_eq!(recv(&reports, "the sink's report"), clean(5));
}

#[test]
fn handler_past_the_overflow_cap_to_another_shard_gets_its_message_back() {
    flood(1);
}

#[test]
fn handler_past_the_overflow_cap_on_its_own_shard_gets_its_message_back() {
    flood(0);
}
