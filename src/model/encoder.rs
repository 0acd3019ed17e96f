//! The audio encoder: log-mel window in, the cross-attention keys/values of every decoder layer
//! out (computed once per window, reused by every decoding step and every beam).
//!
//! Tensor contracts (the layout is read off the graph's output names at load):
//!
//! steno (`models/export_whisper.py`, default):
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `mel` | f32 | `[1, n_mels, T]`: normalised log-mel, `T` even, ≤ 3000 |
//! | out `cross_k_{i}`, `cross_v_{i}` (i < n_text_layer) | f32 | `[1, n_text_head, T/2, head_dim]` |
//!
//! sherpa-onnx (`scripts/whisper/export-onnx.py`):
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `mel` | f32 | `[1, n_mels, 3000]` |
//! | out `n_layer_cross_k`, `n_layer_cross_v` | f32 | `[n_text_layer, 1, 1500, n_text_state]` |

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

use super::{Layout, ModelSpec, check_outlet};
use crate::error::{Error, Result};

/// How many mel frames the encoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelFrames {
    /// Exactly this many (sherpa-onnx exports: 3000, i.e. 30 s).
    Fixed(usize),
    /// Any even number up to this many (steno exports).
    Dynamic { max: usize },
}

/// Cross-attention keys and values of one audio window, in the model's layout:
/// steno: `[k_0, …, k_{L-1}, v_0, …, v_{L-1}]`, each `[batch, H, frames, head_dim]`;
/// sherpa-onnx: `[k, v]`, each `[L, batch, frames, D]`.
pub struct CrossKv {
    pub(crate) values: Vec<DynValue>,
    /// Rows the tensors hold.
    pub batch: usize,
    /// Encoder frames (20 ms each).
    pub frames: usize,
}

impl CrossKv {
    /// The same keys/values tiled to `n` rows (for graphs that cannot broadcast one row).
    pub fn repeat(&self, n: usize, row_axis: usize) -> Result<CrossKv> {
        if self.batch != 1 {
            return Err(Error::config("beam_size", "cross K/V can only be tiled from one row"));
        }
        let tile = |value: &DynValue| -> Result<DynValue> {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading cross-attention keys"))?;
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            // [outer…, 1 (row axis), inner…]: repeat each inner block n times.
            let outer: usize = dims[..row_axis].iter().product();
            let inner: usize = dims[row_axis + 1..].iter().product();
            let mut out = Vec::with_capacity(data.len() * n);
            for o in 0..outer {
                let block = &data[o * inner..(o + 1) * inner];
                for _ in 0..n {
                    out.extend_from_slice(block);
                }
            }
            let mut new_dims = dims.clone();
            new_dims[row_axis] = n;
            let tensor = Tensor::from_array((new_dims, out)).map_err(Error::ort("tiling cross-attention keys"))?;
            Ok(tensor.into_dyn())
        };
        Ok(CrossKv {
            values: self.values.iter().map(tile).collect::<Result<_>>()?,
            batch: n,
            frames: self.frames,
        })
    }
}

/// The encoder session and its checked contract.
pub struct Encoder {
    session: Session,
    path: PathBuf,
    n_mels: usize,
    frames: MelFrames,
    outputs: Vec<String>,
    /// Runs go through this job's stop flag when set (`WhisperModel::set_stop`).
    pub(super) stop: Option<super::Stop>,
}

impl Encoder {
    pub(crate) fn new(session: Session, path: &Path, spec: &ModelSpec, layout: Layout) -> Result<Encoder> {
        let mel = check_outlet(path, session.inputs(), "mel", TensorElementType::Float32, 3)?;
        let outputs = layout.cross_names(spec.n_text_layer);
        for name in &outputs {
            check_outlet(path, session.outputs(), name, TensorElementType::Float32, 4)?;
        }
        if mel[1] >= 0 && mel[1] as usize != spec.n_mels {
            return Err(Error::Contract {
                path: path.to_path_buf(),
                tensor: "mel".into(),
                problem: format!("{} mel bins, metadata says {}", mel[1], spec.n_mels),
            });
        }
        let frames = if mel[2] > 0 {
            MelFrames::Fixed(mel[2] as usize)
        } else {
            MelFrames::Dynamic {
                max: spec.max_mel_frames(),
            }
        };
        Ok(Encoder {
            session,
            path: path.to_path_buf(),
            n_mels: spec.n_mels,
            frames,
            outputs,
            stop: None,
        })
    }

    /// The frame-count contract of this graph.
    pub fn mel_frames(&self) -> MelFrames {
        self.frames
    }

    /// Encode one window: `mel` is `[n_mels][frames]` row-major, already normalised and padded
    /// to what [`Encoder::mel_frames`] accepts.
    pub fn encode(&mut self, mel: &[f32], frames: usize) -> Result<CrossKv> {
        self.encode_batch(&[mel], frames)
    }

    /// Encode equal-length windows in one call: row `i` of the returned keys/values is
    /// `windows[i]`'s. `benches/pipeline.rs` measures it against one call per window: on the
    /// 2-core machine, two 15 s windows took 224 ms in one call against 244 ms in two (fp32)
    /// and 206 against 211 ms (int8, within the scatter). Live windows of different streams
    /// differ in length (context, utterance, padding): padding a 15 s window to 20 s adds
    /// about a third of its encoder time, more than the gain, and changes that stream's text
    /// with the other streams' timing. So the live worker encodes one window per call.
    pub fn encode_batch(&mut self, windows: &[&[f32]], frames: usize) -> Result<CrossKv> {
        let _span = tracing::debug_span!("encode", frames, rows = windows.len()).entered();
        let ok = match self.frames {
            MelFrames::Fixed(n) => frames == n,
            MelFrames::Dynamic { max } => frames > 0 && frames <= max,
        };
        let bad = windows.iter().find(|mel| mel.len() != self.n_mels * frames);
        if !ok || windows.is_empty() || bad.is_some() {
            return Err(Error::Contract {
                path: self.path.clone(),
                tensor: "mel".into(),
                problem: format!(
                    "got {} window(s), {} values for {frames} frames of {} bins; the graph takes {:?}",
                    windows.len(),
                    bad.or(windows.first()).map_or(0, |m| m.len()),
                    self.n_mels,
                    self.frames
                ),
            });
        }
        let joined: Vec<f32>;
        let mel: &[f32] = if let [one] = windows {
            one
        } else {
            joined = windows.concat();
            &joined
        };
        let input = TensorRef::from_array_view(([windows.len(), self.n_mels, frames], mel))
            .map_err(Error::ort("creating the mel tensor"))?;
        let inputs = ort::inputs!["mel" => input];
        let out = match &self.stop {
            Some(stop) => self.session.run_with_options(inputs, stop.run_options()),
            None => self.session.run(inputs),
        };
        let mut out = out.map_err(Error::ort(format!("running {}", self.path.display())))?;
        let mut values = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            values.push(out.remove(name.as_str()).ok_or_else(|| Error::Contract {
                path: self.path.clone(),
                tensor: name.clone(),
                problem: "not produced".into(),
            })?);
        }
        drop(out);
        // Encoder frames: the second-to-last axis in both layouts.
        let frames = values
            .first()
            .and_then(|v| v.try_extract_tensor::<f32>().ok().map(|(s, _)| s[s.len() - 2] as usize))
            .unwrap_or(0);
        Ok(CrossKv {
            values,
            batch: windows.len(),
            frames,
        })
    }
}
