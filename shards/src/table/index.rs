//! The index from entity key to slot: open addressing over cache-line groups
//! of eight entries, each entry a 32-bit hash tag and a 32-bit slot.
//!
//! Bucketised linear probing (Knuth, TAOCP vol. 3, §6.4, "buckets"): a key's
//! home group comes from the top bits of its hash; an insert takes the first
//! free entry from the home group on; a lookup scans groups from home until
//! it finds its key or a group with an empty entry. Removal leaves a
//! tombstone unless the group has an empty entry already (then no probe runs
//! through it), as hashbrown does.
//!
//! Why not `HashMap<u64, u32>` (what this replaced): its buckets hold the key,
//! so they are 16 B, plus a control byte elsewhere; an insert touches two
//! lines (control and bucket), and growth rehashes every key. Here the slab
//! already holds the key, so an entry needs only enough hash to reject other
//! keys (the tag) and the slot: 8 B, one line per insert, and growth reads
//! only the tags, in order, so it streams through memory without touching a
//! key. And where a key's line is can be computed before the probe, so a
//! shard can prefetch it ([`SlotIndex::prefetch`]).
//!
//! `versus --child percore activate` (a million activations on one shard,
//! 2-core KVM guest, medians of 7–11 runs beside the old code): index 34 MiB
//! → 16 MiB, 71.8 → 57.2 bytes per entity with a 16-byte state; 6.8 → 8.7
//! M/s with this index (then hashing tags with `mix64`) and the slab of
//! `Table`, 10.9 M/s with the shard prefetching index lines, 13.4–13.9 M/s
//! (two rounds) with the one-multiply tag hash of [`tag_of`].

/// Entries per group: one 64-byte cache line.
const GROUP_LEN: usize = 8;
/// A group may hold at most this many live entries and tombstones on
/// average before the index grows: a load factor of 3/4. Linear probing
/// clusters where SwissTable's triangular probing does not, so its 7/8 is
/// too full here: measured over 8 192 groups, at 7/8 60% of the groups are
/// full and an entry may sit 64 groups past its home; at 3/4, 34% and 22.
const GROUP_LOAD_MAX: usize = 6;
const _: () = assert!(GROUP_LOAD_MAX < GROUP_LEN);

/// A tag that marks a tombstone (with slot field 0): a removed entry's
/// place, which probes must pass. An empty entry is all zero.
const TOMBSTONE_TAG: u32 = 1;

/// One cache line of entries, tags apart from slots so a scan compares eight
/// tags in one vector. Entry `i` is `(tags[i], slots[i])`: `slots[i]` is the
/// slot plus one for a live entry, 0 for an empty entry (tag 0) or a
/// tombstone (tag [`TOMBSTONE_TAG`]).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Group {
    tags: [u32; GROUP_LEN],
    slots: [u32; GROUP_LEN],
}

const _: () = assert!(std::mem::size_of::<Group>() == 64);

impl Group {
    const EMPTY: Group = Group {
        tags: [0; GROUP_LEN],
        slots: [0; GROUP_LEN],
    };
}

/// The tag of `key`: the top half of its hash. The home group comes from
/// the tag's top bits, so growth can place an entry from its tag alone.
///
/// The hash is one multiply by 2^64/φ (Fibonacci hashing, Knuth §6.4): every
/// key bit reaches the top bits, which are the ones used, and strides and
/// runs of keys spread evenly. It sits at the head of every lookup's chain
/// of dependent loads: with the two multiplies of `mix64` instead, a tell
/// to one of 1 000 live entities took 29.0 ns rather than 26.2 (one shard,
/// no rings).
#[inline]
pub(crate) fn tag_of(key: u64) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

// Group scans build bit masks over whole groups with no data-dependent
// branch. A random group of a big index is a TLB and cache miss, and a short
// probe lets the core keep more of them in flight.
impl Group {
    /// Bit `i` set where entry `i` has tag `tag` (a live entry, or a
    /// tombstone or empty entry whose tag happens to be `tag`: check its slot).
    #[inline]
    fn matches(&self, tag: u32) -> u32 {
        eq_mask(&self.tags, tag)
    }

    /// Bit `i` set where entry `i` is empty.
    #[inline]
    fn empties(&self) -> u32 {
        eq_mask(&self.tags, 0) & eq_mask(&self.slots, 0)
    }

    /// Bit `i` set where entry `i` is empty or a tombstone.
    #[inline]
    fn frees(&self) -> u32 {
        eq_mask(&self.slots, 0)
    }

    #[inline]
    fn has_empty(&self) -> bool {
        self.empties() != 0
    }

    /// The slot of entry `i`, if it is live.
    #[inline]
    fn slot(&self, i: usize) -> Option<u32> {
        self.slots[i].checked_sub(1)
    }

    #[inline]
    fn set(&mut self, i: usize, tag: u32, slot: u32) {
        debug_assert!(slot < u32::MAX);
        self.tags[i] = tag;
        self.slots[i] = slot + 1;
    }

    /// The entry `tag → slot`, if the group holds it.
    #[inline]
    fn position(&self, tag: u32, slot: u32) -> Option<usize> {
        let mut m = self.matches(tag);
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            if self.slot(i) == Some(slot) {
                return Some(i);
            }
            m &= m - 1;
        }
        None
    }
}

/// Where a tag that is not indexed would go, as found by the probe that
/// missed it, so adding it right after needs no second probe. A vacancy
/// outlived by a change to the index is still safe to use: `fill` probes
/// again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vacancy {
    tag: u32,
    /// The first free entry on the key's probe path, counted over the whole
    /// index from 1 (`group * GROUP_LEN + entry + 1`); 0 if none was found
    /// or the index is too big to count so. 16 bytes in all, so it passes
    /// in registers: a bigger one went through memory and stalled on store
    /// forwarding (`versus --child percore activate` profile).
    at: u32,
    /// The index's change count when the vacancy was found.
    changes: u64,
}

/// Key → slot for one table. Knows keys only by their tags; callers confirm a
/// tag match against the key in the slab.
pub(crate) struct SlotIndex {
    /// Invariant: `groups.len()` is 0 or a power of two; every live entry
    /// sits in its home group or after it (wrapping) with every group between
    /// holding no empty entry; `live` and `tombstones` count the entries.
    groups: Box<[Group]>,
    live: usize,
    tombstones: usize,
    /// Inserts, removals and rebuilds so far (dates a [`Vacancy`]).
    changes: u64,
}

impl SlotIndex {
    pub(crate) fn new() -> Self {
        SlotIndex {
            groups: Box::new([]),
            live: 0,
            tombstones: 0,
            changes: 0,
        }
    }

    /// Bytes allocated.
    pub(crate) fn capacity_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.groups)
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        home(tag, self.groups.len())
    }

    #[inline]
    fn next(&self, g: usize) -> usize {
        (g + 1) & (self.groups.len() - 1)
    }

    /// Starts loading the home group of `tag` into the cache, so a `find` or
    /// `insert` of it a little later does not wait for memory.
    #[inline]
    pub(crate) fn prefetch(&self, tag: u32) {
        if let Some(group) = self.groups.get(self.home(tag)) {
            prefetch_line(group);
        }
    }

    /// The slot of the entry with `tag` for which `is_key(slot)` holds, or
    /// where such an entry would go.
    #[inline(always)]
    pub(crate) fn probe(&self, tag: u32, is_key: impl Fn(u32) -> bool) -> Result<u32, Vacancy> {
        let mut vacancy = Vacancy {
            tag,
            at: 0,
            changes: self.changes,
        };
        if self.groups.is_empty() {
            return Err(vacancy);
        }
        let mut g = self.home(tag);
        // Bounded: the load factor keeps an empty entry in some group.
        for _ in 0..self.groups.len() {
            let group = &self.groups[g];
            let mut m = group.matches(tag);
            while m != 0 {
                if let Some(slot) = group.slot(m.trailing_zeros() as usize) {
                    if is_key(slot) {
                        return Ok(slot);
                    }
                }
                m &= m - 1;
            }
            let frees = group.frees();
            if vacancy.at == 0 && frees != 0 {
                let at = g * GROUP_LEN + frees.trailing_zeros() as usize + 1;
                vacancy.at = u32::try_from(at).unwrap_or(0);
            }
            if group.has_empty() {
                break;
            }
            g = self.next(g);
        }
        Err(vacancy)
    }

    /// Adds `vacancy.tag → slot` where `probe` found room for it, or, if the
    /// index changed since or must grow first, wherever there is room now.
    /// The key must not be indexed.
    #[inline(always)]
    pub(crate) fn fill(&mut self, vacancy: Vacancy, slot: u32) {
        let tag = vacancy.tag;
        let (g, i) = if vacancy.at != 0 && vacancy.changes == self.changes && !self.is_full() {
            let at = vacancy.at as usize - 1;
            (at / GROUP_LEN, at % GROUP_LEN)
        } else {
            if self.is_full() {
                self.rebuild();
            }
            self.first_free(tag)
        };
        let group = &mut self.groups[g];
        debug_assert_eq!(group.slots[i], 0, "a vacancy holds no entry");
        if group.tags[i] != 0 {
            debug_assert_eq!(group.tags[i], TOMBSTONE_TAG);
            self.tombstones -= 1;
        }
        group.set(i, tag, slot);
        self.live += 1;
        self.changes += 1;
    }

    /// Whether an insert must rebuild first.
    #[inline]
    fn is_full(&self) -> bool {
        self.live + self.tombstones >= self.groups.len() * GROUP_LOAD_MAX
    }

    /// The first free entry from `tag`'s home group on.
    fn first_free(&self, tag: u32) -> (usize, usize) {
        let mut g = self.home(tag);
        for _ in 0..self.groups.len() {
            let frees = self.groups[g].frees();
            if frees != 0 {
                return (g, frees.trailing_zeros() as usize);
            }
            g = self.next(g);
        }
        unreachable!("the load factor keeps a free entry");
    }

    /// The group and position of the entry `tag → slot`, which must exist.
    #[inline]
    fn locate(&self, tag: u32, slot: u32) -> (usize, usize) {
        let mut g = self.home(tag);
        for _ in 0..self.groups.len() {
            let group = &self.groups[g];
            if let Some(i) = group.position(tag, slot) {
                return (g, i);
            }
            debug_assert!(!group.has_empty(), "index entry {tag:#x} → {slot} missing");
            g = self.next(g);
        }
        unreachable!("index entry {tag:#x} → {slot} missing");
    }

    /// Removes `tag → slot` (it must exist).
    pub(crate) fn remove(&mut self, tag: u32, slot: u32) {
        let (g, i) = self.locate(tag, slot);
        let group = &mut self.groups[g];
        // A group with an empty entry never had a probe pass through it (an
        // insert only passes groups with no empty entry, and such a group
        // gets no empty entry back), so the entry can be empty again.
        group.slots[i] = 0;
        group.tags[i] = TOMBSTONE_TAG;
        if group.has_empty() {
            group.tags[i] = 0;
        } else {
            self.tombstones += 1;
        }
        self.live -= 1;
        self.changes += 1;
    }

    /// Points `tag → from` at `to` instead (a slab entry moved).
    pub(crate) fn relocate(&mut self, tag: u32, from: u32, to: u32) {
        let (g, i) = self.locate(tag, from);
        self.groups[g].set(i, tag, to);
    }

    /// Makes room: twice the groups when more than half the load is live,
    /// else the same number without tombstones.
    ///
    /// Streams: it reads the old groups in order, and an entry's new home
    /// follows from its tag alone and grows with its old position, so the
    /// new groups are written in order too, each made (and its page first
    /// touched) just before its first entry lands. Entries that had wrapped
    /// past the old end go last. Writing the new groups empty up front
    /// instead, then placing the entries, cost a second pass over memory
    /// that had left the cache (a million activations on one shard without
    /// rings, the `activate` figure's shard side: rebuild 18% of the time).
    #[cold]
    fn rebuild(&mut self) {
        let len = if self.groups.is_empty() {
            1
        } else if self.live >= self.groups.len() * GROUP_LOAD_MAX / 2 {
            self.groups.len() * 2
        } else {
            self.groups.len()
        };
        let old = std::mem::take(&mut self.groups);
        let mut new = Rebuilt {
            groups: Vec::with_capacity(len),
            filled: vec![0; len],
        };
        let mut wrapped = Vec::new();
        for (j, group) in old.iter().enumerate() {
            for i in 0..GROUP_LEN {
                let Some(slot) = group.slot(i) else { continue };
                let tag = group.tags[i];
                if home(tag, old.len()) > j {
                    wrapped.push((tag, slot));
                } else {
                    new.place(tag, slot);
                }
            }
        }
        for (tag, slot) in wrapped {
            new.place(tag, slot);
        }
        let mut groups = new.groups;
        groups.resize(len, Group::EMPTY);
        self.groups = groups.into_boxed_slice();
        self.tombstones = 0;
        self.changes += 1;
    }
}

/// The home group of `tag` among `len`: the tag's top bits (multiply-shift).
#[inline]
fn home(tag: u32, len: usize) -> usize {
    ((u64::from(tag) * len as u64) >> 32) as usize
}

/// An index being rebuilt: the first of its groups, made in order as
/// entries land on them (the rest are empty), and how many entries each
/// group holds (entries fill a group from its start; counting them here
/// spares reading back a line just written, which stalled on store
/// forwarding).
struct Rebuilt {
    groups: Vec<Group>,
    /// Invariant: `filled.len()` is the index's group count, a power of two.
    filled: Vec<u8>,
}

impl Rebuilt {
    /// Puts `tag → slot` in the first group with room from its home on.
    #[inline]
    fn place(&mut self, tag: u32, slot: u32) {
        let len = self.filled.len();
        let mut g = home(tag, len);
        // Bounded: fewer live entries than entries.
        for _ in 0..len {
            let i = usize::from(self.filled[g]);
            if i < GROUP_LEN {
                if g >= self.groups.len() {
                    self.groups.resize(g + 1, Group::EMPTY);
                }
                self.groups[g].set(i, tag, slot);
                self.filled[g] += 1;
                return;
            }
            g = (g + 1) & (len - 1);
        }
        unreachable!("a rebuilt index has room for every live entry");
    }
}

/// Bit `i` set where `lanes[i] == value`: two SSE2 compares. (Left to
/// itself, LLVM turned the portable loop into some forty shuffles and
/// shifts; a tell to one live entity, on one shard without rings, took
/// 31.0 ns instead of 28.3.)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn eq_mask(lanes: &[u32; GROUP_LEN], value: u32) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps,
        _mm_set1_epi32,
    };
    let ptr = lanes.as_ptr().cast::<__m128i>();
    // SAFETY: SSE2 is part of the x86_64 baseline; the two unaligned loads
    // read the 32 bytes of `lanes`.
    let (low, high) = unsafe { (_mm_loadu_si128(ptr), _mm_loadu_si128(ptr.add(1))) };
    // SAFETY: as above (these are safe to call from Rust 1.87 on).
    #[allow(unused_unsafe)]
    unsafe {
        let v = _mm_set1_epi32(value as i32);
        let low = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(low, v))) as u32;
        let high = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(high, v))) as u32;
        low | high << 4
    }
}

/// Bit `i` set where `lanes[i] == value`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn eq_mask(lanes: &[u32; GROUP_LEN], value: u32) -> u32 {
    let mut bits = 0;
    for (i, &lane) in lanes.iter().enumerate() {
        bits |= u32::from(lane == value) << i;
    }
    bits
}

/// Asks the cache for the line of `group` without waiting for it.
#[inline(always)]
fn prefetch_line(group: &Group) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults; the
    // SSE it needs is part of the x86_64 baseline. (Rust 1.87+ calls it safe.)
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(group).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = group;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::mix64;

    /// Slot `i` holds key `keys[i]`, as a table's slab would.
    fn insert(ix: &mut SlotIndex, keys: &mut Vec<u64>, key: u64) {
        let slot = keys.len() as u32;
        let vacancy = ix
            .probe(tag_of(key), |s| keys[s as usize] == key)
            .expect_err("a new key");
        ix.fill(vacancy, slot);
        keys.push(key);
    }

    fn find(ix: &SlotIndex, keys: &[u64], key: u64) -> Option<u32> {
        ix.probe(tag_of(key), |s| keys[s as usize] == key).ok()
    }

    /// Removes the key in `slot`, moving the last one in (a table's swap-remove).
    fn remove(ix: &mut SlotIndex, keys: &mut Vec<u64>, slot: usize) {
        let last = keys.len() - 1;
        ix.remove(tag_of(keys[slot]), slot as u32);
        keys.swap_remove(slot);
        if slot < last {
            ix.relocate(tag_of(keys[slot]), last as u32, slot as u32);
        }
    }

    #[test]
    fn growth_keeps_every_key_findable() {
        let (mut ix, mut keys) = (SlotIndex::new(), Vec::new());
        for k in 0..100_000u64 {
            insert(&mut ix, &mut keys, k * 7919);
        }
        for (slot, &k) in keys.iter().enumerate() {
            assert_eq!(find(&ix, &keys, k), Some(slot as u32));
        }
        assert_eq!(find(&ix, &keys, 1), None);
        // 100 000 entries at a load factor of at most 3/4.
        assert_eq!(ix.groups.len(), 32_768);
    }

    #[test]
    fn churn_reuses_its_room_instead_of_growing() {
        let (mut ix, mut keys) = (SlotIndex::new(), Vec::new());
        for k in 0..1_000u64 {
            insert(&mut ix, &mut keys, k);
        }
        let groups = ix.groups.len();
        // Every removal may leave a tombstone; rebuilding at the same size
        // clears them.
        for k in 1_000..200_000u64 {
            let slot = (mix64(k) % keys.len() as u64) as usize;
            remove(&mut ix, &mut keys, slot);
            insert(&mut ix, &mut keys, k);
        }
        // It may grow once (rebuilding when more than half the load is live
        // doubles), then only purges tombstones.
        assert!(ix.groups.len() <= 2 * groups, "{} groups", ix.groups.len());
        assert_eq!(ix.live, 1_000);
        for (slot, &k) in keys.iter().enumerate() {
            assert_eq!(find(&ix, &keys, k), Some(slot as u32));
        }
        assert_eq!(find(&ix, &keys, 0), None);
    }

    #[test]
    fn a_vacancy_outlived_by_changes_still_places_its_key() {
        let (mut ix, mut keys) = (SlotIndex::new(), Vec::new());
        insert(&mut ix, &mut keys, 1);
        let stale = ix.probe(tag_of(2), |s| keys[s as usize] == 2).unwrap_err();
        // Enough inserts to rebuild the index several times over.
        for k in 3..1_000u64 {
            insert(&mut ix, &mut keys, k);
        }
        ix.fill(stale, keys.len() as u32);
        keys.push(2);
        for (slot, &k) in keys.iter().enumerate() {
            assert_eq!(find(&ix, &keys, k), Some(slot as u32));
        }
    }

    #[test]
    fn entries_sit_near_their_home_group() {
        // Filled to the brink of growth with keys in runs, strides, high bits
        // only and at random: a hash that clusters them, or a probe that skips
        // free entries, would show as long displacements.
        type KeyOf = fn(u64) -> u64;
        let patterns: [(&str, KeyOf); 5] = [
            ("runs", |k| k),
            ("stride 4096", |k| k * 4096),
            ("stride 2^20 + 1", |k| k * ((1 << 20) + 1)),
            ("high bits", |k| k << 40),
            ("random", mix64),
        ];
        for (name, key_of) in patterns {
            let (mut ix, mut keys) = (SlotIndex::new(), Vec::new());
            for k in 0..(8_192 * GROUP_LOAD_MAX as u64 - 1) {
                insert(&mut ix, &mut keys, key_of(k));
            }
            assert_eq!(ix.groups.len(), 8_192);
            let mut total = 0;
            for (g, group) in ix.groups.iter().enumerate() {
                for i in (0..GROUP_LEN).filter(|&i| group.slot(i).is_some()) {
                    let home = ix.home(group.tags[i]);
                    total += (g + ix.groups.len() - home) & (ix.groups.len() - 1);
                }
            }
            let mean = total as f64 / ix.live as f64;
            assert!(
                mean < 0.2,
                "{name}: entries sit {mean} groups past home on average"
            );
        }
    }
}
