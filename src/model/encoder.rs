//! The audio encoder: log-mel window in, the cross-attention keys/values of every decoder layer
//! out (computed once per window, reused by every decoding step and every beam).
//!
//! Tensor contract (sherpa-onnx names):
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `mel` | f32 | `[N, n_mels, T]`: normalised log-mel, `T` = 3000 (sherpa-onnx) or dynamic ≤ 3000 (steno) |
//! | out `n_layer_cross_k` | f32 | `[n_text_layer, N, T/2, n_text_state]` |
//! | out `n_layer_cross_v` | f32 | `[n_text_layer, N, T/2, n_text_state]` |

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

use super::{ModelSpec, check_outlet};
use crate::error::{Error, Result};

/// How many mel frames the encoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelFrames {
    /// Exactly this many (sherpa-onnx exports: 3000, i.e. 30 s).
    Fixed(usize),
    /// Any even number up to this many (steno exports).
    Dynamic { max: usize },
}

/// Cross-attention keys and values of one audio window, `[n_text_layer, batch, frames, n_text_state]`.
pub struct CrossKv {
    pub(crate) k: DynValue,
    pub(crate) v: DynValue,
    /// Rows (hypotheses) the tensors hold.
    pub batch: usize,
    /// Encoder frames (20 ms each).
    pub frames: usize,
}

impl CrossKv {
    /// The same keys/values tiled to `n` rows, for decoding `n` hypotheses in one batch.
    pub fn repeat(&self, n: usize) -> Result<CrossKv> {
        if self.batch != 1 {
            return Err(Error::config("beam_size", "cross K/V can only be tiled from one row"));
        }
        let tile = |value: &DynValue| -> Result<DynValue> {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading cross-attention keys"))?;
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let (layers, per_row) = (dims[0], dims[2] * dims[3]);
            let mut out = Vec::with_capacity(data.len() * n);
            for l in 0..layers {
                let row = &data[l * per_row..(l + 1) * per_row];
                for _ in 0..n {
                    out.extend_from_slice(row);
                }
            }
            let tensor = Tensor::from_array(([layers, n, dims[2], dims[3]], out))
                .map_err(Error::ort("tiling cross-attention keys"))?;
            Ok(tensor.into_dyn())
        };
        Ok(CrossKv {
            k: tile(&self.k)?,
            v: tile(&self.v)?,
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
}

impl Encoder {
    pub(crate) fn new(session: Session, path: &Path, spec: &ModelSpec) -> Result<Encoder> {
        let mel = check_outlet(path, session.inputs(), "mel", TensorElementType::Float32, 3)?;
        for name in ["n_layer_cross_k", "n_layer_cross_v"] {
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
        })
    }

    /// The frame-count contract of this graph.
    pub fn mel_frames(&self) -> MelFrames {
        self.frames
    }

    /// Encode one window: `mel` is `[n_mels][frames]` row-major, already normalised and padded
    /// to what [`Encoder::mel_frames`] accepts.
    pub fn encode(&mut self, mel: &[f32], frames: usize) -> Result<CrossKv> {
        let _span = tracing::debug_span!("encode", frames).entered();
        let ok = match self.frames {
            MelFrames::Fixed(n) => frames == n,
            MelFrames::Dynamic { max } => frames > 0 && frames <= max,
        };
        if !ok || mel.len() != self.n_mels * frames {
            return Err(Error::Contract {
                path: self.path.clone(),
                tensor: "mel".into(),
                problem: format!(
                    "got {} values for {frames} frames of {} bins; the graph takes {:?}",
                    mel.len(),
                    self.n_mels,
                    self.frames
                ),
            });
        }
        let input = TensorRef::from_array_view(([1usize, self.n_mels, frames], mel))
            .map_err(Error::ort("creating the mel tensor"))?;
        let mut out = self
            .session
            .run(ort::inputs!["mel" => input])
            .map_err(Error::ort(format!("running {}", self.path.display())))?;
        let take = |out: &mut ort::session::SessionOutputs, name: &str| {
            out.remove(name).ok_or_else(|| Error::Contract {
                path: self.path.clone(),
                tensor: name.into(),
                problem: "not produced".into(),
            })
        };
        let k = take(&mut out, "n_layer_cross_k")?;
        let v = take(&mut out, "n_layer_cross_v")?;
        drop(out);
        let shape = k.shape().to_vec();
        Ok(CrossKv {
            batch: shape.get(1).copied().unwrap_or(1) as usize,
            frames: shape.get(2).copied().unwrap_or(0) as usize,
            k,
            v,
        })
    }
}
