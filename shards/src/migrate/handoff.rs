//! The move itself: an entity leaves its owner ([`Protocol::run_moves`]),
//! travels in an [`Op::Transfer`], arrives ([`Protocol::deliver_control`])
//! and settles once the markers that order it came; durable entities are
//! confirmed to their old owner once logged here.

use crate::dispatch::Departure;
use crate::envelope::{Envelope, Op, STRAGGLER};
use crate::id::{EntityId, ReplyTo, SenderId, CLIENT_BIT};
use crate::limits::MOVES_PER_PASS_MAX;
use crate::log::{LogRefusal, LogSink};
use crate::migrate::lanes::Lanes;
use crate::migrate::place::{Place, Settling};
use crate::migrate::Protocol;
use crate::services::gate::Held;
use crate::services::moves::{MoveOutcome, PendingMove};
use crate::services::outbox::Route;
use crate::timers::MovedTimer;

/// What travels in an [`Op::Transfer`].
struct Migrant {
    departure: Departure,
    timers: Vec<MovedTimer>,
    /// Outputs of its durable handler still held on the old owner, routed
    /// as seen from the new one: they wait there for its first record.
    held: Vec<Held>,
    origin: usize,
    /// Whether a marker follows (the old owner was not the home).
    settle: bool,
    /// Its lanes: the streams of shards that send to it by a direct route
    /// or are switching, with what they hold.
    lanes: Lanes,
    left_ns: u64,
    reply: Option<ReplyTo>,
}

/// A durable entity that left, kept in this shard's checkpoints until its
/// new owner's record is durable.
pub(super) struct Departed {
    kind_hash: u64,
    version: u64,
    bytes: Vec<u8>,
}

/// A durable arrival to confirm to its old owner once logged here.
pub(super) struct Arrival {
    id: EntityId,
    origin: usize,
}

/// A logged arrival waiting for its record to be durable.
pub(super) struct LoggedArrival {
    lsn: u64,
    id: EntityId,
    origin: usize,
    version: u64,
}

impl Protocol<'_> {
    /// Handles a migration or routing control envelope.
    pub(crate) fn deliver_control(&mut self, env: Envelope) {
        let id = EntityId::new(env.kind, env.key);
        let me = self.me();
        match env.op {
            Op::Transfer => self.arrive(env),
            Op::Moved => {
                // The old owner says the entity moved on: point there, and
                // send the marker down the old path behind what went that way.
                // SAFETY: `Op::Moved` envelopes carry the new owner as a `u32`.
                let to = unsafe { env.read::<u32>() } as usize;
                let old = env.sender as usize;
                self.mig.places.set(id, Place::Away(to));
                let marker =
                    Envelope::empty(id.kind, id.key, Op::Marker, 0).with_route(me as SenderId, 0);
                self.svc.out().push_remote(old, marker);
            }
            Op::Marker => self.marker(env),
            Op::Fence => {
                // SAFETY: `Op::Fence` envelopes carry a shard index as a `u32`.
                let from = unsafe { env.read::<u32>() } as usize;
                self.mig.fences.push(from);
            }
            Op::Hint => {
                // SAFETY: `Op::Hint` envelopes carry the owner as a `u32`.
                let owner = unsafe { env.read::<u32>() } as usize;
                // A shard emptying its cache to let entities leave learns
                // again once they left (see `run_moves`).
                if !self.mig.draining {
                    self.svc.take_hint(id, owner);
                }
            }
            Op::Switched => self.svc.switched(id),
            Op::Released => {
                // SAFETY: `Op::Released` envelopes carry the version as a `u64`.
                let version = unsafe { env.read::<u64>() };
                if self
                    .mig
                    .departed
                    .get(&id)
                    .is_some_and(|d| d.version <= version)
                {
                    self.mig.departed.remove(&id);
                }
            }
            _ => unreachable!("not a control envelope: {:?}", env.op),
        }
    }

    fn arrive(&mut self, env: Envelope) {
        let id = EntityId::new(env.kind, env.key);
        let me = self.me();
        // SAFETY: `Op::Transfer` envelopes are made with a `Migrant`
        // (`move_one`), and only shards send them.
        let m: Migrant = unsafe { env.take::<Migrant>() };
        let durable = m.departure.log.is_some();
        self.tables
            .get_mut(id.kind)
            .admit(id.key, m.departure, self.svc);
        self.mig.lanes.put(id, m.lanes);
        for t in m.timers {
            self.svc.timers_mut().adopt(t);
        }
        // Held outputs follow the entity and wait for its record here (logged
        // this pass, with the state they followed): released before anything
        // it emits here, so its order holds.
        self.svc.gate_mut().hold_arrived(m.held);
        if durable {
            self.mig.arrivals.push(Arrival {
                id,
                origin: m.origin,
            });
        }
        self.svc.counters_mut().migrations_in += 1;
        // What it sent from its old shard may still wait in rings from there:
        // every shard it may send to drains that ring before it sees anything
        // this shard sends next. (Its old shard had handed everything for
        // other shards to rings when it left: see `run_moves`.)
        // The old shard itself gets one too: what the entity sent there sat
        // in its local queue, which it runs before going on.
        let fence_from = m.origin as u32;
        for d in 0..self.svc.spec().shard_count {
            if d != me {
                let fence = Envelope::new(id.kind, id.key, Op::Fence, fence_from)
                    .with_route(me as SenderId, 0);
                self.svc.out().push_remote(d, fence);
            }
        }
        // It may send: no message may take a direct route chosen before it
        // came (see the module docs).
        self.svc.rebase_routes();
        let window = self.svc.heat().window();
        self.mig.arrived_in.insert(id, window);
        let home = self.svc.is_home(id);
        let rejoin = !home && self.mig.bounced.take(id);
        let earlier = self.mig.places.clear(&id);
        if !m.settle && !rejoin {
            debug_assert!(
                earlier.is_none(),
                "shard {me}: {:?} precedes a transfer of {id:?} from its home {}",
                earlier.as_ref().map(Place::name),
                m.origin
            );
            self.mig.places.set(id, Place::Guest);
            self.settled(m.left_ns, m.reply, id);
            return;
        }
        let mut s = match earlier {
            Some(Place::Settling(s)) => s,
            Some(Place::Away(_)) | None => Box::new(Settling::waiting()),
            Some(Place::Guest) => unreachable!("a guest arriving again"),
        };
        s.arrived = true;
        s.due = u8::from(m.settle) + u8::from(rejoin);
        s.left_ns = m.left_ns;
        s.reply = m.reply;
        self.mig.places.set(id, Place::Settling(s));
        if rejoin {
            // Behind what this shard sent home for it while it was away.
            let marker =
                Envelope::empty(id.kind, id.key, Op::Rejoin, 0).with_route(me as SenderId, 0);
            self.svc.send_home(marker);
        }
        if home && m.settle {
            // Back home: the home is the one that sends the marker down the
            // old path (there is no pointer elsewhere to switch).
            let marker =
                Envelope::empty(id.kind, id.key, Op::Marker, 0).with_route(me as SenderId, 0);
            self.svc.out().push_remote(m.origin, marker);
        }
    }

    fn marker(&mut self, env: Envelope) {
        let id = EntityId::new(env.kind, env.key);
        match self.mig.places.get_mut(&id) {
            Some(Place::Away(to)) => {
                // An old owner: pass the marker on behind the stragglers; it
                // never hears of this entity again (senders whose cached
                // route still names this shard are sent to the home).
                let to = *to;
                debug_assert!(!self.svc.is_home(id));
                self.mig.places.clear(&id);
                self.svc.out().push_remote(to, env);
            }
            Some(Place::Settling(s)) => {
                debug_assert!(s.arrived && s.due > 0, "a marker overtook its entity");
                s.due -= 1;
                if s.due == 0 {
                    self.settle(id);
                }
            }
            other => {
                debug_assert!(
                    false,
                    "unexpected marker at {:?}",
                    other.as_ref().map(|p| p.name())
                );
            }
        }
    }

    /// Every marker came: the entity is settled here; what was held goes on.
    pub(super) fn settle(&mut self, id: EntityId) {
        let Some(Place::Settling(s)) = self.mig.places.clear(&id) else {
            unreachable!("settling");
        };
        if !self.svc.is_home(id) {
            self.mig.places.set(id, Place::Guest);
        }
        let Settling {
            held,
            direct,
            left_ns,
            reply,
            ..
        } = *s;
        self.settled(left_ns, reply, id);
        for held in held.into_iter().chain(direct) {
            self.route_addressed(held);
        }
    }

    fn settled(&mut self, left_ns: u64, reply: Option<ReplyTo>, id: EntityId) {
        self.mig.unstamped.push(left_ns);
        if let Some(reply) = reply {
            self.answer_move(reply, id, MoveOutcome::Done);
        }
    }

    fn answer_move(&mut self, reply: ReplyTo, id: EntityId, outcome: MoveOutcome) {
        if reply.sender & CLIENT_BIT != 0 {
            let env = Envelope::new(id.kind, id.key, Op::ReplyClient, outcome)
                .with_route(reply.sender, reply.token);
            let slot = (reply.sender & !CLIENT_BIT) as usize;
            self.svc.out().client_outbox(slot).push(env);
        }
    }

    /// Carries out the moves requested during this pass (explicit requests
    /// and the rebalancer's), at most [`MOVES_PER_PASS_MAX`].
    pub(crate) fn run_moves(&mut self) {
        if !self.svc.moves_mut().gather() {
            return;
        }
        // An entity leaves only when everything this shard holds for other
        // shards is in rings: what it sent from here cannot then be
        // overtaken by what it sends from its new shard (the receivers drain
        // the ring from here first, on its fence; this shard runs its local
        // queue first).
        if self.svc.out_ref().has_shard_outbound() {
            return;
        }
        // ... and only when this shard routes everything through homes and
        // its switches home were acknowledged: then every message an
        // entity sent from here and not yet handled waits in a ring to its
        // target's home, where the fence of its arrival elsewhere orders it
        // (see the module docs). No hints are taken meanwhile.
        if !self.svc.routes().is_empty() {
            self.mig.draining = true;
            self.svc.flush_routes();
            return;
        }
        self.mig.draining = false;
        let (batch, stayed) = self.svc.moves_mut().take_batch(MOVES_PER_PASS_MAX);
        self.svc.counters_mut().moves_deferred += stayed as u64;
        let mut deferred = Vec::new();
        for mv in batch {
            if let Some(mv) = self.move_one(mv) {
                deferred.push(mv);
            }
        }
        for mv in deferred {
            self.svc.moves_mut().request(mv);
        }
    }

    /// Moves one entity, or hands the move back to wait for the next pass
    /// (the entity is still settling here).
    fn move_one(&mut self, mv: PendingMove) -> Option<PendingMove> {
        let id = mv.id;
        match self.mig.places.get(&id) {
            // It left earlier in this pass: the request follows it.
            Some(Place::Away(_)) => {
                self.route_addressed(mv.into_request());
                return None;
            }
            // A request that came the old way (a straggler), or the entity's
            // own (it handled a straggler), while it waits for its marker: it
            // moves once settled. (The rebalancer's picks skip settling
            // entities.)
            Some(Place::Settling(_)) => return Some(mv),
            // A deferred request whose entity has left and been forgotten
            // here since: ask its home again.
            None if !self.svc.is_home(id) => {
                self.svc.send_home(mv.into_request());
                return None;
            }
            Some(Place::Guest) | None => {}
        }
        let PendingMove { target, reply, .. } = mv;
        let me = self.me();
        let answer = |p: &mut Self, outcome| {
            if let Some(reply) = reply {
                p.answer_move(reply, id, outcome);
            }
        };
        if target >= self.svc.spec().shard_count {
            answer(self, MoveOutcome::NoSuchShard);
            return None;
        }
        if target == me {
            answer(self, MoveOutcome::Done);
            return None;
        }
        if self.svc.moves().is_pinned(&id) {
            self.svc.counters_mut().moves_refused += 1;
            answer(self, MoveOutcome::Pinned);
            return None;
        }
        let table = self.tables.get_mut(id.kind);
        if !table.ensure_active(id.key, self.svc) {
            answer(self, MoveOutcome::Panicked);
            return None;
        }
        let departure = table.depart(id.key, self.svc).expect("active just above");
        if let Some(log) = &departure.log {
            if let Some(bytes) = &log.logged {
                let departed = Departed {
                    kind_hash: log.kind_hash,
                    version: log.version,
                    bytes: bytes.clone(),
                };
                self.mig.departed.insert(id, departed);
            }
        }
        let timers = self.svc.timers_mut().take_owned_by(id);
        // Outputs still held here follow it, re-aimed as seen from there.
        let held = self.svc.gate_mut().take_all_of(id, |route| match route {
            Route::Local => Route::Shard(me),
            Route::Shard(s) if s == target => Route::Local,
            other => other,
        });
        let home = self.svc.home_of(id);
        let settle = home != me;
        let lanes = self.mig.lanes.take(id);
        let migrant = Migrant {
            departure,
            timers,
            held,
            origin: me,
            settle,
            lanes,
            left_ns: self.svc.now_ns(),
            reply,
        };
        self.mig.arrived_in.remove(&id);
        self.mig.places.set(id, Place::Away(target));
        let transfer =
            Envelope::new(id.kind, id.key, Op::Transfer, migrant).with_route(me as SenderId, 0);
        self.svc.out().push_remote(target, transfer);
        // Timer firings already queued here for it follow it, behind it (an
        // old owner that is not its home forgets it once the marker passes).
        if me != home && self.svc.out_ref().local_len() > 0 {
            for mut env in self.svc.out().take_local() {
                if (env.kind, env.key) == (id.kind, id.key) && env.op.is_addressed() {
                    env.status |= STRAGGLER;
                    self.svc.counters_mut().forwarded += 1;
                    self.svc.out().push_remote(target, env);
                } else {
                    self.svc.out().push_local(env);
                }
            }
        }
        if settle && target != home {
            let moved = Envelope::new(id.kind, id.key, Op::Moved, target as u32)
                .with_route(me as SenderId, 0);
            self.svc.out().push_remote(home, moved);
        }
        self.svc.counters_mut().migrations_out += 1;
        None
    }

    /// After the pass's records were appended: notes the LSNs of durable
    /// arrivals, so their old owners hear once the records are durable.
    pub(crate) fn note_arrival_lsns(&mut self) {
        for Arrival { id, origin } in std::mem::take(&mut self.mig.arrivals) {
            let lsn = self.svc.gate().inflight_lsn_of(id);
            let version = self.tables.get(id.kind).version_of(id.key);
            if let (Some(lsn), Some(version)) = (lsn, version) {
                self.mig.arrival_lsns.push_back(LoggedArrival {
                    lsn,
                    id,
                    origin,
                    version,
                });
            }
        }
    }

    /// Records below `lsn_end` are durable: confirms the arrivals among them.
    pub(crate) fn release_arrivals(&mut self, lsn_end: u64) {
        let me = self.me();
        while let Some(a) = self.mig.arrival_lsns.front() {
            if a.lsn >= lsn_end {
                break;
            }
            let a = self.mig.arrival_lsns.pop_front().expect("front exists");
            let env = Envelope::new(a.id.kind, a.id.key, Op::Released, a.version)
                .with_route(me as SenderId, 0);
            self.svc.out().push_remote(a.origin, env);
        }
    }

    /// Appends the last logged state of every durable entity that left and
    /// whose new owner's record is not yet durable: otherwise a checkpoint
    /// here could delete its only durable record. Returns how many.
    pub(crate) fn checkpoint_departed(&self, sink: &mut dyn LogSink) -> Result<usize, LogRefusal> {
        for (id, d) in &self.mig.departed {
            sink.append_state(d.kind_hash, id.key, d.version, &d.bytes)?;
        }
        Ok(self.mig.departed.len())
    }
}
