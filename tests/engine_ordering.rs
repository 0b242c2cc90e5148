//! Per-sender FIFO on the real engine (contract §3 and §4): for every pair
//! (sender, entity), messages are handled in the order they were sent, none
//! lost, none duplicated — whether the sender is a client thread or an entity,
//! whatever the ring capacity and shard count.
//!
//! Clients use `tell`, `ask` and `tell_batch`; relays use `Ctx::tell` and
//! `Ctx::ask`. Sinks check every message against the next sequence number they expect
//! from its sender and record any gap, repeat or reordering; at the end an
//! ask per sink confirms each sender's exact count.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;

use percore::{AskError, Ctx, Entity};
use proptest::prelude::*;

use common::{guarded, recv, test_engine};

/// Relays use sender ids from here up (clients use their thread index).
const RELAY_SENDER_BASE: u64 = 1_000_000;

/// What a sink has seen: the next sequence number it expects from each
/// sender (= how many it got, when there are no violations), and every
/// message that broke its sender's order.
#[derive(Clone, Debug, Default, PartialEq)]
struct SinkReport {
    next: HashMap<u64, u64>,
    violations: Vec<String>,
}

/// Receives numbered messages and checks each sender's order.
#[derive(Default)]
struct Sink(SinkReport);

enum SinkMsg {
    Seq { sender: u64, seq: u64 },
    Report,
}

impl Entity for Sink {
    const KIND: &'static str = "ordering.sink";
    type Msg = SinkMsg;
    type Reply = Option<SinkReport>;

    fn activate(_key: u64) -> Self {
        Sink::default()
    }

    fn handle(&mut self, msg: SinkMsg, ctx: &mut Ctx<'_, Self>) -> Option<SinkReport> {
        match msg {
            SinkMsg::Seq { sender, seq } => {
                let next = self.0.next.entry(sender).or_insert(0);
                if seq != *next {
                    self.0.violations.push(format!(
                        "sink {}: sender {sender} sent seq {seq}, expected {next}",
                        ctx.key()
                    ));
                }
                *next = seq + 1;
                None
            }
            SinkMsg::Report => Some(self.0.clone()),
        }
    }
}

/// An entity that sends its own numbered stream to every sink, one message
/// per sink per step, stepping itself with messages to itself so its sends
/// interleave with everyone else's. Its last message to each sink is an ask;
/// when every one is answered, FIFO means every earlier message was handled,
/// and it reports on `done`.
#[derive(Default)]
struct Relay {
    targets: Vec<u64>,
    count: u64,
    seq: u64,
    acks: usize,
    errors: Vec<AskError>,
    done: Option<mpsc::Sender<(u64, Vec<AskError>)>>,
}

enum RelayMsg {
    Start {
        targets: Vec<u64>,
        count: u64,
        done: mpsc::Sender<(u64, Vec<AskError>)>,
    },
    Step,
    Acked(Result<(), AskError>),
}

impl Entity for Relay {
    const KIND: &'static str = "ordering.relay";
    type Msg = RelayMsg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Relay::default()
    }

    fn handle(&mut self, msg: RelayMsg, ctx: &mut Ctx<'_, Self>) {
        let sender = RELAY_SENDER_BASE + ctx.key();
        match msg {
            RelayMsg::Start {
                targets,
                count,
                done,
            } => {
                assert!(count > 0 && !targets.is_empty());
                self.targets = targets;
                self.count = count;
                self.done = Some(done);
                ctx.tell::<Relay>(ctx.key(), RelayMsg::Step)
                    .expect("a relay can always step");
            }
            RelayMsg::Step => {
                let seq = self.seq;
                let last = seq + 1 == self.count;
                for &target in &self.targets {
                    let msg = SinkMsg::Seq { sender, seq };
                    let sent = if last {
                        ctx.ask::<Sink, _>(target, msg, |r| RelayMsg::Acked(r.map(drop)))
                    } else {
                        ctx.tell::<Sink>(target, msg)
                    };
                    sent.expect("the overflow cap is far above what a relay sends");
                }
                self.seq += 1;
                if !last {
                    ctx.tell::<Relay>(ctx.key(), RelayMsg::Step)
                        .expect("a relay can always step");
                }
            }
            RelayMsg::Acked(result) => {
                if let Err(e) = result {
                    self.errors.push(e);
                }
                self.acks += 1;
                if self.acks == self.targets.len() {
                    let done = self.done.take().expect("started");
                    let _ = done.send((ctx.key(), std::mem::take(&mut self.errors)));
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Traffic {
    capacity: usize,
    shards: usize,
    clients: usize,
    relays: usize,
    sinks: usize,
    client_msgs: u64,
    relay_msgs: u64,
}

/// Runs one engine with `t`'s traffic and checks every sink's report, on its
/// own thread so that a hang is reported as a failure.
fn run_traffic(t: &Traffic) -> Result<(), TestCaseError> {
    let t = t.clone();
    guarded("a traffic run", move || check_traffic(&t))
}

fn check_traffic(t: &Traffic) -> Result<(), TestCaseError> {
    let engine = test_engine(t.shards)
        .ring_capacity(t.capacity)
        .register::<Sink>()
        .register::<Relay>()
        .build()
        .expect("engine starts");
    let sinks: Vec<u64> = (0..t.sinks as u64).collect();

    let (done_tx, done_rx) = mpsc::channel();
    let starter = engine.client().expect("a client");
    for relay in 0..t.relays as u64 {
        starter
            .tell::<Relay>(
                relay,
                RelayMsg::Start {
                    targets: sinks.clone(),
                    count: t.relay_msgs,
                    done: done_tx.clone(),
                },
            )
            .expect("tell accepted");
    }
    drop(done_tx);

    std::thread::scope(|scope| {
        for sender in 0..t.clients as u64 {
            let client = engine.client().expect("a client per thread");
            let sinks = &sinks;
            scope.spawn(move || {
                for seq in 0..t.client_msgs {
                    if sender % 2 == 1 {
                        // Odd senders send each round as one batch.
                        let batch = sinks
                            .iter()
                            .map(|&sink| (sink, SinkMsg::Seq { sender, seq }));
                        let sent = client.tell_batch::<Sink, _>(batch);
                        assert_eq!(sent.ok(), Some(sinks.len()), "batch accepted");
                        continue;
                    }
                    for &sink in sinks {
                        let msg = SinkMsg::Seq { sender, seq };
                        // Asks are messages too: they keep their place among
                        // the same client's tells.
                        if seq % 16 == 15 {
                            assert!(matches!(client.ask::<Sink>(sink, msg), Ok(None)));
                        } else {
                            client.tell::<Sink>(sink, msg).expect("tell accepted");
                        }
                    }
                }
                // Tells are fire and forget: an ask from this same client is
                // what guarantees they were all handled before the report.
                for &sink in sinks {
                    assert!(client.ask::<Sink>(sink, SinkMsg::Report).is_ok());
                }
            });
        }
    });

    for _ in 0..t.relays {
        let (relay, errors) = recv(&done_rx, "relay completion");
        prop_assert!(errors.is_empty(), "relay {relay}'s asks failed: {errors:?}");
    }

    for &sink in &sinks {
        let report = starter
            .ask::<Sink>(sink, SinkMsg::Report)
            .expect("report")
            .expect("a report for a report request");
        prop_assert!(
            report.violations.is_empty(),
            "order broken: {:?}",
            report.violations
        );
        let mut expected: HashMap<u64, u64> =
            (0..t.clients as u64).map(|c| (c, t.client_msgs)).collect();
        expected.extend((0..t.relays as u64).map(|r| (RELAY_SENDER_BASE + r, t.relay_msgs)));
        prop_assert_eq!(&report.next, &expected, "sink {} counts per sender", sink);
    }
    drop(starter);
    engine.shutdown().expect("clean shutdown");
    Ok(())
}

fn traffic() -> impl Strategy<Value = Traffic> {
    (
        1u32..=6,
        1usize..=4,
        1usize..=3,
        0usize..=3,
        1usize..=12,
        1u64..=300,
        1u64..=100,
    )
        .prop_map(
            |(log2, shards, clients, relays, sinks, client_msgs, relay_msgs)| Traffic {
                capacity: 1 << log2,
                shards,
                clients,
                relays,
                sinks,
                client_msgs,
                relay_msgs,
            },
        )
}

proptest! {
    // Few cases keep the file fast; a failure prints its input, and a hang
    // (reported by the guard) is not worth many shrinking rounds.
    #![proptest_config(ProptestConfig {
        cases: 8,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Client threads and relaying entities all send numbered streams to many
    /// sinks spread over the shards.
    #[test]
    fn every_entity_sees_each_senders_messages_in_send_order(t in traffic()) {
        run_traffic(&t)?;
    }
}

/// The smallest rings and more shards than cores, with every kind of sender
/// at once: the configuration most likely to expose a reordering.
#[test]
fn order_holds_through_two_slot_rings_on_oversubscribed_shards() {
    run_traffic(&Traffic {
        capacity: 2,
        shards: 4,
        clients: 3,
        relays: 3,
        sinks: 8,
        client_msgs: 500,
        relay_msgs: 200,
    })
    .unwrap();
}

/// Every kind of sender at once on more shards than cores: batches from one
/// client, tells and asks from another, two relaying entities.
#[test]
fn order_holds_with_batches_and_relays_on_four_shards() {
    run_traffic(&Traffic {
        capacity: 16,
        shards: 4,
        clients: 2,
        relays: 2,
        sinks: 10,
        client_msgs: 234,
        relay_msgs: 87,
    })
    .unwrap();
}
