//! The rings between shards.

use percore_shards::driver::Envelope;
use rtrb::{Consumer, Producer, RingBuffer};

/// Each shard's producers, indexed by destination (`None` at its own index).
pub(crate) type Outbound = Vec<Option<Producer<Envelope>>>;
/// Each shard's consumers, with the shard each reads from.
pub(crate) type Inbound = Vec<(usize, Consumer<Envelope>)>;

/// The N·(N−1) rings of `n` shards, `capacity` envelopes each: for every
/// shard, its outbound producers and its inbound consumers.
pub(crate) fn shard_mesh(n: usize, capacity: usize) -> (Vec<Outbound>, Vec<Inbound>) {
    let mut producers: Vec<Outbound> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut consumers: Vec<Inbound> = (0..n).map(|_| Vec::new()).collect();
    for (from, row) in producers.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (p, c) = RingBuffer::new(capacity);
                *slot = Some(p);
                consumers[to].push((from, c));
            }
        }
    }
    (producers, consumers)
}
