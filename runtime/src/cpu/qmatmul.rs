//! Matmul and embedding on a weight as packed: its row-range parts ([`crate::plan::WeightPart`]),
//! each in its own format, read in place from `weights.bin` (never widened at load).
//! One row (decode) is a parallel GEMV of [`qdot::dot_row`] per output; several rows (prefill)
//! dequantise blocks of weight rows to f32 (bit-exact, [`qdot::dequant_row`]) and run SGEMM,
//! except prefills of up to [`INT_PREFILL_MAX_ROWS`] rows on the integer path: every weight row against all the rows' digits at
//! once ([`qdot::dot_rows_int_multi`]), bit for bit the rows one at a time.
use std::cell::RefCell;

use rayon::prelude::*;

use super::kernels;
use super::qdot::{self, DotPath};
use crate::plan::WeightInfo;
use crate::quant::{PartView, WeightFormat};

/// One part of a matrix: rows `row0..row0 + rows` in `format`, at `start..start + len` of the
/// byte slice the [`QMatrix`] views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartRef {
    pub row0: usize,
    pub rows: usize,
    pub format: WeightFormat,
    pub start: usize,
    pub len: usize,
}

/// The parts of a weight, their offsets relative to the weight's own bytes.
pub fn part_refs(w: &WeightInfo) -> Vec<PartRef> {
    let mut row0 = 0;
    w.parts
        .iter()
        .map(|p| {
            let start = (p.offset - w.offset) as usize;
            let r = PartRef { row0, rows: p.rows, format: p.format, start, len: p.bytes as usize };
            row0 += p.rows;
            r
        })
        .collect()
}

/// A `[n, k]` matrix viewed in place: `bytes` holds every part at its `start`.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub bytes: &'a [u8],
    pub parts: &'a [PartRef],
    pub k: usize,
}

impl<'a> QMatrix<'a> {
    /// The part's view. Panics if the part does not fit its format's layout (the plan validator
    /// checked that at open).
    pub fn view(&self, p: &PartRef) -> PartView<'a> {
        PartView::new(p.format, p.rows, self.k, &self.bytes[p.start..p.start + p.len])
            .expect("part layout validated at open")
    }

    /// Rows of the whole matrix.
    pub fn n(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Row `j` of the matrix (any part) dequantised into `out[..k]`.
    pub fn dequant_row(&self, j: usize, out: &mut [f32]) {
        let p = self.parts.iter().find(|p| (p.row0..p.row0 + p.rows).contains(&j)).expect("row in range");
        qdot::dequant_row(&self.view(p), j - p.row0, out);
    }
}

/// Prefills of at most this many rows run on the integer dot (the default path; each weight group
/// against every row's digits, the same bits as row by row) instead of dequantising the weight
/// for SGEMM. Measured on the default model (2-core EPYC, `generate --backend cpu -v`, median
/// prefill ms of 5-9 runs, integer / SGEMM, little other load): 8 tokens 102 / 620, 24: 248 / 665, 49: 494
/// / 852, 65: 735 / 942, 80: 871 / 996, 96: 975 / 1108, 112: 1260 / 1176, 128: 1683 / 1228.
/// Dequantising costs the SGEMM path ~400 ms whatever the row count, the integer dot ~10 ms a
/// row (more past ~100 rows; probably the rows' digits, streamed once per weight row, outgrow
/// L2): the break-even is ~100 rows on an idle machine, but ~55-65 with another process busy on
/// the cores (the integer dot loses more to it: 55 and 65 tokens ~7 % slower than SGEMM, 80
/// ~20 %, 96 ~40 %). 64 is the safe side of both: typical chat prompts (20-60 tokens) stay on
/// the integer dot. `QWEN_AOT_INT_PREFILL_MAX_ROWS` overrides it (a tuning knob, read once:
/// [`int_prefill_max_rows`]; 1 sends every multi-row call to SGEMM).
pub const INT_PREFILL_MAX_ROWS: usize = 64;

/// [`INT_PREFILL_MAX_ROWS`], or `QWEN_AOT_INT_PREFILL_MAX_ROWS` where set to a number.
pub fn int_prefill_max_rows() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("QWEN_AOT_INT_PREFILL_MAX_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(INT_PREFILL_MAX_ROWS)
    })
}

/// `out[t, j] = sum_i x[t, i] * w[j, i]` (+ `residual[t, j]`), `x: [rows, k]`, `w: [n, k]`; the
/// same function as [`super::kernels::matmul`] on the dequantised weight. One row takes `path`
/// for its quantized parts; several rows dequantise exactly and run SGEMM, except that on the
/// integer path up to [`int_prefill_max_rows`] rows take the multi-input integer dot (each row's
/// result bit for bit what it alone would get).
#[allow(clippy::too_many_arguments)]
pub fn matmul_q(
    x: &[f32],
    w: &QMatrix,
    rows: usize,
    n: usize,
    k: usize,
    residual: Option<&[f32]>,
    out: &mut [f32],
    path: DotPath,
) {
    assert!(w.k == k && w.n() == n && x.len() >= rows * k && out.len() >= rows * n, "matmul_q: shapes");
    // (A weight of float parts only -- an f16 plan's -- has no integer dot: it keeps SGEMM, which
    // reads it once instead of once per row.)
    let quantized = w.parts.iter().any(|p| !p.format.is_float());
    if let (true, Some(nd)) = (quantized && rows > 1 && rows <= int_prefill_max_rows(), path.int_digits()) {
        // A prompt of up to a few dozen rows: dequantising the whole weight to f32 for SGEMM
        // costs more than the integer dot (see INT_PREFILL_MAX_ROWS). Every row's digits once,
        // then each weight group against all of them in blocks of up to four
        // (qdot::dot_rows_int_multi): the same bits as the rows one at a time, each weight row
        // read from memory once.
        short_prefill_int(x, w, rows, n, k, residual, out, nd);
        return;
    }
    if rows == 1 {
        let x = &x[..k];
        // Chunks of 16 rows of every part in one parallel loop (a part of a concatenated weight
        // can be as small as 128 rows): enough to balance two to a few dozen cores.
        let views: Vec<_> = w.parts.iter().map(|p| w.view(p)).collect();
        let mut chunks = Vec::with_capacity(n.div_ceil(16) + w.parts.len());
        let mut rest = &mut out[..n];
        for (v, p) in views.iter().zip(w.parts) {
            let (o, tail) = rest.split_at_mut(p.rows);
            rest = tail;
            chunks.extend(o.chunks_mut(16).enumerate().map(|(c, o)| (v, 16 * c, o)));
        }
        if let (true, Some(n)) = (quantized, path.int_digits()) {
            // The input as digits once for every quantized part's rows (see qdot::int), in this
            // thread's reused buffers (a fresh set if a stolen job on this thread holds them).
            thread_local! {
                static DIGITS: RefCell<qdot::Digits> = RefCell::default();
            }
            let run = |d: &mut qdot::Digits| {
                d.fill(x);
                let d = &*d;
                chunks.into_par_iter().for_each(|(v, r0, o)| match v.format.is_float() {
                    // Float formats' dot ignores the sums of x.
                    true => o.iter_mut().enumerate().for_each(|(i, o)| *o = qdot::dot_row(v, r0 + i, x, &[])),
                    false => qdot::dot_rows_int(v, r0, d, o, n),
                });
            };
            DIGITS.with(|c| match c.try_borrow_mut() {
                Ok(mut d) => run(&mut d),
                Err(_) => run(&mut qdot::Digits::default()),
            });
        } else {
            let sx16 = qdot::sums16(x);
            chunks.into_par_iter().for_each(|(v, r0, o)| {
                o.iter_mut().enumerate().for_each(|(i, o)| *o = qdot::dot_row(v, r0 + i, x, &sx16))
            });
        }
    } else {
        // Blocks of weight rows: dequantise (in parallel), then one SGEMM into the block's
        // columns of `out` (row stride n). 256 rows x k <= 4864: 5 MB, cache-friendly enough.
        const BLOCK: usize = 256;
        let mut wf = vec![0.0f32; BLOCK.min(n) * k];
        for p in w.parts {
            let v = w.view(p);
            for r0 in (0..p.rows).step_by(BLOCK) {
                let nb = BLOCK.min(p.rows - r0);
                wf[..nb * k].par_chunks_mut(k).enumerate().for_each(|(i, d)| qdot::dequant_row(&v, r0 + i, d));
                let j0 = p.row0 + r0;
                kernels::sgemm_columns(x, &wf, rows, k, nb, out, j0, n);
            }
        }
    }
    if let Some(r) = residual {
        for (o, &v) in out[..rows * n].iter_mut().zip(r) {
            *o += v;
        }
    }
}

/// [`matmul_q`] for `2..=int_prefill_max_rows()` rows on the integer path, on a weight with
/// quantized parts (its float parts, if any, keep the f32 dot per row): bit for bit each row
/// through the one-row path, but every weight row read once for all the rows. Chunks of 16 weight
/// rows of every part in one parallel loop (as the one-row path); each chunk's `[16, rows]`
/// products go through a small per-task buffer straight into `out`'s columns, residual added.
/// (A `[n, rows]` buffer for the whole weight, allocated per call, was 5.5 MB for an 8-row pass
/// through the default model's LM head, and the allocator kept such buffers resident: host RSS
/// grew by ~1.3 MiB steps over the first speculative generations; experiments/LOG.md,
/// twenty-second session.)
#[allow(clippy::too_many_arguments)]
fn short_prefill_int(
    x: &[f32],
    w: &QMatrix,
    rows: usize,
    n: usize,
    k: usize,
    residual: Option<&[f32]>,
    out: &mut [f32],
    nd: qdot::IntDigits,
) {
    thread_local! {
        static DIGITS: RefCell<Vec<qdot::Digits>> = RefCell::default();
    }
    /// `out`'s base, shared by the chunks, which write disjoint columns.
    #[derive(Clone, Copy)]
    struct Columns(*mut f32);
    // SAFETY: the pointer is only written through at disjoint indices (each chunk owns its
    // columns in every row) while `out` is mutably borrowed by this function, which waits for
    // every task (`for_each_init` returns when all chunks are done).
    unsafe impl Send for Columns {}
    // SAFETY: as above: concurrent uses never touch the same element.
    unsafe impl Sync for Columns {}
    impl Columns {
        /// # Safety
        /// `i` is inside `out[..rows * n]` and no other task writes element `i`.
        unsafe fn write(&self, i: usize, v: f32) {
            // SAFETY: the caller's contract.
            unsafe { *self.0.add(i) = v }
        }
    }
    let cols = Columns(out[..rows * n].as_mut_ptr());
    let views: Vec<_> = w.parts.iter().map(|p| w.view(p)).collect();
    let run = |d: &mut Vec<qdot::Digits>| {
        // The caller sends only weights with quantized parts: every row's digits are needed.
        d.resize_with(rows, Default::default);
        for (d, x) in d.iter_mut().zip(x.chunks_exact(k)) {
            d.fill_multi(x);
        }
        let d = &d[..rows];
        // (part view, its first column in `out`, first row in the part, rows)
        let mut chunks = Vec::with_capacity(n.div_ceil(16) + w.parts.len());
        let mut col0 = 0;
        for (v, p) in views.iter().zip(w.parts) {
            chunks.extend((0..p.rows).step_by(16).map(|r0| (v, col0, r0, 16.min(p.rows - r0))));
            col0 += p.rows;
        }
        chunks.into_par_iter().for_each_init(Vec::new, |buf: &mut Vec<f32>, (v, col0, r0, len)| {
            buf.clear();
            buf.resize(len * rows, 0.0);
            match v.format.is_float() {
                // Float formats' dot ignores the sums of x (as on the one-row path).
                true => buf.iter_mut().enumerate().for_each(|(i, o)| {
                    let t = i % rows;
                    *o = qdot::dot_row(v, r0 + i / rows, &x[t * k..(t + 1) * k], &[])
                }),
                false => qdot::dot_rows_int_multi(v, r0, d, buf, nd),
            }
            for (i, products) in buf.chunks_exact(rows).enumerate() {
                let j = col0 + r0 + i;
                for (t, &y) in products.iter().enumerate() {
                    let y = match residual {
                        Some(r) => y + r[t * n + j],
                        None => y,
                    };
                    // SAFETY: t < rows and j < n, so the index is inside `out[..rows * n]`, and
                    // column j belongs to this chunk alone (see `Columns`).
                    unsafe { cols.write(t * n + j, y) };
                }
            }
        });
    };
    DIGITS.with(|c| match c.try_borrow_mut() {
        Ok(mut d) => run(&mut d),
        Err(_) => run(&mut Vec::new()),
    });
}

/// `out[t, :] = table[tokens[t], :]`, one dequantised row each. Ids were range-checked.
pub fn embed_q(tokens: &[usize], table: &QMatrix, hidden: usize, out: &mut [f32]) {
    for (t, &id) in tokens.iter().enumerate() {
        table.dequant_row(id, &mut out[t * hidden..(t + 1) * hidden]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::qdot::check::{random_part, Rng};
    use crate::quant::reference;

    /// A matrix of parts `(format, rows)` with random canonical bytes, back to back.
    fn matrix(spec: &[(WeightFormat, usize)], k: usize, rng: &mut Rng) -> (Vec<u8>, Vec<PartRef>) {
        let (mut bytes, mut parts, mut row0) = (Vec::new(), Vec::new(), 0);
        for &(format, rows) in spec {
            let b = random_part(format, rows, k, rng);
            parts.push(PartRef { row0, rows, format, start: bytes.len(), len: b.len() });
            bytes.extend_from_slice(&b);
            row0 += rows;
        }
        (bytes, parts)
    }

    /// A multi-row call on the integer path (2..=INT_PREFILL_MAX_ROWS rows: the multi-input dot,
    /// blocks of up to four rows, the remainder split evenly) is, bit for bit, its rows one at a
    /// time, on two and three digits, for a matrix of the default model's quantized formats and a
    /// float part: every count up to 9, then counts around the blocks' edges up to the threshold.
    #[test]
    fn short_prefill_on_the_integer_path_is_row_by_row() {
        let mut rng = Rng(17);
        let k = 512;
        let spec =
            [(WeightFormat::Q5_0, 40), (WeightFormat::Q6_K, 19), (WeightFormat::F16, 5), (WeightFormat::Q8_0, 24)];
        let (bytes, parts) = matrix(&spec, k, &mut rng);
        let w = QMatrix { bytes: &bytes, parts: &parts, k };
        let n = w.n();
        for rows in (2..=9).chain([13, 16, 30, 33, INT_PREFILL_MAX_ROWS - 1, INT_PREFILL_MAX_ROWS]) {
            let x: Vec<f32> = (0..rows * k).map(|_| rng.unit()).collect();
            let res: Vec<f32> = (0..rows * n).map(|_| rng.unit()).collect();
            for digits in [qdot::IntDigits::Two, qdot::IntDigits::Three] {
                let path = DotPath::Int(digits);
                for residual in [None, Some(&res[..])] {
                    let mut out = vec![f32::NAN; rows * n];
                    matmul_q(&x, &w, rows, n, k, residual, &mut out, path);
                    for t in 0..rows {
                        let mut one = vec![f32::NAN; n];
                        let r = residual.map(|r| &r[t * n..(t + 1) * n]);
                        matmul_q(&x[t * k..(t + 1) * k], &w, 1, n, k, r, &mut one, path);
                        let want: Vec<u32> = one.iter().map(|v| v.to_bits()).collect();
                        let got: Vec<u32> = out[t * n..(t + 1) * n].iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "rows {rows} {digits:?} residual {} row {t}", residual.is_some());
                        assert!(one.iter().all(|v| v.is_finite()));
                    }
                }
            }
        }
    }

    /// A weight of float parts only (an f16 plan's) keeps SGEMM for several rows on the integer
    /// path too: the same bits as the exact path's SGEMM, not a per-row f32 dot.
    #[test]
    fn float_weights_keep_sgemm_for_short_prefills() {
        let mut rng = Rng(29);
        let k = 512;
        let (bytes, parts) = matrix(&[(WeightFormat::F16, 37)], k, &mut rng);
        let w = QMatrix { bytes: &bytes, parts: &parts, k };
        let n = w.n();
        for rows in [2usize, 4, 9] {
            let x: Vec<f32> = (0..rows * k).map(|_| rng.unit()).collect();
            let (mut int, mut exact) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
            matmul_q(&x, &w, rows, n, k, None, &mut int, DotPath::Int(qdot::IntDigits::Two));
            matmul_q(&x, &w, rows, n, k, None, &mut exact, DotPath::F32);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&int), bits(&exact), "rows {rows}");
            assert!(int.iter().all(|v| v.is_finite()));
        }
    }

    /// One row on either integer path: each quantized part's rows are its integer dot against the
    /// input's digits (two or three of them), float parts keep the f32 dot, plus the residual
    /// (same bits).
    #[test]
    fn one_row_int_path_is_the_integer_dot_per_part() {
        let mut rng = Rng(43);
        let k = 896;
        let (bytes, parts) =
            matrix(&[(WeightFormat::Q5_0, 100), (WeightFormat::F16, 7), (WeightFormat::Q8_0, 21)], k, &mut rng);
        let w = QMatrix { bytes: &bytes, parts: &parts, k };
        let n = w.n();
        let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
        let res: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let d = qdot::Digits::quantize(&x);
        for digits in [qdot::IntDigits::Two, qdot::IntDigits::Three] {
            let path = DotPath::Int(digits);
            let mut out = vec![f32::NAN; n];
            matmul_q(&x, &w, 1, n, k, Some(&res), &mut out, path);
            for p in &parts {
                let v = w.view(p);
                for j in 0..p.rows {
                    let dot = if p.format.is_float() {
                        qdot::dot_row(&v, j, &x, &qdot::sums16(&x))
                    } else {
                        qdot::dot_row_int(&v, j, &d, digits)
                    };
                    let want = (dot + res[p.row0 + j]).to_bits();
                    assert_eq!(out[p.row0 + j].to_bits(), want, "{path:?} {:?} row {j}", p.format);
                }
            }
        }
    }

    /// The qkv shape of the default model (Q5_0 q|k, Q8_0 v) and a three-part gate|up-like one
    /// whose first part crosses the prefill block of 256 rows.
    #[test]
    fn mixed_part_matmul_equals_each_part_alone_and_the_reference() {
        let mut rng = Rng(42);
        let k = 896;
        for spec in [
            vec![(WeightFormat::Q5_0, 96), (WeightFormat::Q8_0, 16)],
            vec![(WeightFormat::Q4_0, 300), (WeightFormat::F16, 7), (WeightFormat::Q5_1, 33)],
        ] {
            let (bytes, parts) = matrix(&spec, k, &mut rng);
            let w = QMatrix { bytes: &bytes, parts: &parts, k };
            let n = w.n();
            for rows in [1, 5] {
                let x: Vec<f32> = (0..rows * k).map(|_| rng.unit()).collect();
                let res: Vec<f32> = (0..rows * n).map(|_| rng.unit()).collect();
                let mut out = vec![f32::NAN; rows * n];
                matmul_q(&x, &w, rows, n, k, Some(&res), &mut out, DotPath::F32);
                for p in &parts {
                    // The same part alone, as its own one-part matrix (row0 = 0): same bits.
                    let alone = [PartRef { row0: 0, ..*p }];
                    let wp = QMatrix { bytes: &bytes, parts: &alone, k };
                    let mut po = vec![f32::NAN; rows * p.rows];
                    matmul_q(&x, &wp, rows, p.rows, k, None, &mut po, DotPath::F32);
                    let v = w.view(p);
                    let mut wr = vec![0.0f32; k];
                    for j in 0..p.rows {
                        reference::dequant_row(&v, j, &mut wr);
                        for t in 0..rows {
                            let got = out[t * n + p.row0 + j];
                            assert_eq!(got.to_bits(), (po[t * p.rows + j] + res[t * n + p.row0 + j]).to_bits());
                            let xt = &x[t * k..(t + 1) * k];
                            let exact: f64 = wr.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                                + res[t * n + p.row0 + j] as f64;
                            let mag: f64 =
                                wr.iter().zip(xt).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>() + 1.0;
                            // Random scales up to 65504 with minimums: relative to the magnitude
                            // of the terms, k-long f32 sums (see qdot's tests for the bound).
                            assert!(
                                (got as f64 - exact).abs() <= (k / 8 + 8) as f64 * 6e-8 * mag * 4.0,
                                "{:?} row {j} t {t}: {got} vs {exact}",
                                p.format
                            );
                        }
                    }
                }
            }
            // Embedding rows from every part: bit-exact with the reference.
            let ids: Vec<usize> = parts.iter().flat_map(|p| [p.row0, p.row0 + p.rows - 1]).collect();
            let mut got = vec![f32::NAN; ids.len() * k];
            embed_q(&ids, &w, k, &mut got);
            for (t, &id) in ids.iter().enumerate() {
                let p = parts
                    .iter()
                    .find(|p| (p.row0..p.row0 + p.rows).contains(&id))
                    .expect("parts cover every row (validated at open; ids range-checked by the caller)");
                let mut want = vec![0.0f32; k];
                reference::dequant_row(&w.view(p), id - p.row0, &mut want);
                let g: Vec<u32> = got[t * k..(t + 1) * k].iter().map(|v| v.to_bits()).collect();
                assert_eq!(g, want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "embed row {id}");
            }
        }
    }
}
