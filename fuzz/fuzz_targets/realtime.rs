//! The OpenAI Realtime endpoint's input path (`steno::server::realtime`): a client text
//! message through `parse_client_event`, then, for a session update, the patched session's
//! `stream_config` (what a stream would be started with) and its JSON shapes.
//!
//! Properties: no panic; an accepted `session.update` yields a session whose stream config,
//! when accepted, is valid; an accepted append decodes to finite samples in [-1, 1] (pcm16 at
//! 24 kHz, base64); errors carry the client's `event_id` when the message had a string one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steno::StreamConfig;
use steno::server::realtime::{ClientKind, Session, parse_client_event};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_client_event(&text) {
        Ok(event) => match event.kind {
            ClientKind::SessionUpdate { patch, .. } => {
                let session = Session::new("sess_fuzz".into(), "tiny.en".into(), &StreamConfig::default());
                let session = session.patched(patch);
                if let Ok(config) = session.stream_config()
                    && let Err(e) = config.validate()
                {
                    panic!("accepted session gives an invalid stream config: {e}");
                }
                let _ = (session.ga_json(), session.beta_json());
            }
            ClientKind::Append(samples) => {
                assert!(samples.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
            }
            ClientKind::Commit | ClientKind::Clear => {}
        },
        Err(problem) => {
            assert!(!problem.message.is_empty());
        }
    }
});
