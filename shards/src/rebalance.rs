//! Layer 5, protocol: which entities a busy shard moves, and where — a pure
//! function of the shards' loads, this shard's hottest entities and the
//! policy. The migration protocol carries the moves out.

use crate::id::EntityId;
use crate::services::heat::Hot;

/// When and how much the automatic rebalancer moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebalancePolicy {
    /// Whether it moves anything at all.
    pub enabled: bool,
    /// A shard moves entities away when its load (share of the window spent
    /// handling messages, 0..1) exceeds the least loaded shard's by at least
    /// this much.
    pub min_gap: f32,
    /// ... for this many windows in a row (hysteresis: a passing burst moves
    /// nothing). After a round of moves the count starts again.
    pub sustain_windows: u32,
    /// Most entities one shard moves per window.
    pub max_moves_per_window: u32,
    /// An entity that arrived within this many windows is not moved again.
    pub cooldown_windows: u32,
}

impl Default for RebalancePolicy {
    fn default() -> Self {
        RebalancePolicy {
            enabled: false,
            min_gap: 0.2,
            sustain_windows: 3,
            max_moves_per_window: 4,
            cooldown_windows: 20,
        }
    }
}

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Windows in a row this shard has been clearly the busiest, after this one.
    pub(crate) streak: u32,
    /// The least loaded other shard: where `moves` go.
    pub(crate) target: usize,
    /// The entities to move, hottest first.
    pub(crate) moves: Vec<EntityId>,
}

/// Decides the moves of shard `me` at the end of a window. `loads` holds
/// every shard's share of the window spent handling messages (0..1),
/// `handled` how many messages `me` handled in it, `candidates` its hottest
/// entities that may move now, hottest first, and `streak` how many windows
/// in a row it was clearly the busiest before this one.
///
/// Moves about half the gap to the least loaded shard, hottest first, never
/// an entity whose load alone exceeds what is left of that (it would only
/// move the hot spot), at most `policy.max_moves_per_window`, and only
/// after `policy.sustain_windows` windows in a row over `policy.min_gap`.
pub(crate) fn plan(
    me: usize,
    loads: &[f32],
    handled: u64,
    candidates: &[Hot],
    policy: &RebalancePolicy,
    streak: u32,
) -> Plan {
    let mut plan = Plan {
        streak: 0,
        target: me,
        moves: Vec::new(),
    };
    if !policy.enabled || loads.len() < 2 || handled == 0 {
        return plan;
    }
    let mine = loads[me];
    let (least, least_load) = loads
        .iter()
        .enumerate()
        .filter(|&(s, _)| s != me)
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(s, &l)| (s, l))
        .expect("two shards or more");
    if mine - least_load < policy.min_gap {
        return plan;
    }
    plan.streak = streak + 1;
    plan.target = least;
    if plan.streak < policy.sustain_windows {
        return plan;
    }
    let mut budget = (mine - least_load) / 2.0;
    for hot in candidates {
        if plan.moves.len() >= policy.max_moves_per_window as usize || budget <= 0.0 {
            break;
        }
        let share = hot.heat / handled as f32 * mine;
        if share > budget {
            continue;
        }
        budget -= share;
        plan.moves.push(hot.id());
    }
    if !plan.moves.is_empty() {
        plan.streak = 0;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(key: u64, heat: f32) -> Hot {
        Hot { heat, kind: 0, key }
    }

    fn policy() -> RebalancePolicy {
        RebalancePolicy {
            enabled: true,
            sustain_windows: 2,
            ..RebalancePolicy::default()
        }
    }

    #[test]
    fn a_gap_must_last_before_anything_moves() {
        let c = [hot(1, 10.0)];
        let first = plan(0, &[0.9, 0.1], 100, &c, &policy(), 0);
        assert_eq!((first.streak, first.moves.len()), (1, 0));
        let second = plan(0, &[0.9, 0.1], 100, &c, &policy(), first.streak);
        assert_eq!(second.moves, vec![EntityId::new(0, 1)]);
        assert_eq!((second.target, second.streak), (1, 0));
    }

    #[test]
    fn an_entity_hotter_than_the_gap_stays() {
        // Its share (90 of 100 messages at load 0.9) exceeds half the gap.
        let c = [hot(1, 90.0), hot(2, 10.0)];
        let p = plan(0, &[0.9, 0.1], 100, &c, &policy(), 5);
        assert_eq!(p.moves, vec![EntityId::new(0, 2)]);
    }

    #[test]
    fn no_gap_resets_the_streak() {
        let p = plan(0, &[0.5, 0.45], 100, &[hot(1, 1.0)], &policy(), 7);
        assert_eq!(
            p,
            Plan {
                streak: 0,
                target: 0,
                moves: vec![]
            }
        );
    }
}
