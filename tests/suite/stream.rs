//! The live streaming engine on the real models: the event invariants (committed text only
//! grows, each final begins with the last committed text, one final per utterance, times on
//! the audio clock and monotonic), determinism in lockstep, silence, the end of input, the
//! LocalAgreement-2 path on the sherpa-onnx layout, a batch job beside a live stream, and the
//! `stream` and `listen` commands (the latter on an ALSA file device, no sound card needed).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steno::stream::{Pacing, StreamConfig, StreamEvent, StreamSession, StreamStats, TimedEvent};
use steno::{Engine, ModelVariant, TranscribeOptions};

use super::common::*;

fn lockstep() -> StreamConfig {
    StreamConfig {
        pacing: Pacing::Lockstep,
        ..StreamConfig::default()
    }
}

/// Stream `samples` (16 kHz) through a new session and collect every event.
fn stream(engine: &Engine, config: StreamConfig, samples: &[f32]) -> Vec<TimedEvent> {
    let mut session = StreamSession::start(engine, config).expect("stream starts");
    let events = session.events().clone();
    let collector = std::thread::spawn(move || events.iter().collect::<Vec<_>>());
    for chunk in samples.chunks(1_600) {
        session.push(chunk, 16_000).expect("push");
    }
    session.finish();
    let events = collector.join().expect("collector");
    drop(session);
    events
}

fn jfk() -> Vec<f32> {
    steno::audio::read_audio(&sample("jfk.wav")).expect("jfk").samples
}

fn finals(events: &[TimedEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            StreamEvent::Final { utterance, text, .. } => Some((*utterance, text.clone())),
            _ => None,
        })
        .collect()
}

/// The invariants every stream must keep.
fn assert_invariants(events: &[TimedEvent]) {
    let mut committed: BTreeMap<u64, String> = BTreeMap::new();
    let mut finals: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut last_wall, mut last_end, mut last_utterance) = (0.0f64, 0.0f64, None::<u64>);
    for e in events {
        assert!(e.wall_ms >= last_wall, "emission times go forward");
        last_wall = e.wall_ms;
        match &e.event {
            StreamEvent::Partial {
                utterance,
                committed: now,
                start,
                end,
                ..
            } => {
                assert!(
                    !finals.contains_key(utterance),
                    "no partial after the final of {utterance}"
                );
                let before = committed.entry(*utterance).or_default();
                assert!(
                    now.starts_with(before.as_str()),
                    "committed text only grows: {before:?} -> {now:?}"
                );
                *before = now.clone();
                assert!(start <= end && *end >= last_end, "times are monotonic");
                last_end = *end;
                assert!(last_utterance.is_none_or(|u| *utterance >= u), "utterances in order");
                last_utterance = Some(*utterance);
            }
            StreamEvent::Final {
                utterance,
                text,
                start,
                end,
                segments,
                ..
            } => {
                *finals.entry(*utterance).or_default() += 1;
                let last = committed.get(utterance).cloned().unwrap_or_default();
                assert!(
                    text.starts_with(&last),
                    "the final begins with the last committed text: {last:?} / {text:?}"
                );
                assert!(start <= end && *end >= last_end, "times are monotonic");
                last_end = *end;
                assert_eq!(segments.len(), 1);
                assert!(last_utterance.is_none_or(|u| *utterance >= u), "utterances in order");
                last_utterance = Some(*utterance);
            }
            _ => {}
        }
    }
    assert!(
        finals.values().all(|&n| n == 1),
        "exactly one final per utterance: {finals:?}"
    );
    for u in committed.keys() {
        assert!(
            finals.contains_key(u),
            "utterance {u} showed text but never got a final"
        );
    }
}

#[test]
fn jfk_streams_with_partials_and_finals_that_keep_the_invariants() {
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    let events = stream(&engine, lockstep(), &jfk());
    assert_invariants(&events);
    let partials = events
        .iter()
        .filter(|e| matches!(e.event, StreamEvent::Partial { .. }))
        .count();
    assert!(partials >= 5, "partials come every hop: {partials}");
    let committed_before_final = events
        .iter()
        .any(|e| matches!(&e.event, StreamEvent::Partial { committed, .. } if !committed.is_empty()));
    assert!(committed_before_final, "AlignAtt commits words before the final");
    let text: Vec<String> = finals(&events).into_iter().map(|f| f.1).collect();
    let hypothesis = normalizer().normalize(&text.join(" "));
    let errors = steno::eval::wer::word_errors(JFK_NORMALIZED, &hypothesis);
    assert!(errors.rate() <= 0.1, "WER {} on jfk: {hypothesis}", errors.rate());
    assert!(
        hypothesis.ends_with("ask what you can do for your country"),
        "{hypothesis}"
    );
    // Word times on the audio clock, inside the utterance.
    for e in &events {
        if let StreamEvent::Final { start, end, words, .. } = &e.event {
            let words = words.as_ref().expect("tiny.en has cross_qk: finals carry words");
            assert!(!words.is_empty());
            for w in words {
                assert!(
                    w.start >= start - 0.01 && w.end <= end + 0.01 && w.start <= w.end,
                    "{w:?}"
                );
            }
        }
    }
    let stats = last_stats(&events);
    assert!((stats.audio_s - 11.0).abs() < 0.1, "{stats:?}");
    assert_eq!(stats.dropped_samples, 0);
    // JFK pauses between phrases: the partial decoded as a pause begins is kept by the worker,
    // and the final that the pause becomes reuses it (no encoder run).
    assert!(
        stats.reused_finals >= 1 && stats.reused_finals <= stats.final_jobs,
        "finals reuse the window decoded on their pause: {stats:?}"
    );
}

/// Push `samples` 20 ms at a time on the wall clock, as a capture callback would.
fn stream_at_real_time(engine: &Engine, config: StreamConfig, samples: &[f32]) -> Vec<TimedEvent> {
    let mut session = StreamSession::start(engine, config).expect("stream starts");
    let events = session.events().clone();
    let collector = std::thread::spawn(move || events.iter().collect::<Vec<_>>());
    let sender = session.sender().expect("sender");
    let started = Instant::now();
    for (i, chunk) in samples.chunks(320).enumerate() {
        let due = Duration::from_millis(20 * i as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        assert!(
            sender.try_push(chunk, 16_000),
            "the input queue never fills at real time"
        );
    }
    session.finish();
    collector.join().expect("collector")
}

fn last_stats(events: &[TimedEvent]) -> StreamStats {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            StreamEvent::Stats(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a stats event at the end")
}

#[test]
fn live_pacing_at_real_time_keeps_every_utterance() {
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    let samples = jfk();
    let mut partial_jobs = Vec::new();
    // The default, and partials held to a twentieth of the worker's time (a 50 ms decode
    // then rests 950 ms, longer than the 500 ms hop): fewer partials, the same finals.
    for max_duty_cycle in [StreamConfig::default().max_duty_cycle, 0.05] {
        let config = StreamConfig {
            max_duty_cycle,
            ..StreamConfig::default()
        };
        let events = stream_at_real_time(&engine, config, &samples);
        assert_invariants(&events);
        let text: Vec<String> = finals(&events).into_iter().map(|f| f.1).collect();
        let hypothesis = normalizer().normalize(&text.join(" "));
        let errors = steno::eval::wer::word_errors(JFK_NORMALIZED, &hypothesis);
        assert!(
            errors.rate() <= 0.1,
            "WER {} at real time, max_duty_cycle {max_duty_cycle}: {hypothesis}",
            errors.rate()
        );
        partial_jobs.push(last_stats(&events).partial_jobs);
    }
    assert!(
        partial_jobs[1] < partial_jobs[0],
        "a duty cycle of 0.05 spaces the partials out: {partial_jobs:?} partial jobs"
    );
}

#[test]
fn lockstep_streams_are_deterministic() {
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    let strip = |events: Vec<TimedEvent>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e.event {
                StreamEvent::Partial {
                    committed, tentative, ..
                } => Some(format!("P {committed} | {tentative}")),
                StreamEvent::Final { text, start, end, .. } => Some(format!("F {text} {start} {end}")),
                _ => None,
            })
            .collect()
    };
    let samples = jfk();
    let a = strip(stream(&engine, lockstep(), &samples));
    let b = strip(stream(&engine, lockstep(), &samples));
    assert_eq!(a, b);
}

#[test]
fn silence_and_noise_give_no_text() {
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    let mut samples = vec![0.0f32; 16_000 * 3];
    samples.extend(white_noise(0.003, 16_000 * 3));
    let events = stream(&engine, lockstep(), &samples);
    let texts: Vec<&TimedEvent> = events
        .iter()
        .filter(|e| matches!(e.event, StreamEvent::Partial { .. } | StreamEvent::Final { .. }))
        .collect();
    assert!(texts.is_empty(), "{texts:?}");
    assert!(events.iter().any(|e| matches!(e.event, StreamEvent::Stats(_))));
}

/// "Experience proves this." (2.0 s), 1.5 s of silence, "He hoped there would be stew for
/// dinner…" (10.4 s), 1.5 s of silence: a two-sentence turn.
fn two_utterances() -> Vec<f32> {
    let read = |name: &str| steno::audio::read_audio(&sample(name)).expect(name).samples;
    let gap = vec![0.0f32; 24_000];
    [
        read("2830-3980-0043.wav"),
        gap.clone(),
        read("1089-134686-0000.wav"),
        gap,
    ]
    .concat()
}

#[test]
fn an_utterance_after_a_finished_sentence_is_not_lost_to_its_context() {
    // With hops of 5 s, the second utterance's first window comes late and holds most of it.
    // Led by the first final as context ("Experience proves this."), Whisper ended the text
    // where the context did, and the final came out empty. The utterance must then be decoded
    // on its own.
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    for hop_ms in [500, 5_000, 10_000] {
        let config = StreamConfig { hop_ms, ..lockstep() };
        let events = stream(&engine, config, &two_utterances());
        assert_invariants(&events);
        let texts: Vec<String> = finals(&events)
            .into_iter()
            .map(|f| normalizer().normalize(&f.1))
            .collect();
        assert_eq!(texts.len(), 2, "hop {hop_ms} ms: {texts:?}");
        assert!(
            texts[0].contains("experience proves this"),
            "hop {hop_ms} ms: {texts:?}"
        );
        assert!(
            texts[1].starts_with("he hoped there would be stew for dinner"),
            "hop {hop_ms} ms: {texts:?}"
        );
    }
}

#[test]
fn end_of_input_flushes_the_last_words_as_a_final() {
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    // Cut inside "ask what you can do for your country": no silence for the VAD to end on.
    let samples = jfk();
    let cut = &samples[..(16_000.0 * 9.9) as usize];
    let events = stream(&engine, lockstep(), cut);
    assert_invariants(&events);
    let last = finals(&events).pop().expect("a final at the end of input").1;
    assert!(
        normalizer().normalize(&last).starts_with("ask what you can do"),
        "{last}"
    );
}

#[test]
fn flush_and_discard_end_turns_and_the_stream_goes_on() {
    use steno::stream::EndReason;
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    let config = StreamConfig {
        turn_events: true,
        ..lockstep()
    };
    let mut session = StreamSession::start(&engine, config).expect("stream starts");
    let events = session.events().clone();
    let collector = std::thread::spawn(move || events.iter().collect::<Vec<_>>());
    let samples = jfk();
    let at = |s: f64| (16_000.0 * s) as usize;
    let push = |part: &[f32]| {
        for chunk in part.chunks(1_600) {
            session.push(chunk, 16_000).expect("push");
        }
    };
    // Flush right after "ask not", discard inside "what your country can do for you" (5.3 to
    // 7.7 s), then the rest to the end.
    push(&samples[..at(4.5)]);
    session.flush().expect("flush");
    push(&samples[at(4.5)..at(6.3)]);
    session.discard().expect("discard");
    push(&samples[at(6.3)..]);
    session.finish();
    let events: Vec<StreamEvent> = collector
        .join()
        .expect("collector")
        .into_iter()
        .map(|e| e.event)
        .collect();
    drop(session);

    let flushed: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i], StreamEvent::Flushed { .. }))
        .collect();
    assert_eq!(flushed.len(), 2, "{events:#?}");
    let (mut started, mut stopped, mut finals) = (Vec::new(), Vec::new(), Vec::new());
    for (i, e) in events.iter().enumerate() {
        match e {
            StreamEvent::SpeechStarted { utterance, .. } => started.push((*utterance, i)),
            StreamEvent::SpeechStopped { utterance, .. } => {
                assert!(
                    started.iter().any(|s| s.0 == *utterance),
                    "stopped before started: {utterance}"
                );
                stopped.push((*utterance, i));
            }
            StreamEvent::Final { utterance, .. } | StreamEvent::Partial { utterance, .. } => {
                assert!(
                    started.iter().any(|s| s.0 == *utterance),
                    "{e:?} before its SpeechStarted"
                );
                if matches!(e, StreamEvent::Final { .. }) {
                    assert!(
                        stopped.iter().any(|s| s.0 == *utterance),
                        "final before SpeechStopped: {e:?}"
                    );
                    assert!(
                        !finals.iter().any(|f: &(u64, usize)| f.0 == *utterance),
                        "one final each"
                    );
                    finals.push((*utterance, i));
                }
            }
            _ => {}
        }
    }
    // The flush ends the utterance in progress at the flush, before `Flushed`.
    let flush_final = events[..flushed[0]].iter().find_map(|e| match e {
        StreamEvent::Final {
            reason: EndReason::Flush,
            text,
            end,
            ..
        } => Some((text.clone(), *end)),
        _ => None,
    });
    let (text, end) = flush_final.expect("a final with reason flush before the first Flushed");
    assert!(normalizer().normalize(&text).starts_with("ask not"), "{text}");
    assert!(end <= 4.6, "the flushed utterance ends at the flush: {end}");
    // The discard drops the utterance it interrupts: announced, never finished.
    let dropped: Vec<u64> = started
        .iter()
        .filter(|s| !finals.iter().any(|f| f.0 == s.0))
        .map(|s| s.0)
        .collect();
    assert_eq!(dropped.len(), 1, "one dropped utterance: {events:#?}");
    let dropped_at = started.iter().find(|s| s.0 == dropped[0]).expect("started").1;
    assert!(flushed[0] < dropped_at && dropped_at < flushed[1], "{events:#?}");
    assert!(
        !events[flushed[0]..flushed[1]]
            .iter()
            .any(|e| matches!(e, StreamEvent::Final { .. })),
        "nothing is finished between the flush and the discard"
    );
    // The stream goes on: the last words come after the discard.
    let last = events.iter().rev().find_map(|e| match e {
        StreamEvent::Final { text, .. } => Some(text.clone()),
        _ => None,
    });
    let last = last.expect("finals after the discard");
    assert!(normalizer().normalize(&last).ends_with("for your country"), "{last}");
}

#[test]
fn sherpa_layout_streams_with_local_agreement() {
    let engine = engine("tiny.en-sherpa", ModelVariant::Fp32, TranscribeOptions::default());
    assert!(!engine.has_cross_qk());
    let events = stream(&engine, lockstep(), &jfk());
    assert_invariants(&events);
    let text: Vec<String> = finals(&events).into_iter().map(|f| f.1).collect();
    let hypothesis = normalizer().normalize(&text.join(" "));
    let errors = steno::eval::wer::word_errors(JFK_NORMALIZED, &hypothesis);
    let problems: Vec<&TimedEvent> = events
        .iter()
        .filter(|e| matches!(e.event, StreamEvent::Error { .. } | StreamEvent::Warning { .. }))
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(errors.rate() <= 0.15, "WER {}: {hypothesis}", errors.rate());
    for e in &events {
        if let StreamEvent::Final { words, .. } = &e.event {
            assert!(words.is_none(), "no word times without cross_qk");
        }
    }
    // AlignAtt cannot run there: asking for it is a config error naming the field.
    let config = StreamConfig {
        commit_policy: steno::stream::PolicyKind::AlignAtt,
        ..lockstep()
    };
    let error = StreamSession::start(&engine, config).unwrap_err().to_string();
    assert!(error.contains("commit_policy"), "{error}");
}

#[test]
fn a_batch_job_does_not_starve_a_live_stream() {
    let engine = engine("tiny.en", ModelVariant::Fp32, TranscribeOptions::default());
    let long = steno::audio::read_audio(&shared_eval("longform/ls-test-other-concat-3080-2609.wav"))
        .expect("long-form audio")
        .samples;
    let (first_final, batch_done) = std::thread::scope(|scope| {
        let engine = &engine;
        let batch = scope.spawn(move || {
            let t = engine.transcribe_samples(&long, &mut |_| {}).expect("batch");
            (t, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut session = StreamSession::start(engine, lockstep()).expect("stream");
        let events = session.events().clone();
        let collector = scope.spawn(move || {
            let mut first_final = None;
            for e in events {
                if matches!(e.event, StreamEvent::Final { .. }) && first_final.is_none() {
                    first_final = Some(Instant::now());
                }
            }
            first_final
        });
        for chunk in jfk().chunks(1_600) {
            session.push(chunk, 16_000).expect("push");
        }
        session.finish();
        let first_final = collector
            .join()
            .expect("collector")
            .expect("the stream produced a final");
        drop(session);
        let (transcript, done) = batch.join().expect("batch thread");
        assert!(
            transcript.text().split_whitespace().count() > 300,
            "the batch is complete"
        );
        (first_final, done)
    });
    assert!(
        first_final < batch_done,
        "the stream's first final arrived while the 3-minute batch job was still running"
    );
}

#[test]
fn stream_command_prints_jsonl_events_with_wall_clock_times() {
    let run = steno(&["stream", "audio-samples/jfk.wav", "-f", "jsonl", "--threads", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(events.iter().all(|e| e["wall_ms"].is_number() && e["type"].is_string()));
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains(&"partial") && types.contains(&"final"), "{types:?}");
    assert_eq!(types.last(), Some(&"stats"));
    let finals: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "final")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        normalizer()
            .normalize(&finals.join(" "))
            .ends_with("ask what you can do for your country"),
        "{finals:?}"
    );
}

#[test]
fn stream_command_reads_raw_samples_from_stdin() {
    let bytes: Vec<u8> = jfk()
        .iter()
        .flat_map(|&x| ((x * 32_768.0).clamp(-32_768.0, 32_767.0) as i16).to_le_bytes())
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_steno"))
        .args(["stream", "-", "--threads", "1"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("steno runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().expect("steno ends");
    writer.join().expect("writer").expect("write");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = normalizer().normalize(&String::from_utf8_lossy(&out.stdout));
    assert!(text.ends_with("ask what you can do for your country"), "{text}");
}

#[test]
fn stream_command_names_a_missing_file() {
    let run = steno(&["stream", "audio-samples/no-such.wav"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("no-such.wav"), "{}", run.stderr);
}

/// `steno listen` on the ALSA `type file` device of tests/alsa/steno.conf, fed through a FIFO
/// at real-time pace (a plain file is read ~1500x faster than real time); Ctrl-C ends it.
#[test]
fn listen_transcribes_the_default_capture_device_and_flushes_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("mic.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(status.success());
    let template = std::fs::read_to_string(root().join("tests/alsa/steno.conf")).expect("ALSA template");
    let conf = dir.path().join("steno.conf");
    std::fs::write(&conf, template.replace("@INFILE@", &fifo.display().to_string())).expect("conf");
    // Read-write: neither ALSA's open nor our writes block or break on the other side.
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    let mut speech: Vec<u8> = jfk()
        .iter()
        .flat_map(|&x| ((x * 32_768.0).clamp(-32_768.0, 32_767.0) as i16).to_le_bytes())
        .collect();
    speech.extend(vec![0u8; 32_000]);
    std::thread::spawn(move || {
        let mut anchor = Instant::now();
        let mut position = 0usize;
        loop {
            let chunk: Vec<u8> = if position < speech.len() {
                speech[position..(position + 640).min(speech.len())].to_vec()
            } else {
                vec![0u8; 640]
            };
            let due = anchor + Duration::from_secs_f64(position as f64 / 32_000.0);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let before = Instant::now();
            if pipe.write_all(&chunk).is_err() {
                return;
            }
            if before.elapsed() > Duration::from_millis(20) {
                // Nobody was reading yet: restart the clock so the backlog stays small.
                anchor = Instant::now() - Duration::from_secs_f64(position as f64 / 32_000.0);
            }
            position += chunk.len();
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_steno"))
        .args(["listen", "-f", "jsonl", "--threads", "1"])
        .env(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
        )
        .env_remove("STENO_LOG")
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("steno listen runs");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = crossbeam_channel::unbounded::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut finals = Vec::new();
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&line).expect("jsonl");
        lines.push(line);
        if event["type"] == "final" {
            finals.push(event["text"].as_str().unwrap_or_default().to_owned());
            if normalizer()
                .normalize(&finals.join(" "))
                .contains("ask what you can do for your country")
            {
                break;
            }
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait_with_output().expect("steno listen ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "exit after Ctrl-C: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let text = normalizer().normalize(&finals.join(" "));
    assert!(
        text.contains("ask what you can do for your country"),
        "finals: {finals:?}\nevents: {lines:?}\nstderr: {stderr}"
    );
    assert!(text.contains("fellow americans"), "{text}");
}
