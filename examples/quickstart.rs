//! Quickstart: a ticket office on percore.
//!
//! Three events each have a `Booth` entity holding their tickets; two thousand
//! `Buyer` entities each try to buy a few. A buyer *asks* its booth for a hold
//! (the reply comes back to the buyer as a message — a continuation), then
//! confirms it, or walks away and lets it lapse: every hold arms a timer on
//! the booth that returns unconfirmed tickets. Booths and buyers live on
//! different shards; nobody takes a lock.
//!
//! Run it with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use percore::{AskError, Ctx, Engine, Entity, IdlePolicy};

const EVENTS: u64 = 3;
const TICKETS_PER_EVENT: u32 = 1_000;
const BUYERS: u64 = 2_000;
const HOLD_TTL: Duration = Duration::from_millis(50);

/// One event's ticket booth.
#[derive(Default)]
struct Booth {
    remaining: u32,
    holds: std::collections::HashMap<u64, u32>,
    next_hold: u64,
    sold: u32,
    lapsed: u32,
    requests: u32,
}

enum BoothMsg {
    /// Hold `qty` tickets for a buyer.
    Hold { qty: u32 },
    /// Turn a hold into a sale.
    Confirm { hold: u64 },
    /// Timer: an unconfirmed hold lapses.
    Lapse { hold: u64 },
    /// Report.
    Stats,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BoothStats {
    remaining: u32,
    held: u32,
    sold: u32,
    lapsed: u32,
    requests: u32,
}

enum BoothReply {
    Held { hold: u64 },
    SoldOut,
    Stats(BoothStats),
    Done,
}

impl Entity for Booth {
    const KIND: &'static str = "booth";
    type Msg = BoothMsg;
    type Reply = BoothReply;

    fn activate(_event: u64) -> Self {
        Booth {
            remaining: TICKETS_PER_EVENT,
            ..Booth::default()
        }
    }

    fn handle(&mut self, msg: BoothMsg, ctx: &mut Ctx<'_, Self>) -> BoothReply {
        match msg {
            BoothMsg::Hold { qty } => {
                self.requests += 1;
                if qty > self.remaining {
                    return BoothReply::SoldOut;
                }
                self.remaining -= qty;
                self.next_hold += 1;
                let hold = self.next_hold;
                self.holds.insert(hold, qty);
                ctx.after(HOLD_TTL, BoothMsg::Lapse { hold });
                BoothReply::Held { hold }
            }
            BoothMsg::Confirm { hold } => {
                // A confirmation that arrives after the lapse finds nothing.
                if let Some(qty) = self.holds.remove(&hold) {
                    self.sold += qty;
                }
                BoothReply::Done
            }
            BoothMsg::Lapse { hold } => {
                if let Some(qty) = self.holds.remove(&hold) {
                    self.remaining += qty;
                    self.lapsed += qty;
                }
                BoothReply::Done
            }
            BoothMsg::Stats => BoothReply::Stats(BoothStats {
                remaining: self.remaining,
                held: self.holds.values().sum(),
                sold: self.sold,
                lapsed: self.lapsed,
                requests: self.requests,
            }),
        }
    }
}

/// A ticket buyer.
#[derive(Default)]
struct Buyer {
    outcome: Option<&'static str>,
}

enum BuyerMsg {
    /// Go and buy `qty` tickets for `event`.
    Start { event: u64, qty: u32 },
    /// The booth's answer, delivered as a message (the ask's continuation).
    Answer {
        event: u64,
        reply: Result<BoothReply, AskError>,
    },
    /// What happened?
    Outcome,
}

impl Entity for Buyer {
    const KIND: &'static str = "buyer";
    type Msg = BuyerMsg;
    type Reply = Option<&'static str>;

    fn activate(_key: u64) -> Self {
        Buyer::default()
    }

    fn handle(&mut self, msg: BuyerMsg, ctx: &mut Ctx<'_, Self>) -> Option<&'static str> {
        match msg {
            BuyerMsg::Start { event, qty } => {
                ctx.ask::<Booth, _>(event, BoothMsg::Hold { qty }, move |reply| {
                    BuyerMsg::Answer { event, reply }
                })
                .unwrap_or_else(|_| panic!("queue to the booth overflowed"));
            }
            BuyerMsg::Answer { event, reply } => {
                self.outcome = Some(match reply {
                    Ok(BoothReply::Held { hold }) if !ctx.key().is_multiple_of(5) => {
                        ctx.tell::<Booth>(event, BoothMsg::Confirm { hold })
                            .unwrap_or_else(|_| panic!("queue to the booth overflowed"));
                        "bought"
                    }
                    Ok(BoothReply::Held { .. }) => "walked away",
                    Ok(_) => "sold out",
                    Err(_) => "booth failed",
                });
            }
            BuyerMsg::Outcome => {}
        }
        self.outcome
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .idle(IdlePolicy::SpinThenPark { spin_us: 200 })
        .register::<Booth>()
        .register::<Buyer>()
        .build()?;
    println!(
        "percore: {} shards on cores {:?}",
        engine.shard_count(),
        engine.cores()
    );
    let client = engine.client()?;
    let started = Instant::now();

    // Every buyer wants 1 to 4 tickets; 2000 buyers want ~5000 of 3000 tickets.
    let demand: u32 = (0..BUYERS).map(|b| 1 + (b % 4) as u32).sum();
    client
        .tell_batch::<Buyer, _>((0..BUYERS).map(|b| {
            let start = BuyerMsg::Start {
                event: b % EVENTS,
                qty: 1 + (b % 4) as u32,
            };
            (b, start)
        }))
        .map_err(|e| e.to_string())?;

    // Poll the booths until every request is answered and every hold has
    // either been confirmed or lapsed.
    let stats = loop {
        let mut all = Vec::new();
        for event in 0..EVENTS {
            match client.ask::<Booth>(event, BoothMsg::Stats)? {
                BoothReply::Stats(s) => all.push(s),
                _ => unreachable!("Stats answers with stats"),
            }
        }
        let requests: u32 = all.iter().map(|s| s.requests).sum();
        let held: u32 = all.iter().map(|s| s.held).sum();
        if requests as u64 == BUYERS && held == 0 {
            break all;
        }
        std::thread::sleep(Duration::from_millis(5));
    };

    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    for b in 0..BUYERS {
        let o = client
            .ask::<Buyer>(b, BuyerMsg::Outcome)?
            .unwrap_or("pending");
        *outcomes.entry(o).or_default() += 1;
    }

    println!(
        "{BUYERS} buyers asked for {demand} tickets to {EVENTS} events of {TICKETS_PER_EVENT}:"
    );
    for (event, s) in stats.iter().enumerate() {
        println!(
            "  event {event}: sold {:4}, lapsed holds returned {:4}, remaining {:4}  (booth on shard {})",
            s.sold,
            s.lapsed,
            s.remaining,
            engine.shard_of::<Booth>(event as u64).unwrap_or(0),
        );
        assert_eq!(
            s.sold + s.remaining,
            TICKETS_PER_EVENT,
            "tickets were created or lost"
        );
    }
    println!("  buyers: {outcomes:?}");
    println!("done in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);

    drop(client);
    let metrics = engine.shutdown()?;
    for s in &metrics.shards {
        println!(
            "  shard {} (core {}): handled {:6}, sent {:6}, activations {:5}, timers {:5}, busy {:.2} ms",
            s.shard,
            s.core,
            s.handled,
            s.sent,
            s.activations,
            s.timers_fired,
            s.busy_ns as f64 / 1e6
        );
    }
    Ok(())
}
