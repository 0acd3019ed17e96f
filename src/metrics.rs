//! Process-wide counters for monitoring: how much audio was transcribed and how long decoding
//! took, recorded where the work happens (the inference worker, the stream sessions) and read
//! by `steno serve`'s `/metrics` (Prometheus text format, [`render_prometheus`]).
//!
//! In: [`record_decode`] (a finished job's kind and duration) and [`add_audio_seconds`]. Out: a
//! [`Snapshot`]. Lock-free atomics, so recording costs a few nanoseconds on any thread; one
//! registry per process, like Prometheus clients' default registry (every engine in the process
//! adds to the same totals).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the decode-latency histogram's buckets, in seconds (then +Inf).
pub const LATENCY_BUCKETS_S: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// What a recorded decode was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKind {
    /// One window of a live stream (a partial or a final).
    LiveWindow,
    /// A whole batch job (a file or an upload).
    BatchJob,
}

impl DecodeKind {
    const ALL: [DecodeKind; 2] = [DecodeKind::LiveWindow, DecodeKind::BatchJob];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            DecodeKind::LiveWindow => "live_window",
            DecodeKind::BatchJob => "batch_job",
        }
    }

    fn index(self) -> usize {
        match self {
            DecodeKind::LiveWindow => 0,
            DecodeKind::BatchJob => 1,
        }
    }
}

struct Histogram {
    /// Observations at or below each bound (not cumulative here; summed when read).
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_S.len() + 1],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

static DECODE: [Histogram; 2] = [Histogram::new(), Histogram::new()];
/// Audio seconds, in microseconds (an integer, so concurrent adds are exact).
static AUDIO_US: AtomicU64 = AtomicU64::new(0);

/// Records one decode of `kind` that took `took`.
pub fn record_decode(kind: DecodeKind, took: Duration) {
    let h = &DECODE[kind.index()];
    let s = took.as_secs_f64();
    let bucket = LATENCY_BUCKETS_S
        .iter()
        .position(|&bound| s <= bound)
        .unwrap_or(LATENCY_BUCKETS_S.len());
    if let Some(b) = h.buckets.get(bucket) {
        b.fetch_add(1, Ordering::Relaxed);
    }
    h.count.fetch_add(1, Ordering::Relaxed);
    h.sum_us
        .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Adds `seconds` of audio received for transcription (live or batch).
pub fn add_audio_seconds(seconds: f64) {
    if seconds.is_finite() && seconds > 0.0 {
        AUDIO_US.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// A decode-latency histogram as read.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    pub kind: DecodeKind,
    /// Cumulative counts per bound of [`LATENCY_BUCKETS_S`], then the +Inf count.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_s: f64,
}

/// Everything the registry holds, read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub audio_seconds: f64,
    pub decode: Vec<LatencySnapshot>,
}

/// Reads the registry.
pub fn snapshot() -> Snapshot {
    let decode = DecodeKind::ALL
        .iter()
        .map(|&kind| {
            let h = &DECODE[kind.index()];
            let mut running = 0;
            let cumulative = h
                .buckets
                .iter()
                .map(|b| {
                    running += b.load(Ordering::Relaxed);
                    running
                })
                .collect();
            LatencySnapshot {
                kind,
                cumulative,
                count: h.count.load(Ordering::Relaxed),
                sum_s: h.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            }
        })
        .collect();
    Snapshot {
        audio_seconds: AUDIO_US.load(Ordering::Relaxed) as f64 / 1e6,
        decode,
    }
}

/// Gauges the caller knows (the server's streams and queues), rendered with the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub streams: u64,
    pub uploads: u64,
    pub queue_depth: u64,
}

/// The Prometheus text exposition format (version 0.0.4) of `gauges` and `snapshot`.
pub fn render_prometheus(gauges: Gauges, snapshot: &Snapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge(
        "steno_streams",
        "Live streams open now (WebSocket, Realtime, Wyoming).",
        gauges.streams,
    );
    gauge(
        "steno_uploads",
        "HTTP transcriptions in progress or queued.",
        gauges.uploads,
    );
    gauge(
        "steno_queue_depth",
        "Upload jobs waiting for an engine.",
        gauges.queue_depth,
    );
    let _ = writeln!(
        out,
        "# HELP steno_audio_seconds_total Seconds of audio received for transcription.\n\
         # TYPE steno_audio_seconds_total counter\nsteno_audio_seconds_total {}",
        snapshot.audio_seconds
    );
    let name = "steno_decode_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Decode latency: one live window (partial or final), or one whole batch job.\n\
         # TYPE {name} histogram"
    );
    for h in &snapshot.decode {
        let kind = h.kind.label();
        for (bound, count) in LATENCY_BUCKETS_S.iter().zip(&h.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\"}} {}", h.sum_s);
        let _ = writeln!(out, "{name}_count{{kind=\"{kind}\"}} {}", h.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_the_text_is_prometheus() {
        // The registry is process-wide: read deltas around what this test records.
        let before = snapshot();
        record_decode(DecodeKind::LiveWindow, Duration::from_millis(30));
        record_decode(DecodeKind::LiveWindow, Duration::from_millis(400));
        record_decode(DecodeKind::LiveWindow, Duration::from_secs(100));
        add_audio_seconds(1.5);
        add_audio_seconds(f64::NAN);
        let after = snapshot();
        let (b, a) = (&before.decode[0], &after.decode[0]);
        let delta: Vec<u64> = a.cumulative.iter().zip(&b.cumulative).map(|(x, y)| x - y).collect();
        // ≤0.025: 0, ≤0.05: 1 (30 ms), … ≤0.5: 2 (400 ms), … ≤30: 2, +Inf: 3 (100 s).
        assert_eq!(delta, [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]);
        assert_eq!(a.count - b.count, 3);
        assert!((a.sum_s - b.sum_s - 100.43).abs() < 1e-6);
        assert!(after.audio_seconds - before.audio_seconds >= 1.5 - 1e-9);

        let text = render_prometheus(
            Gauges {
                streams: 2,
                uploads: 1,
                queue_depth: 0,
            },
            &after,
        );
        assert!(text.contains("# TYPE steno_streams gauge\nsteno_streams 2\n"), "{text}");
        assert!(text.contains("# TYPE steno_decode_seconds histogram\n"), "{text}");
        assert!(
            text.contains("steno_decode_seconds_bucket{kind=\"live_window\",le=\"0.05\"} "),
            "{text}"
        );
        assert!(text.contains(&format!(
            "steno_decode_seconds_bucket{{kind=\"live_window\",le=\"+Inf\"}} {}\n",
            a.count
        )));
        assert!(
            text.contains("steno_decode_seconds_count{kind=\"batch_job\"} "),
            "{text}"
        );
        // Every sample line is `name{labels} value` or `name value` with a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
