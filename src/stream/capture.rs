//! Live audio capture: opens an input device through cpal and hands what it records, as mono
//! `f32`, to a callback.
//!
//! In: a device name as [`input_devices`] lists it, or the default input device. Out:
//! `on_samples(&mono, sample_rate)` on cpal's audio thread for every buffer the device delivers,
//! samples in [-1, 1] at the device's rate (16 kHz when the device offers it; otherwise the
//! caller resamples). A stream failure goes to `on_error` once.
//!
//! - Config: 16 kHz mono i16 when the device lists it, because a converting device (ALSA `plug`,
//!   PulseAudio, PipeWire) then does the resampling and the engine gets Whisper's rate as is;
//!   otherwise the device's default config. Only formats with a linear PCM meaning are accepted
//!   (DSD is not).
//! - The callback runs on a real-time audio thread: it converts into a buffer allocated once in
//!   [`Capture::start`], in chunks of at most [`CHUNK_FRAMES`] frames, and never blocks or
//!   allocates. Channels are averaged; integers are scaled as [`crate::audio`] scales files
//!   (`i16 / 32768`); non-finite values become 0 and everything is clamped to [-1, 1], since a
//!   device whose format was misread hands over garbage that would otherwise reach the model.
//! - Xruns (the callback fell behind, or the device delivered late) are logged and capture goes
//!   on; any other stream error, or a panic in `on_samples`, is reported once through
//!   `on_error`, after which no more samples are delivered.
//! - Device names: on ALSA the PCM name (`default`, `hw:CARD=0,DEV=0`, what `arecord -L`
//!   prints), because ALSA's descriptions repeat across the PCMs of one card; on other hosts the
//!   host's display name. [`Capture::start`] accepts either form.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SupportedStreamConfig, SupportedStreamConfigRange};

/// The rate asked of devices that can deliver it: Whisper's, so no resampling is needed.
const PREFERRED_RATE: u32 = crate::audio::SAMPLE_RATE;

/// Most frames converted per `on_samples` call. A device buffer longer than this is delivered in
/// several calls, so the conversion buffer can be allocated once whatever period the device
/// picks (1 s at 16 kHz; periods are usually 5 to 100 ms).
pub const CHUNK_FRAMES: usize = 16_384;

/// How long cpal may wait for the backend: WASAPI's activation, and on ALSA the poll timeout
/// after which the worker checks whether the device vanished without signalling it.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why capture could not start.
///
/// Each message names the device. The cpal error underneath, where there is one, is the
/// `source()` and is not repeated in the message; print the chain (`{:#}` with anyhow).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The audio host could not list its devices (ALSA config unreadable, daemon gone).
    #[error("cannot list audio input devices")]
    Host {
        #[source]
        source: cpal::Error,
    },
    /// No input device has this name; `available` is what [`input_devices`] would list.
    #[error("no input device `{name}` ({})", list_names(.available))]
    NoSuchDevice { name: String, available: Vec<String> },
    /// The host has no default input device.
    #[error("no default input device ({})", list_names(.available))]
    NoDefaultDevice { available: Vec<String> },
    /// The device offers nothing this module can convert, or cannot say what it offers.
    #[error("input device `{device}`: no usable input config ({detail})")]
    NoUsableConfig {
        device: String,
        detail: String,
        #[source]
        source: Option<cpal::Error>,
    },
    /// The stream could not be opened with the chosen config (busy, permission, rejected config).
    #[error("input device `{device}`: cannot open a {config} input stream")]
    Build {
        device: String,
        config: String,
        #[source]
        source: cpal::Error,
    },
    /// The stream was opened but would not start.
    #[error("input device `{device}`: cannot start the input stream")]
    Play {
        device: String,
        #[source]
        source: cpal::Error,
    },
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "no input devices found".to_string()
    } else {
        format!("available: {}", names.join(", "))
    }
}

/// Names of the input devices of the default host, in the host's order. Each is accepted by
/// [`Capture::start`].
pub fn input_devices() -> Result<Vec<String>, CaptureError> {
    let host = cpal::default_host();
    let devices = host.input_devices().map_err(|source| CaptureError::Host { source })?;
    Ok(devices.map(|d| device_name(&d)).collect())
}

/// The name a device is listed under: the PCM name on ALSA, the display name elsewhere.
fn device_name(device: &cpal::Device) -> String {
    #[cfg(any(
        target_os = "linux",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "netbsd"
    ))]
    if let Ok(id) = device.id()
        && id.host() == cpal::HostId::Alsa
    {
        return id.id().to_string();
    }
    device.to_string()
}

/// Finds `name` among the host's input devices, by listed name or display name.
fn find_device(host: &cpal::Host, name: &str) -> Result<cpal::Device, CaptureError> {
    let devices: Vec<cpal::Device> = host
        .input_devices()
        .map_err(|source| CaptureError::Host { source })?
        .collect();
    if let Some(device) = devices.iter().find(|d| device_name(d) == name) {
        return Ok(device.clone());
    }
    if let Some(device) = devices.iter().find(|d| d.to_string() == name) {
        return Ok(device.clone());
    }
    // ALSA's `default` PCM is not always among the hints (a bare alsa.conf gives it none), yet it
    // is what the default device opens.
    if name == "default"
        && let Some(device) = host.default_input_device()
    {
        return Ok(device);
    }
    Err(CaptureError::NoSuchDevice {
        name: name.to_string(),
        available: devices.iter().map(device_name).collect(),
    })
}

/// Whether [`downmix_into`] can convert this format (linear PCM, integer or float).
fn convertible(format: SampleFormat) -> bool {
    matches!(
        format,
        SampleFormat::I8
            | SampleFormat::I16
            | SampleFormat::I24
            | SampleFormat::I32
            | SampleFormat::I64
            | SampleFormat::U8
            | SampleFormat::U16
            | SampleFormat::U24
            | SampleFormat::U32
            | SampleFormat::U64
            | SampleFormat::F32
            | SampleFormat::F64
    )
}

/// The config to open: 16 kHz mono i16 if one of `supported` contains it, else `default` when
/// it is convertible, else the best convertible range by cpal's own default ranking (48 kHz or
/// 44.1 kHz when in range, otherwise its highest rate).
fn choose_config(
    supported: &[SupportedStreamConfigRange],
    default: Option<SupportedStreamConfig>,
) -> Option<SupportedStreamConfig> {
    let wanted = supported
        .iter()
        .filter(|r| r.channels() == 1 && r.sample_format() == SampleFormat::I16)
        .find_map(|r| r.try_with_sample_rate(PREFERRED_RATE));
    if wanted.is_some() {
        return wanted;
    }
    if let Some(config) = default
        && convertible(config.sample_format())
        && config.channels() > 0
    {
        return Some(config);
    }
    supported
        .iter()
        .filter(|r| convertible(r.sample_format()) && r.channels() > 0)
        .max_by(|a, b| a.cmp_default_heuristics(b))
        .map(|r| {
            r.try_with_standard_sample_rate()
                .unwrap_or_else(|| r.with_max_sample_rate())
        })
}

/// Averages each frame of `interleaved` (`channels` samples per frame) into one sample of `out`,
/// converted to f32 in [-1, 1]: integers scaled by their full range (`i16 / 32768`, unsigned
/// formats around their midpoint), non-finite values replaced by 0, the rest clamped.
///
/// Converts `min(complete frames, out.len())` frames and returns that count; a trailing partial
/// frame is ignored, and `channels == 0` converts nothing.
pub fn downmix_into<T>(interleaved: &[T], channels: usize, out: &mut [f32]) -> usize
where
    T: Sample,
    f32: FromSample<T>,
{
    if channels == 0 {
        return 0;
    }
    let mut written = 0;
    for (frame, slot) in interleaved.chunks_exact(channels).zip(out.iter_mut()) {
        let value = if let [only] = frame {
            only.to_sample::<f32>()
        } else {
            let sum: f32 = frame.iter().map(|s| s.to_sample::<f32>()).sum();
            sum / channels as f32
        };
        *slot = if value.is_finite() { value.clamp(-1.0, 1.0) } else { 0.0 };
        written += 1;
    }
    written
}

/// Converts one device buffer in [`CHUNK_FRAMES`] pieces and hands each to `on_samples`.
/// `interleaved` is `None` when the buffer's type does not match `T` (a backend bug): skipped.
fn deliver<T>(
    interleaved: Option<&[T]>,
    channels: usize,
    mono: &mut [f32],
    sample_rate: u32,
    on_samples: &mut dyn FnMut(&[f32], u32),
) where
    T: Sample,
    f32: FromSample<T>,
{
    let Some(interleaved) = interleaved else {
        return;
    };
    if channels == 0 || mono.is_empty() {
        return;
    }
    for chunk in interleaved.chunks(mono.len() * channels) {
        let n = downmix_into(chunk, channels, mono);
        if n > 0 {
            on_samples(mono.get(..n).unwrap_or_default(), sample_rate);
        }
    }
}

/// Dispatches a cpal buffer on its sample format.
fn deliver_data(
    data: &cpal::Data,
    channels: usize,
    mono: &mut [f32],
    sample_rate: u32,
    on_samples: &mut dyn FnMut(&[f32], u32),
) {
    use cpal::{I24, U24};
    match data.sample_format() {
        SampleFormat::I8 => deliver(data.as_slice::<i8>(), channels, mono, sample_rate, on_samples),
        SampleFormat::I16 => deliver(data.as_slice::<i16>(), channels, mono, sample_rate, on_samples),
        SampleFormat::I24 => deliver(data.as_slice::<I24>(), channels, mono, sample_rate, on_samples),
        SampleFormat::I32 => deliver(data.as_slice::<i32>(), channels, mono, sample_rate, on_samples),
        SampleFormat::I64 => deliver(data.as_slice::<i64>(), channels, mono, sample_rate, on_samples),
        SampleFormat::U8 => deliver(data.as_slice::<u8>(), channels, mono, sample_rate, on_samples),
        SampleFormat::U16 => deliver(data.as_slice::<u16>(), channels, mono, sample_rate, on_samples),
        SampleFormat::U24 => deliver(data.as_slice::<U24>(), channels, mono, sample_rate, on_samples),
        SampleFormat::U32 => deliver(data.as_slice::<u32>(), channels, mono, sample_rate, on_samples),
        SampleFormat::U64 => deliver(data.as_slice::<u64>(), channels, mono, sample_rate, on_samples),
        SampleFormat::F32 => deliver(data.as_slice::<f32>(), channels, mono, sample_rate, on_samples),
        SampleFormat::F64 => deliver(data.as_slice::<f64>(), channels, mono, sample_rate, on_samples),
        // `choose_config` never opens anything else.
        _ => {}
    }
}

/// Calls the user's `on_error` at most once, from whichever callback fails first. The lock is
/// taken only on that failure path, never per buffer.
struct ErrorSink {
    fired: AtomicBool,
    on_error: Mutex<Box<dyn FnMut(String) + Send>>,
}

impl ErrorSink {
    fn report(&self, message: String) {
        if self.fired.swap(true, Ordering::AcqRel) {
            tracing::debug!("capture: further stream error: {message}");
            return;
        }
        tracing::warn!("capture: {message}");
        let mut on_error = self.on_error.lock().unwrap_or_else(PoisonError::into_inner);
        // A panicking error handler must not unwind into cpal's thread either.
        if catch_unwind(AssertUnwindSafe(|| (*on_error)(message))).is_err() {
            tracing::error!("capture: the on_error callback panicked");
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

/// A running capture; dropping it stops the stream (cpal joins its audio thread).
///
/// The drop waits for the device's current read to return: instant for sound cards, but an ALSA
/// `type file` device reading a FIFO whose writer holds it open without writing blocks the drop
/// until the writer writes or closes.
///
/// With cpal 0.18 every backend's stream is `Send` and `Sync`, and so is this; keeping it on
/// the thread that created it is still the simplest lifetime to reason about.
pub struct Capture {
    // Dropped first: stops the callbacks before anything else goes.
    _stream: cpal::Stream,
    sample_rate: u32,
    channels: u16,
    sample_format: SampleFormat,
    device_name: String,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("device", &self.device_name)
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .field("sample_format", &self.sample_format)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Opens `device` (`None`: the host's default input device) and starts it.
    ///
    /// Asks for 16 kHz mono i16 when the device lists it, otherwise uses its default config
    /// ([`Self::sample_rate`], [`Self::channels`] say what was negotiated). Every buffer is
    /// converted to mono f32 in [-1, 1] and passed to `on_samples(&mono, sample_rate)` on the
    /// audio thread, at most [`CHUNK_FRAMES`] samples per call; `on_samples` must not block for
    /// long or the device overruns. A stream error (device lost) or a panic in `on_samples`
    /// calls `on_error(message)` once, after which `on_samples` is no longer called.
    pub fn start(
        device: Option<&str>,
        on_samples: impl FnMut(&[f32], u32) + Send + 'static,
        on_error: impl FnMut(String) + Send + 'static,
    ) -> Result<Capture, CaptureError> {
        let host = cpal::default_host();
        let device = match device {
            Some(name) => find_device(&host, name)?,
            None => match host.default_input_device() {
                Some(d) => d,
                None => {
                    let available = match host.input_devices() {
                        Ok(devices) => devices.map(|d| device_name(&d)).collect(),
                        Err(_) => Vec::new(),
                    };
                    return Err(CaptureError::NoDefaultDevice { available });
                }
            },
        };
        let name = device_name(&device);

        // A backend may fail to list configs yet still have a default, so a listing error only
        // counts when the default is missing too.
        let (supported, list_error) = match device.supported_input_configs() {
            Ok(ranges) => (ranges.collect::<Vec<_>>(), None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let default = device.default_input_config();
        let config = match choose_config(&supported, default.as_ref().ok().copied()) {
            Some(config) => config,
            None => {
                let offered: Vec<String> = supported.iter().map(describe_range).collect();
                let detail = if !offered.is_empty() {
                    format!("offered: {}", offered.join("; "))
                } else if list_error.is_some() {
                    // ALSA: the PCM cannot be opened (no sound card, bad config, busy device).
                    "cannot open the device to query it".to_string()
                } else {
                    "the device lists no input configs".to_string()
                };
                return Err(CaptureError::NoUsableConfig {
                    device: name,
                    detail,
                    source: list_error.or(default.err()),
                });
            }
        };

        let sample_rate = config.sample_rate();
        let channels = config.channels();
        let sample_format = config.sample_format();
        let description = format!("{sample_rate} Hz {channels}-channel {sample_format}");
        tracing::info!("capture: opening `{name}` at {description}");

        let sink = Arc::new(ErrorSink {
            fired: AtomicBool::new(false),
            on_error: Mutex::new(Box::new(on_error)),
        });

        let data_sink = Arc::clone(&sink);
        let mut on_samples = on_samples;
        // Allocated here, once: the callback only writes into it.
        let mut mono = vec![0.0f32; CHUNK_FRAMES].into_boxed_slice();
        let data_callback = move |data: &cpal::Data, _: &cpal::InputCallbackInfo| {
            if data_sink.fired() {
                return;
            }
            let delivered = catch_unwind(AssertUnwindSafe(|| {
                deliver_data(data, usize::from(channels), &mut mono, sample_rate, &mut on_samples);
            }));
            if delivered.is_err() {
                data_sink.report("the capture callback panicked; capture stopped".to_string());
            }
        };

        let error_sink = Arc::clone(&sink);
        let error_name = name.clone();
        let mut xruns: u64 = 0;
        let error_callback = move |err: cpal::Error| match err.kind() {
            // Recovered by cpal (ALSA: prepare + start); a gap in the audio, not a failure.
            cpal::ErrorKind::Xrun => {
                xruns += 1;
                if xruns.is_power_of_two() {
                    tracing::warn!("capture: `{error_name}`: overrun, audio dropped ({xruns} so far)");
                }
            }
            cpal::ErrorKind::DeviceChanged => {
                tracing::info!("capture: `{error_name}`: the default device changed; following it");
            }
            cpal::ErrorKind::RealtimeDenied => {
                tracing::debug!("capture: `{error_name}`: {err}");
            }
            _ => error_sink.report(format!("input device `{error_name}`: {err}")),
        };

        let stream = device
            .build_input_stream_raw(
                config.config(),
                sample_format,
                data_callback,
                error_callback,
                Some(BACKEND_TIMEOUT),
            )
            .map_err(|source| CaptureError::Build {
                device: name.clone(),
                config: description.clone(),
                source,
            })?;
        stream.play().map_err(|source| CaptureError::Play {
            device: name.clone(),
            source,
        })?;

        Ok(Capture {
            _stream: stream,
            sample_rate,
            channels,
            sample_format,
            device_name: name,
        })
    }

    /// The rate of the samples passed to `on_samples`, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The device's channel count before downmixing.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// The device's sample format before conversion (`i16`, `f32`, ...), for logs.
    pub fn sample_format(&self) -> String {
        self.sample_format.to_string()
    }

    /// The device's name as [`input_devices`] lists it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }
}

fn describe_range(r: &SupportedStreamConfigRange) -> String {
    format!(
        "{}-{} Hz {}-channel {}",
        r.min_sample_rate(),
        r.max_sample_rate(),
        r.channels(),
        r.sample_format()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::SupportedBufferSize;

    fn range(channels: u16, min: u32, max: u32, format: SampleFormat) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn i16_is_scaled_like_whisper() {
        let mut out = [9.0f32; 4];
        let n = downmix_into(&[0i16, 16384, -32768, 32767], 1, &mut out);
        assert_eq!(n, 4);
        assert_eq!(out, [0.0, 0.5, -1.0, 32767.0 / 32768.0]);
    }

    #[test]
    fn channels_are_averaged() {
        let mut out = [0.0f32; 2];
        let n = downmix_into(&[0.5f32, -0.5, 1.0, 0.0], 2, &mut out);
        assert_eq!(n, 2);
        assert_eq!(out, [0.0, 0.5]);
    }

    #[test]
    fn unsigned_formats_are_centred() {
        let mut out = [9.0f32; 3];
        assert_eq!(downmix_into(&[32768u16, 0, 49152], 1, &mut out), 3);
        assert_eq!(out, [0.0, -1.0, 0.5]);
        assert_eq!(downmix_into(&[128u8, 0], 1, &mut out), 2);
        assert_eq!(&out[..2], &[0.0, -1.0]);
    }

    #[test]
    fn other_integer_widths_reach_full_scale() {
        let mut out = [0.0f32; 1];
        downmix_into(&[i32::MIN], 1, &mut out);
        assert_eq!(out[0], -1.0);
        downmix_into(
            &[cpal::I24::new(-(1 << 23)).unwrap_or(cpal::I24::EQUILIBRIUM)],
            1,
            &mut out,
        );
        assert_eq!(out[0], -1.0);
        downmix_into(&[0.25f64], 1, &mut out);
        assert_eq!(out[0], 0.25);
    }

    #[test]
    fn garbage_floats_are_sanitised() {
        let mut out = [9.0f32; 5];
        let n = downmix_into(&[f32::NAN, f32::INFINITY, -7.0, 3.0, 0.1], 1, &mut out);
        assert_eq!(n, 5);
        assert_eq!(out, [0.0, 0.0, -1.0, 1.0, 0.1]);
        // A NaN in one channel silences the frame rather than poisoning it.
        let n = downmix_into(&[f32::NAN, 0.5], 2, &mut out);
        assert_eq!((n, out[0]), (1, 0.0));
    }

    #[test]
    fn partial_frames_and_short_outputs_are_bounded() {
        let mut out = [0.0f32; 2];
        // 3 complete stereo frames and a dangling sample, into room for 2.
        assert_eq!(downmix_into(&[1i16, 1, 2, 2, 3, 3, 4], 2, &mut out), 2);
        assert_eq!(downmix_into(&[1i16, 2], 0, &mut out), 0);
        assert_eq!(downmix_into::<i16>(&[], 1, &mut out), 0);
    }

    #[test]
    fn long_buffers_are_delivered_in_chunks() {
        let input: Vec<i16> = (0..10).flat_map(|i| [i * 100, i * 100]).collect();
        let mut mono = vec![0.0f32; 4];
        let mut got: Vec<(usize, u32)> = Vec::new();
        let mut all = Vec::new();
        deliver(Some(&input[..]), 2, &mut mono, 16_000, &mut |s: &[f32], rate| {
            got.push((s.len(), rate));
            all.extend_from_slice(s);
        });
        assert_eq!(got, [(4, 16_000), (4, 16_000), (2, 16_000)]);
        let expected: Vec<f32> = (0..10).map(|i| (i * 100) as f32 / 32768.0).collect();
        assert_eq!(all, expected);
        // A type mismatch from the backend is skipped, not a panic.
        deliver::<i16>(None, 2, &mut mono, 16_000, &mut |_, _| panic!("called"));
    }

    #[test]
    fn prefers_16k_mono_i16() {
        let supported = [
            range(2, 8_000, 192_000, SampleFormat::F32),
            range(1, 8_000, 192_000, SampleFormat::F32),
            range(1, 8_000, 192_000, SampleFormat::I16),
        ];
        let default = supported[0].with_sample_rate(48_000);
        let c = choose_config(&supported, Some(default));
        assert_eq!(
            c.map(|c| (c.channels(), c.sample_rate(), c.sample_format())),
            Some((1, 16_000, SampleFormat::I16))
        );
    }

    #[test]
    fn falls_back_to_the_default_config() {
        let supported = [range(2, 48_000, 48_000, SampleFormat::I32)];
        let default = supported[0].with_sample_rate(48_000);
        assert_eq!(choose_config(&supported, Some(default)), Some(default));
        // 16 kHz exists only in stereo: still the default, the engine resamples.
        let supported = [range(2, 8_000, 48_000, SampleFormat::I16)];
        let default = supported[0].with_sample_rate(48_000);
        assert_eq!(choose_config(&supported, Some(default)), Some(default));
    }

    #[test]
    fn skips_unconvertible_defaults() {
        let supported = [
            range(2, 44_100, 44_100, SampleFormat::DsdU8),
            range(2, 44_100, 96_000, SampleFormat::I24),
        ];
        let default = supported[0].with_sample_rate(44_100);
        let c = choose_config(&supported, Some(default));
        assert_eq!(
            c.map(|c| (c.sample_rate(), c.sample_format())),
            Some((48_000, SampleFormat::I24))
        );
        assert_eq!(choose_config(&supported[..1], Some(default)), None);
        assert_eq!(choose_config(&[], None), None);
    }

    #[test]
    fn error_messages_name_the_device() {
        let e = CaptureError::NoSuchDevice {
            name: "usb mic".into(),
            available: vec!["default".into(), "hw:CARD=0,DEV=0".into()],
        };
        assert_eq!(
            e.to_string(),
            "no input device `usb mic` (available: default, hw:CARD=0,DEV=0)"
        );
        let e = CaptureError::NoDefaultDevice { available: vec![] };
        assert_eq!(e.to_string(), "no default input device (no input devices found)");
    }

    #[test]
    fn capture_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Capture>();
    }

    #[test]
    fn on_error_fires_once() {
        let count = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&count);
        let sink = ErrorSink {
            fired: AtomicBool::new(false),
            on_error: Mutex::new(Box::new(move |m| seen.lock().unwrap().push(m))),
        };
        sink.report("first".into());
        sink.report("second".into());
        assert!(sink.fired());
        assert_eq!(*count.lock().unwrap(), ["first"]);
    }
}
