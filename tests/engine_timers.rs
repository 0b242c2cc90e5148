//! Timers on the real engine: `after` messages arrive in deadline order (ties
//! in the order they were set), `every` repeats until cancelled, a cancelled
//! timer never fires, and timers of different entities on different shards
//! all fire. Durations are small and only order and counts are checked,
//! never how long anything took: a timer due earlier is always handled
//! before one due later, however late the shard runs.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use percore::{Ctx, Entity, TimerId};

use common::{guarded, recv, test_engine};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Logs the labels of the timer messages it receives.
#[derive(Default)]
struct Clock {
    log: Vec<u64>,
    /// Where to send the log once it holds `expect` labels.
    report: Option<(usize, mpsc::Sender<Vec<u64>>)>,
    ticker: Option<TimerId>,
    ticks: u64,
}

#[derive(Clone)]
enum ClockMsg {
    /// Set one `after` timer per `(delay_ms, label)`, in this order; cancel
    /// those whose label is in `cancel`; report the log once it holds
    /// `expect` labels.
    Schedule {
        timers: Vec<(u64, u64)>,
        cancel: Vec<u64>,
        expect: usize,
        report: mpsc::Sender<Vec<u64>>,
    },
    Fired(u64),
    /// Tick every `period_ms`; at the `stop_after`th tick cancel the ticker
    /// and set `after(check_ms)` a `Check`.
    StartTicking {
        period_ms: u64,
        stop_after: u64,
        check_ms: u64,
        report: mpsc::Sender<Vec<u64>>,
    },
    Tick {
        stop_after: u64,
        check_ms: u64,
    },
    /// Report `[ticks, whether cancelling the ticker again found it live]`.
    Check,
}

impl Entity for Clock {
    const KIND: &'static str = "timers.clock";
    type Msg = ClockMsg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Clock::default()
    }

    fn handle(&mut self, msg: ClockMsg, ctx: &mut Ctx<'_, Self>) {
        match msg {
            ClockMsg::Schedule {
                timers,
                cancel,
                expect,
                report,
            } => {
                let ids: Vec<(u64, TimerId)> = timers
                    .iter()
                    .map(|&(delay, label)| (label, ctx.after(ms(delay), ClockMsg::Fired(label))))
                    .collect();
                for (label, id) in ids {
                    if cancel.contains(&label) {
                        assert!(ctx.cancel(id), "a pending timer cancels");
                        assert!(!ctx.cancel(id), "a cancelled timer is gone");
                    }
                }
                self.report = Some((expect, report));
            }
            ClockMsg::Fired(label) => {
                self.log.push(label);
                if let Some((expect, report)) = &self.report {
                    if self.log.len() == *expect {
                        let _ = report.send(self.log.clone());
                    }
                }
            }
            ClockMsg::StartTicking {
                period_ms,
                stop_after,
                check_ms,
                report,
            } => {
                self.report = Some((0, report));
                let tick = ClockMsg::Tick {
                    stop_after,
                    check_ms,
                };
                self.ticker = Some(ctx.every(ms(period_ms), tick));
            }
            ClockMsg::Tick {
                stop_after,
                check_ms,
            } => {
                self.ticks += 1;
                if self.ticks == stop_after {
                    let ticker = self.ticker.expect("ticking");
                    assert!(ctx.cancel(ticker), "a running `every` cancels");
                    // Any tick the cancel failed to stop is due before this.
                    ctx.after(ms(check_ms), ClockMsg::Check);
                }
            }
            ClockMsg::Check => {
                let again = ctx.cancel(self.ticker.expect("ticking"));
                let (_, report) = self.report.as_ref().expect("started");
                let _ = report.send(vec![self.ticks, again as u64]);
            }
        }
    }
}

fn schedule(timers: Vec<(u64, u64)>, cancel: Vec<u64>) -> Vec<u64> {
    let engine = test_engine(1).register::<Clock>().build().unwrap();
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    let expect = timers.len() - cancel.len();
    client
        .tell::<Clock>(
            1,
            ClockMsg::Schedule {
                timers,
                cancel,
                expect,
                report,
            },
        )
        .unwrap();
    recv(&reports, "the timer log")
}

#[test]
fn after_timers_fire_in_deadline_order() {
    // Set in scrambled order; labels are the delays.
    let timers = [7, 2, 9, 1, 5, 3, 8, 4, 6, 10]
        .iter()
        .map(|&d| (d, d))
        .collect();
    assert_eq!(schedule(timers, vec![]), (1..=10).collect::<Vec<_>>());
}

#[test]
fn after_timers_due_at_the_same_time_fire_in_the_order_they_were_set() {
    let timers = vec![(3, 30), (1, 10), (3, 31), (1, 11), (3, 32), (1, 12)];
    assert_eq!(schedule(timers, vec![]), vec![10, 11, 12, 30, 31, 32]);
}

#[test]
fn cancelled_after_timer_never_fires() {
    // 1 is cancelled; 4 is due after it and proves it had every chance to fire.
    let timers = vec![(1, 1), (2, 2), (3, 3), (4, 4)];
    assert_eq!(schedule(timers, vec![1, 3]), vec![2, 4]);
}

#[test]
fn every_repeats_until_cancelled() {
    let engine = test_engine(1).register::<Clock>().build().unwrap();
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    client
        .tell::<Clock>(
            1,
            ClockMsg::StartTicking {
                period_ms: 1,
                stop_after: 5,
                check_ms: 20,
                report,
            },
        )
        .unwrap();
    // Exactly five ticks: a sixth would have been due long before the check.
    // Cancelling again afterwards finds nothing live.
    assert_eq!(recv(&reports, "the tick count"), vec![5, 0]);
    drop(client);
    let metrics = engine.shutdown().unwrap();
    assert_eq!(metrics.total().timers_fired, 5 + 1);
}

#[test]
fn timers_of_many_entities_on_every_shard_all_fire_in_order() {
    let engine = test_engine(2).register::<Clock>().build().unwrap();
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    const CLOCKS: u64 = 20;
    for key in 0..CLOCKS {
        let timers = (1..=5).rev().map(|d| (d, key * 100 + d)).collect();
        client
            .tell::<Clock>(
                key,
                ClockMsg::Schedule {
                    timers,
                    cancel: vec![],
                    expect: 5,
                    report: report.clone(),
                },
            )
            .unwrap();
    }
    let mut logs: Vec<Vec<u64>> = (0..CLOCKS)
        .map(|_| recv(&reports, "a clock's log"))
        .collect();
    logs.sort();
    let expected: Vec<Vec<u64>> = (0..CLOCKS)
        .map(|key| (1..=5).map(|d| key * 100 + d).collect())
        .collect();
    assert_eq!(logs, expected);
    drop(client);
    let metrics = engine.shutdown().unwrap();
    assert_eq!(metrics.total().timers_fired, CLOCKS * 5);
    assert!(
        metrics.shards.iter().all(|s| s.timers_fired > 0),
        "both shards ran timers: {metrics:?}"
    );
}

#[test]
fn shutdown_does_not_wait_for_a_running_every_timer() {
    let engine = test_engine(1).register::<Clock>().build().unwrap();
    let client = engine.client().unwrap();
    let (report, _reports) = mpsc::channel();
    client
        .tell::<Clock>(
            1,
            ClockMsg::StartTicking {
                period_ms: 1,
                // Never reached: the ticker runs until the engine stops.
                stop_after: u64::MAX,
                check_ms: 0,
                report,
            },
        )
        .unwrap();
    let metrics = guarded("shutdown with a live timer", move || engine.shutdown()).unwrap();
    // The ticker was set (the message that set it was handled) and the
    // unfired timer was dropped rather than waited for.
    assert!(metrics.total().handled >= 1);
}
