//! Measurements shared by every system: figures, rates, resident memory, CPU time and
//! latency percentiles.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// One measured number: a metric name (unit last, e.g. `p50_ns`) and its value.
///
/// The runner attaches the system and workload names; a workload function only says
/// what it measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figure {
    /// Metric name, unit last: `msgs_per_s`, `p99_ns`, `bytes_per_entity`, `cpu_pct`.
    pub metric: &'static str,
    /// The value, in the unit the metric name ends with.
    pub value: f64,
}

impl Figure {
    /// A figure named `metric` with `value`.
    pub fn new(metric: &'static str, value: f64) -> Self {
        Self { metric, value }
    }
}

/// `count` events over `elapsed`, as a per-second rate named `metric`.
///
/// # Panics
///
/// Panics if `elapsed` is zero: a workload that finishes in no time measured nothing.
pub fn rate(metric: &'static str, count: u64, elapsed: Duration) -> Figure {
    assert!(!elapsed.is_zero(), "{metric}: elapsed time is zero");
    Figure::new(metric, count as f64 / elapsed.as_secs_f64())
}

/// `bytes` over `elapsed`, in gigabytes (10^9 bytes) per second, named `metric`.
///
/// # Panics
///
/// Panics if `elapsed` is zero, as [`rate`] does.
pub fn gb_per_s(metric: &'static str, bytes: u64, elapsed: Duration) -> Figure {
    let mut figure = rate(metric, bytes, elapsed);
    figure.value /= 1e9;
    figure
}

/// The figures of the `activate` workload: `per_s` and `bytes_per_entity`.
///
/// `rss_before_bytes` and `rss_after_bytes` come from [`rss_bytes`], taken before the
/// first entity is created and after the last one is live (and still referenced).
pub fn activation(
    count: u64,
    elapsed: Duration,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
) -> Vec<Figure> {
    let grown_bytes = rss_after_bytes.saturating_sub(rss_before_bytes);
    vec![
        rate("per_s", count, elapsed),
        Figure::new("bytes_per_entity", grown_bytes as f64 / count as f64),
    ]
}

/// Time a freshly started system gets to reach its resting state (threads parked,
/// start-up work done) before the `idle` workload starts watching it.
pub const IDLE_SETTLE: Duration = Duration::from_millis(100);

/// Watches this process's CPU use for the `idle` workload, from [`IdleWatch::start`]
/// to [`IdleWatch::finish`].
pub struct IdleWatch {
    cpu_before: Duration,
    wall_before: Instant,
}

impl IdleWatch {
    /// Starts watching now.
    pub fn start() -> Self {
        Self {
            cpu_before: cpu_time(),
            wall_before: Instant::now(),
        }
    }

    /// Stops watching and returns `cpu_pct`: CPU time used by every thread of the
    /// process while watched, as a percentage of one core.
    pub fn finish(self) -> Vec<Figure> {
        let cpu = cpu_time() - self.cpu_before;
        let wall = self.wall_before.elapsed();
        vec![Figure::new(
            "cpu_pct",
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        )]
    }
}

/// The whole `idle` measurement for systems that run on their own threads: waits
/// [`IDLE_SETTLE`], then watches for `window` while the calling thread sleeps.
pub fn watch_idle(window: Duration) -> Vec<Figure> {
    std::thread::sleep(IDLE_SETTLE);
    let watch = IdleWatch::start();
    std::thread::sleep(window);
    watch.finish()
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
///
/// # Panics
///
/// Panics if `/proc/self/statm` cannot be read or parsed (not Linux).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("/proc/self/statm has a resident field");
    resident_pages * page_size_bytes()
}

fn page_size_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// User plus system CPU time consumed so far by every thread of this process
/// (`getrusage(RUSAGE_SELF)`).
///
/// # Panics
///
/// Panics if `getrusage` fails, which it cannot with these arguments.
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory the size of a `rusage`, which
    // getrusage fills in; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
    // SAFETY: getrusage returned 0, so it initialised the whole struct (and it was
    // zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let to_duration = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

/// Round-trip latencies of the `ask` workload, recorded in an hdrhistogram with three
/// significant digits from 1 ns to 100 s.
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// Highest latency the histogram tracks; anything above is clamped to it.
const LATENCY_NS_MAX: u64 = 100_000_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("valid histogram bounds"),
        }
    }

    /// Records one round trip.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(LATENCY_NS_MAX);
        self.histogram
            .saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }

    /// Number of round trips recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The figures of the `ask` workload: `p50_ns`, `p99_ns` and `p999_ns`.
    pub fn figures(&self) -> Vec<Figure> {
        [("p50_ns", 0.50), ("p99_ns", 0.99), ("p999_ns", 0.999)]
            .into_iter()
            .map(|(metric, q)| Figure::new(metric, self.histogram.value_at_quantile(q) as f64))
            .collect()
    }
}

/// Median of `values` (mean of the two middle ones for an even count).
///
/// # Panics
///
/// Panics if `values` is empty or holds a NaN.
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN figures"));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn rss_and_cpu_time_are_readable() {
        assert!(rss_bytes() > 0);
        let _ = cpu_time();
    }

    #[test]
    fn latencies_report_three_percentiles() {
        let mut latencies = Latencies::new();
        for ns in 1..=1000 {
            latencies.record(Duration::from_nanos(ns));
        }
        let figures = latencies.figures();
        assert_eq!(figures.len(), 3);
        assert!((figures[0].value - 500.0).abs() < 2.0);
    }
}
