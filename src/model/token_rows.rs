//! The decoder's token lookup, done on steno's side: token ids in, their embedding rows
//! (`f32`, `D` each) out, read from the table the graph's logits projection uses, in the
//! graph's external data file.
//!
//! Why not a Gather in the graph: ONNX Runtime prepacks the logits weight into a copy of its
//! own and frees the original only when no other node reads it. With a Gather reading the same
//! table both copies stayed resident: 80 MB more for fp32 tiny.en (20 MB for int8). Here a
//! step reads a few rows with positioned reads (`pread`), so the table costs no resident
//! memory at all; the file's pages are the page cache's.
//!
//! Where the table is comes from the decoder's `metadata_props` (`models/export_whisper.py`,
//! "TOKEN_ROWS"): `token_rows` (`f32` or `u8_block32`), `token_rows_file` (beside the graph),
//! `token_rows_offset` and, for `u8_block32`, `token_rows_scales_offset`, in bytes.
//! `u8_block32` rows are dequantised as MatMulNBits (bits 8, blocks of 32) does and as the
//! graph's Gather did before: `(q − 128) × scale`, in `f32`, so the rows are bit-identical.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Values per scale in a `u8_block32` table.
const BLOCK: usize = 32;
/// MatMulNBits' default zero point for 8 bits.
const ZERO_POINT: f32 = 128.0;

/// How the table stores a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `[n_vocab, D]` little-endian `f32`.
    F32,
    /// `[n_vocab, D]` `u8` and `[n_vocab, D / 32]` `f32` scales.
    U8Block32 { scales_offset: u64 },
}

/// An open token table (see the module doc).
#[derive(Debug)]
pub(crate) struct TokenRows {
    file: File,
    path: PathBuf,
    kind: Kind,
    offset: u64,
    d: usize,
    n_vocab: usize,
    /// One row's bytes and, for `u8_block32`, its scales (reused from call to call).
    bytes: Vec<u8>,
    scales: Vec<f32>,
}

impl TokenRows {
    /// Open the table a decoder graph at `graph` describes in its `metadata`; `d` and
    /// `n_vocab` are the model's. Errors name the graph and the key, or the data file.
    pub(crate) fn open(
        graph: &Path,
        metadata: &HashMap<String, String>,
        d: usize,
        n_vocab: usize,
    ) -> Result<TokenRows> {
        let bad = |key: &str, problem: String| Error::Metadata {
            path: graph.to_path_buf(),
            key: key.into(),
            problem,
        };
        let get = |key: &str| metadata.get(key).ok_or_else(|| bad(key, "missing".into()));
        let number = |key: &str| -> Result<u64> {
            let v = get(key)?;
            v.parse().map_err(|_| bad(key, format!("`{v}` is not a byte offset")))
        };
        let kind = match get("token_rows")?.as_str() {
            "f32" => Kind::F32,
            "u8_block32" => {
                if !d.is_multiple_of(BLOCK) {
                    return Err(bad(
                        "token_rows",
                        format!("u8_block32 rows need a width divisible by {BLOCK}, not {d}"),
                    ));
                }
                Kind::U8Block32 {
                    scales_offset: number("token_rows_scales_offset")?,
                }
            }
            other => return Err(bad("token_rows", format!("`{other}` is not one of f32, u8_block32"))),
        };
        let name = get("token_rows_file")?;
        // A bare file name beside the graph, as ONNX external data is.
        if name.is_empty() || Path::new(name).components().count() != 1 || name.starts_with('.') {
            return Err(bad(
                "token_rows_file",
                format!("`{name}` is not a file name beside the graph"),
            ));
        }
        let offset = number("token_rows_offset")?;
        let path = graph.parent().unwrap_or(Path::new(".")).join(name);
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?
            .len();
        let (table_bytes, table_end) = match kind {
            Kind::F32 => (n_vocab * d * 4, offset),
            Kind::U8Block32 { scales_offset } => (n_vocab * d, scales_offset + (n_vocab * d / BLOCK * 4) as u64),
        };
        let needed = (offset + table_bytes as u64).max(table_end);
        if len < needed {
            return Err(Error::Format {
                path,
                line: 0,
                problem: format!(
                    "{len} bytes, but {}'s token table needs {needed} (an incomplete copy? run `models/provision --force`)",
                    graph.display()
                ),
            });
        }
        Ok(TokenRows {
            file,
            path,
            kind,
            offset,
            d,
            n_vocab,
            bytes: Vec::new(),
            scales: Vec::new(),
        })
    }

    /// Width of a row.
    pub(crate) fn width(&self) -> usize {
        self.d
    }

    /// Replace `out` with the rows of `tokens`, in order (`tokens.len() × D` values).
    pub(crate) fn gather(&mut self, tokens: &[u32], out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.reserve(tokens.len() * self.d);
        for &token in tokens {
            let t = token as usize;
            if t >= self.n_vocab {
                return Err(Error::config(
                    "tokens",
                    format!("token {token} is outside the vocabulary of {}", self.n_vocab),
                ));
            }
            match self.kind {
                Kind::F32 => {
                    self.read(self.offset + (t * self.d * 4) as u64, self.d * 4)?;
                    out.extend(
                        self.bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
                Kind::U8Block32 { scales_offset } => {
                    let blocks = self.d / BLOCK;
                    self.read(scales_offset + (t * blocks * 4) as u64, blocks * 4)?;
                    self.scales.clear();
                    self.scales.extend(
                        self.bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                    self.read(self.offset + (t * self.d) as u64, self.d)?;
                    dequantise_row(&self.bytes, &self.scales, out);
                }
            }
        }
        Ok(())
    }

    /// Fill `self.bytes` with `len` bytes at `at`.
    fn read(&mut self, at: u64, len: usize) -> Result<()> {
        self.bytes.resize(len, 0);
        read_exact_at(&self.file, &mut self.bytes, at).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Append `(q − 128) × scale` for each value of one `u8_block32` row (`scales`: one per 32).
fn dequantise_row(q: &[u8], scales: &[f32], out: &mut Vec<f32>) {
    for (block, &scale) in q.chunks_exact(BLOCK).zip(scales) {
        out.extend(block.iter().map(|&v| (f32::from(v) - ZERO_POINT) * scale));
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, at)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn f32_rows_come_back_in_token_order() {
        let dir = tempfile::tempdir().unwrap();
        let (d, n_vocab, offset) = (4usize, 3usize, 4096usize);
        let mut bytes = vec![0u8; offset];
        for v in 0..n_vocab * d {
            bytes.extend((v as f32 * 0.5).to_le_bytes());
        }
        std::fs::write(dir.path().join("dec.onnx.data"), &bytes).unwrap();
        let md = metadata(&[
            ("token_rows", "f32"),
            ("token_rows_file", "dec.onnx.data"),
            ("token_rows_offset", "4096"),
        ]);
        let mut rows = TokenRows::open(&dir.path().join("dec.onnx"), &md, d, n_vocab).unwrap();
        let mut out = vec![9.0];
        rows.gather(&[2, 0, 2], &mut out).unwrap();
        assert_eq!(out, [4.0, 4.5, 5.0, 5.5, 0.0, 0.5, 1.0, 1.5, 4.0, 4.5, 5.0, 5.5]);
        let err = rows.gather(&[3], &mut out).unwrap_err().to_string();
        assert!(err.contains("token 3 is outside the vocabulary of 3"), "{err}");
    }

    #[test]
    fn u8_block32_rows_dequantise_as_matmul_nbits() {
        let dir = tempfile::tempdir().unwrap();
        let (d, n_vocab) = (64usize, 2usize);
        let q: Vec<u8> = (0..n_vocab * d).map(|i| (i * 7 % 256) as u8).collect();
        let scales = [0.5f32, 0.25, 2.0, -1.0];
        let mut bytes = q.clone();
        let scales_offset = bytes.len();
        for s in scales {
            bytes.extend(s.to_le_bytes());
        }
        std::fs::write(dir.path().join("t.data"), &bytes).unwrap();
        let md = metadata(&[
            ("token_rows", "u8_block32"),
            ("token_rows_file", "t.data"),
            ("token_rows_offset", "0"),
            ("token_rows_scales_offset", &scales_offset.to_string()),
        ]);
        let mut rows = TokenRows::open(&dir.path().join("dec.onnx"), &md, d, n_vocab).unwrap();
        let mut out = Vec::new();
        rows.gather(&[1], &mut out).unwrap();
        let want: Vec<f32> = (0..d)
            .map(|j| (f32::from(q[d + j]) - 128.0) * scales[2 + j / 32])
            .collect();
        assert_eq!(out, want);
        assert_eq!(out[0], (f32::from(q[64]) - 128.0) * 2.0);
    }

    #[test]
    fn bad_metadata_and_short_files_name_the_key_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.data"), [0u8; 16]).unwrap();
        let graph = dir.path().join("dec.onnx");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "metadata `token_rows`: missing"),
            (&[("token_rows", "f16")], "`f16` is not one of f32, u8_block32"),
            (
                &[("token_rows", "f32"), ("token_rows_file", "../t.data")],
                "metadata `token_rows_file`",
            ),
            (
                &[
                    ("token_rows", "f32"),
                    ("token_rows_file", "t.data"),
                    ("token_rows_offset", "x"),
                ],
                "`x` is not a byte offset",
            ),
            (
                &[
                    ("token_rows", "f32"),
                    ("token_rows_file", "t.data"),
                    ("token_rows_offset", "0"),
                ],
                "16 bytes, but",
            ),
            (
                &[
                    ("token_rows", "f32"),
                    ("token_rows_file", "gone.data"),
                    ("token_rows_offset", "0"),
                ],
                "gone.data",
            ),
        ];
        for (pairs, want) in cases {
            let err = TokenRows::open(&graph, &metadata(pairs), 4, 3).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }
}
