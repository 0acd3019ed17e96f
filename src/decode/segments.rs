//! A window's tokens → timed segments, and how far the long-form loop moves on. A port of the
//! segment splitting in openai/whisper `transcribe.py` (release 20250625): segments are the
//! spans between consecutive timestamp tokens; an unfinished last segment is dropped and the
//! next window starts at its opening timestamp, so nothing is cut mid-word.
//!
//! In: sampled tokens (no end-of-text), the first timestamp id, the window length in mel
//! frames. Out: segments with times relative to the window start, and the mel frames to advance.

/// Timestamp tokens per second (one per 0.02 s).
const TIMESTAMPS_PER_SECOND: u32 = 50;

/// Mel frames per timestamp step (0.02 s / 10 ms): Whisper's `input_stride`.
pub const FRAMES_PER_TIMESTAMP: usize = 2;

/// One span of a window's output.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedTokens {
    /// Seconds from the window start.
    pub start_s: f64,
    pub end_s: f64,
    /// The span's tokens, timestamps included.
    pub tokens: Vec<u32>,
}

/// How a window's output splits.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSplit {
    pub segments: Vec<TimedTokens>,
    /// Mel frames to move the window start by.
    pub advance_frames: usize,
    /// The output ended with a single timestamp: no speech after it in this window.
    pub single_timestamp_ending: bool,
}

fn seconds(token: u32, timestamp_begin: u32) -> f64 {
    // 50 timestamps per second; dividing keeps 2.00 exact (0.02 is not).
    f64::from(token.saturating_sub(timestamp_begin)) / f64::from(TIMESTAMPS_PER_SECOND)
}

/// Split `tokens` decoded from a window of `window_frames` mel frames.
pub fn split_window(tokens: &[u32], timestamp_begin: u32, window_frames: usize) -> WindowSplit {
    let is_ts: Vec<bool> = tokens.iter().map(|&t| t >= timestamp_begin).collect();
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
    // Positions just after each pair of consecutive timestamps.
    let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
    let window_s = window_frames as f64 / 100.0;

    if consecutive.is_empty() {
        // No closed segment: everything is one segment up to the last timestamp (or the window end).
        let end_s = match tokens.iter().rev().find(|&&t| t >= timestamp_begin) {
            Some(&last) if last != timestamp_begin => seconds(last, timestamp_begin),
            _ => window_s,
        };
        let segments = if tokens.is_empty() {
            Vec::new()
        } else {
            vec![TimedTokens {
                start_s: 0.0,
                end_s,
                tokens: tokens.to_vec(),
            }]
        };
        return WindowSplit {
            segments,
            advance_frames: window_frames,
            single_timestamp_ending,
        };
    }

    let mut slices = consecutive;
    if single_timestamp_ending {
        slices.push(n);
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut last = 0;
    for &cut in &slices {
        let span = &tokens[last..cut];
        if let (Some(&first), Some(&end)) = (span.first(), span.last()) {
            segments.push(TimedTokens {
                start_s: seconds(first, timestamp_begin),
                end_s: seconds(end, timestamp_begin),
                tokens: span.to_vec(),
            });
        }
        last = cut;
    }
    let advance_frames = if single_timestamp_ending {
        window_frames
    } else {
        // Resume at the last closing timestamp; the unfinished tail is decoded again next window.
        let resume = tokens[last - 1].saturating_sub(timestamp_begin) as usize * FRAMES_PER_TIMESTAMP;
        // Guard: a window that cannot advance would loop forever.
        if resume == 0 {
            window_frames
        } else {
            resume.min(window_frames)
        }
    };
    WindowSplit {
        segments,
        advance_frames,
        single_timestamp_ending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u32 = 50363;
    fn ts(seconds: f64) -> u32 {
        TB + (seconds / 0.02).round() as u32
    }

    #[test]
    fn closed_segments_and_single_timestamp_ending() {
        // <0.00> a b <2.00><2.00> c <4.50>  (ends with a single timestamp)
        let tokens = [ts(0.0), 10, 11, ts(2.0), ts(2.0), 12, ts(4.5)];
        let s = split_window(&tokens, TB, 3000);
        assert!(s.single_timestamp_ending);
        assert_eq!(s.segments.len(), 2);
        assert_eq!((s.segments[0].start_s, s.segments[0].end_s), (0.0, 2.0));
        assert_eq!(s.segments[0].tokens, vec![ts(0.0), 10, 11, ts(2.0)]);
        assert!((s.segments[1].start_s - 2.0).abs() < 1e-9 && (s.segments[1].end_s - 4.5).abs() < 1e-9);
        assert_eq!(s.advance_frames, 3000);
    }

    #[test]
    fn unfinished_segment_is_dropped_and_the_window_resumes_at_its_start() {
        // <0.00> a <3.00><3.00> b c   (cut off by the window end)
        let tokens = [ts(0.0), 10, ts(3.0), ts(3.0), 11, 12];
        let s = split_window(&tokens, TB, 3000);
        assert!(!s.single_timestamp_ending);
        assert_eq!(s.segments.len(), 1);
        assert_eq!(s.advance_frames, 300, "3.00 s = 300 mel frames");
    }

    #[test]
    fn no_pair_uses_the_last_timestamp_as_the_end() {
        let tokens = [ts(0.0), 10, 11, ts(1.5)];
        let s = split_window(&tokens, TB, 800);
        assert_eq!(s.segments.len(), 1);
        assert!((s.segments[0].end_s - 1.5).abs() < 1e-9);
        assert_eq!(s.advance_frames, 800);
    }

    #[test]
    fn no_timestamps_spans_the_window() {
        let s = split_window(&[10, 11], TB, 1000);
        assert_eq!(s.segments[0].end_s, 10.0);
        assert!(split_window(&[], TB, 1000).segments.is_empty());
    }
}
