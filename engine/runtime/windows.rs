//! Heat windows: each shard's load, its hottest entities and the
//! rebalancer's moves, once per window.

use super::shard_loop::ShardLoop;

impl ShardLoop {
    /// Ends a heat window: publishes this shard's load, lets the shard note
    /// its hottest entities and, by the rebalancing policy, queue moves.
    pub(super) fn end_window(&mut self, now_ns: u64, stopping: bool) {
        let config = &self.shared.config.rebalance;
        let window_ns = config.window_ms * 1_000_000;
        let busy = self.shard.counters().busy_ns;
        let elapsed = now_ns.saturating_sub(self.window_started_ns).max(1);
        self.load = ((busy - self.busy_at_window) as f32 / elapsed as f32).min(1.0);
        let window = (now_ns / window_ns) as u32;
        self.shared.publish_load(self.index, window, self.load);
        let mut policy = config.policy();
        policy.enabled &= !stopping;
        let loads = if policy.enabled {
            self.shared.loads(window)
        } else {
            Vec::new()
        };
        self.shard.end_window(window, &loads, &policy);
        *self.shared.hottest[self.index]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.shard.hottest().to_vec();
        self.window_started_ns = now_ns;
        self.busy_at_window = busy;
        self.next_window_ns = (u64::from(window) + 1) * window_ns;
    }
}
