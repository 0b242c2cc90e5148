//! Layer 2, services: heat — how busy each entity is, per window, and the
//! hottest entities of the current window (what the rebalancer moves).

use crate::id::{EntityId, KindId};
use crate::limits::HOT_LIST_LEN;

/// Heat of one entity: messages handled per window, smoothed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeatCell {
    pub(crate) window: u32,
    pub(crate) count: u32,
    smoothed: f32,
}

/// Weight of the newest window in the smoothed heat.
const HEAT_ALPHA: f32 = 0.5;

impl HeatCell {
    /// Folds the windows since the last one this entity was handled in.
    /// Returns the smoothed heat as of the end of the last window.
    #[inline]
    pub(crate) fn roll(&mut self, now: u32) -> f32 {
        if now > self.window {
            let gap = now - self.window;
            let mut s = HEAT_ALPHA * self.count as f32 + (1.0 - HEAT_ALPHA) * self.smoothed;
            if gap > 1 {
                s *= (1.0 - HEAT_ALPHA).powi(gap.min(64) as i32 - 1);
            }
            self.smoothed = s;
            self.count = 0;
            self.window = now;
        }
        self.smoothed
    }
}

/// One of a shard's hottest entities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hot {
    /// Smoothed messages per window.
    pub heat: f32,
    /// Its kind.
    pub kind: KindId,
    /// Its key.
    pub key: u64,
}

impl Hot {
    /// The entity.
    #[inline]
    pub fn id(&self) -> EntityId {
        EntityId::new(self.kind, self.key)
    }
}

/// The current heat window and its hottest entities (each entity is offered
/// once per window, on its first message). At most [`HOT_LIST_LEN`].
#[derive(Default)]
pub(crate) struct Heat {
    window: u32,
    hot: Vec<Hot>,
}

impl Heat {
    /// Index of the current heat window.
    #[inline]
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// A new window begins (windows never go back).
    pub(crate) fn begin_window(&mut self, window: u32) {
        self.window = window.max(self.window);
    }

    /// Offers an entity whose smoothed heat is `heat` to the hot list.
    #[inline]
    pub(crate) fn offer(&mut self, heat: f32, kind: KindId, key: u64) {
        if heat <= 0.0 {
            return;
        }
        let hot = Hot { heat, kind, key };
        if self.hot.len() < HOT_LIST_LEN {
            self.hot.push(hot);
            return;
        }
        let (i, min) = self
            .hot
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.heat.total_cmp(&b.1.heat))
            .map(|(i, h)| (i, h.heat))
            .expect("the list is full");
        if heat > min {
            self.hot[i] = hot;
        }
    }

    /// Takes the window's hottest entities, hottest first.
    pub(crate) fn take_sorted(&mut self) -> Vec<Hot> {
        let mut list = std::mem::take(&mut self.hot);
        list.sort_by(|a, b| b.heat.total_cmp(&a.heat));
        list
    }
}
