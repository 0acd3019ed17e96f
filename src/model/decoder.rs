//! The text decoder: tokens in, next-token logits out, with a self-attention KV cache so each
//! step only feeds new tokens.
//!
//! Tensor contract (sherpa-onnx names; `L` = n_text_layer, `D` = n_text_state):
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `tokens` | i64 | `[N, n]` |
//! | in `in_n_layer_self_k_cache`, `in_n_layer_self_v_cache` | f32 | `[L, N, C, D]`: `C` = 448 (sherpa-onnx) or ≥ `offset` (steno, dynamic) |
//! | in `n_layer_cross_k`, `n_layer_cross_v` | f32 | `[L, N, T/2, D]` from the encoder |
//! | in `offset` | i64 | `[1]`: tokens already in the cache |
//! | out `logits` | f32 | `[N, n, n_vocab]` (sherpa-onnx) or `[N, 1, n_vocab]` (steno: last position only) |
//! | out `out_n_layer_self_k_cache`, `out_n_layer_self_v_cache` | f32 | `[L, N, C, D]` or `[L, N, offset + n, D]` |
//! | out `cross_qk` (optional, steno) | f32 | `[N, n, n_alignment_heads, T/2]`: pre-softmax cross-attention scores of the alignment heads |
//!
//! The output cache of one call is the input of the next, passed as the same ONNX Runtime value
//! (no copy on our side). sherpa-onnx's graph applies a causal mask that is only right when a
//! multi-token call starts at offset 0, so for those models later multi-token feeds go one
//! token at a time.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

use super::{CrossKv, ModelSpec, check_outlet};
use crate::error::{Error, Result};

/// Self-attention cache of one batch of hypotheses.
pub struct KvCache {
    k: DynValue,
    v: DynValue,
    batch: usize,
    /// Tokens already fed (the next call's `offset`).
    len: usize,
}

impl KvCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first call.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows (hypotheses).
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// Cross-attention scores of the alignment heads, `[batch, tokens, heads, frames]` row-major.
#[derive(Debug, Clone)]
pub struct CrossQk {
    pub data: Vec<f32>,
    pub tokens: usize,
    pub heads: usize,
    pub frames: usize,
}

/// The decoder session and its checked contract.
pub struct Decoder {
    session: Session,
    path: PathBuf,
    n_layer: usize,
    d: usize,
    n_vocab: usize,
    n_text_ctx: usize,
    /// `Some(C)`: the cache input is always `C` positions (sherpa-onnx).
    fixed_cache: Option<usize>,
    has_cross_qk: bool,
}

impl Decoder {
    pub(crate) fn new(session: Session, path: &Path, spec: &ModelSpec) -> Result<Decoder> {
        use TensorElementType::{Float32, Int64};
        check_outlet(path, session.inputs(), "tokens", Int64, 2)?;
        let cache = check_outlet(path, session.inputs(), "in_n_layer_self_k_cache", Float32, 4)?;
        check_outlet(path, session.inputs(), "in_n_layer_self_v_cache", Float32, 4)?;
        check_outlet(path, session.inputs(), "n_layer_cross_k", Float32, 4)?;
        check_outlet(path, session.inputs(), "n_layer_cross_v", Float32, 4)?;
        check_outlet(path, session.inputs(), "offset", Int64, 1)?;
        let logits = check_outlet(path, session.outputs(), "logits", Float32, 3)?;
        check_outlet(path, session.outputs(), "out_n_layer_self_k_cache", Float32, 4)?;
        check_outlet(path, session.outputs(), "out_n_layer_self_v_cache", Float32, 4)?;
        let has_cross_qk = session.outputs().iter().any(|o| o.name() == "cross_qk");
        if has_cross_qk {
            check_outlet(path, session.outputs(), "cross_qk", Float32, 4)?;
        }
        let contract = |tensor: &str, problem: String| Error::Contract {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            problem,
        };
        if cache[0] >= 0 && cache[0] as usize != spec.n_text_layer {
            return Err(contract(
                "in_n_layer_self_k_cache",
                format!("{} layers, metadata says {}", cache[0], spec.n_text_layer),
            ));
        }
        if cache[3] >= 0 && cache[3] as usize != spec.n_text_state {
            return Err(contract(
                "in_n_layer_self_k_cache",
                format!("width {}, metadata says {}", cache[3], spec.n_text_state),
            ));
        }
        if logits[2] >= 0 && logits[2] as usize != spec.n_vocab {
            return Err(contract(
                "logits",
                format!("{} classes, metadata says n_vocab {}", logits[2], spec.n_vocab),
            ));
        }
        Ok(Decoder {
            session,
            path: path.to_path_buf(),
            n_layer: spec.n_text_layer,
            d: spec.n_text_state,
            n_vocab: spec.n_vocab,
            n_text_ctx: spec.n_text_ctx,
            fixed_cache: (cache[2] > 0).then_some(cache[2] as usize),
            has_cross_qk,
        })
    }

    /// Vocabulary size (length of a logits row).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Longest token sequence (prompt + output) one window can hold.
    pub fn n_text_ctx(&self) -> usize {
        self.n_text_ctx
    }

    /// Whether this graph reports alignment-head attention (word timestamps).
    pub fn has_cross_qk(&self) -> bool {
        self.has_cross_qk
    }

    /// An empty cache for `batch` hypotheses.
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        // A steno graph reads `cache[:, :, :offset]`, so one unused position stands in for "empty"
        // (zero-sized tensors are avoided on purpose).
        let positions = self.fixed_cache.unwrap_or(1);
        let zeros = || -> Result<DynValue> {
            let shape = [self.n_layer, batch, positions, self.d];
            Tensor::from_array((shape, vec![0f32; shape.iter().product()]))
                .map(|t| t.into_dyn())
                .map_err(Error::ort("creating the self-attention cache"))
        };
        Ok(KvCache {
            k: zeros()?,
            v: zeros()?,
            batch,
            len: 0,
        })
    }

    /// Feed `tokens` (`batch` rows of `n`, row-major) after what `cache` holds and return the
    /// logits that follow the last token of each row (`batch × n_vocab`). With `want_qk`, also
    /// the alignment heads' attention for the fed tokens (steno graphs only).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
    ) -> Result<(Vec<f32>, Option<CrossQk>)> {
        let batch = cache.batch;
        if n == 0 || tokens.len() != batch * n || cross.batch != batch {
            return Err(Error::config(
                "tokens",
                format!(
                    "{} tokens for {batch} rows of {n}; cross K/V has {} rows",
                    tokens.len(),
                    cross.batch
                ),
            ));
        }
        if cache.len + n > self.n_text_ctx {
            return Err(Error::config(
                "tokens",
                format!(
                    "{} tokens exceed the decoder context of {}",
                    cache.len + n,
                    self.n_text_ctx
                ),
            ));
        }
        if n > 1 && cache.len > 0 && self.fixed_cache.is_some() {
            if want_qk {
                return Err(Error::config(
                    "word_timestamps",
                    "this model does not report cross attention",
                ));
            }
            let mut last = Vec::new();
            for i in 0..n {
                let column: Vec<u32> = (0..batch).map(|b| tokens[b * n + i]).collect();
                last = self.run(&column, 1, cache, cross, false)?.0;
            }
            return Ok((last, None));
        }
        self.run(tokens, n, cache, cross, want_qk)
    }

    fn run(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
    ) -> Result<(Vec<f32>, Option<CrossQk>)> {
        let batch = cache.batch;
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let offset = [cache.len as i64];
        let tokens_in = TensorRef::from_array_view(([batch, n], ids.as_slice()))
            .map_err(Error::ort("creating the tokens tensor"))?;
        let offset_in =
            TensorRef::from_array_view(([1usize], &offset[..])).map_err(Error::ort("creating the offset tensor"))?;
        let mut out = self
            .session
            .run(ort::inputs![
                "tokens" => tokens_in,
                "in_n_layer_self_k_cache" => &cache.k,
                "in_n_layer_self_v_cache" => &cache.v,
                "n_layer_cross_k" => &cross.k,
                "n_layer_cross_v" => &cross.v,
                "offset" => offset_in,
            ])
            .map_err(Error::ort(format!("running {}", self.path.display())))?;
        let missing = |name: &str| Error::Contract {
            path: self.path.clone(),
            tensor: name.into(),
            problem: "not produced".into(),
        };
        let logits = {
            let value = out.get("logits").ok_or_else(|| missing("logits"))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading logits"))?;
            let positions = shape.get(1).copied().unwrap_or(0) as usize;
            if shape.len() != 3 || shape[0] as usize != batch || positions == 0 || shape[2] as usize != self.n_vocab {
                return Err(Error::Contract {
                    path: self.path.clone(),
                    tensor: "logits".into(),
                    problem: format!("shape {:?} for {batch} rows of {n} tokens", &shape[..]),
                });
            }
            let mut rows = Vec::with_capacity(batch * self.n_vocab);
            for b in 0..batch {
                let start = (b * positions + positions - 1) * self.n_vocab;
                rows.extend_from_slice(&data[start..start + self.n_vocab]);
            }
            rows
        };
        let qk = if want_qk && self.has_cross_qk {
            let value = out.get("cross_qk").ok_or_else(|| missing("cross_qk"))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading cross_qk"))?;
            Some(CrossQk {
                data: data.to_vec(),
                tokens: shape[1] as usize,
                heads: shape[2] as usize,
                frames: shape[3] as usize,
            })
        } else {
            None
        };
        cache.k = out
            .remove("out_n_layer_self_k_cache")
            .ok_or_else(|| missing("out_n_layer_self_k_cache"))?;
        cache.v = out
            .remove("out_n_layer_self_v_cache")
            .ok_or_else(|| missing("out_n_layer_self_v_cache"))?;
        cache.len += n;
        Ok((logits, qk))
    }

    /// Reorder the cache's rows: new row `i` is old row `source[i]` (beam search).
    pub fn reorder(&self, cache: &mut KvCache, source: &[usize]) -> Result<()> {
        if source.iter().any(|&s| s >= cache.batch) {
            return Err(Error::config(
                "beam",
                format!("row index out of range 0..{}", cache.batch),
            ));
        }
        let gather = |value: &DynValue| -> Result<DynValue> {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading the cache"))?;
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let (layers, rows, per_row) = (dims[0], dims[1], dims[2] * dims[3]);
            let mut out = Vec::with_capacity(layers * source.len() * per_row);
            for l in 0..layers {
                for &s in source {
                    let start = (l * rows + s) * per_row;
                    out.extend_from_slice(&data[start..start + per_row]);
                }
            }
            Tensor::from_array(([layers, source.len(), dims[2], dims[3]], out))
                .map(|t| t.into_dyn())
                .map_err(Error::ort("reordering the cache"))
        };
        cache.k = gather(&cache.k)?;
        cache.v = gather(&cache.v)?;
        cache.batch = source.len();
        Ok(())
    }
}
