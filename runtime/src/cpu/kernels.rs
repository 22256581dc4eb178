//! CPU twins of every plan step: slow, obvious f32 code that defines what each GPU kernel must
//! compute. The CPU executor runs these; `qwen-aot check` and the kernel tests compare the CUDA
//! kernels against them. Semantics are those documented on [`crate::plan::Step`].
//!
//! Layout: activations are row-major `[rows, row_elems]`; weight matrices `[n, k]` (here in f32 or
//! f16; the executor reads the packed formats through [`super::qmatmul`], whose results equal
//! [`matmul`] on the dequantised weight); the KV cache of one layer is `[max_seq, n_kv_heads, head_dim]`.
use rayon::prelude::*;

/// [`embed`] from the f16 table as packed.
pub fn embed_f16(tokens: &[i32], table: &[half::f16], hidden: usize, out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    for (t, &id) in tokens.iter().enumerate() {
        let row = id as usize * hidden;
        table[row..row + hidden].convert_to_f32_slice(&mut out[t * hidden..(t + 1) * hidden]);
    }
}

/// `out[t, :] = table[tokens[t], :]`. Token ids were range-checked by the caller.
pub fn embed(tokens: &[i32], table: &[f32], hidden: usize, out: &mut [f32]) {
    for (t, &id) in tokens.iter().enumerate() {
        let row = id as usize * hidden;
        out[t * hidden..(t + 1) * hidden].copy_from_slice(&table[row..row + hidden]);
    }
}

/// RMSNorm of one row into `out` (mean of squares and scaling in f32).
pub fn rms_norm_row(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * inv * w;
    }
}

/// `out[t] = rms_norm(x[t]) * weight` for every row of `x` (`row` elements each).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, row: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
        rms_norm_row(xr, weight, eps, or);
    }
}

/// `sum = a + b; norm_out = rms_norm(sum) * weight`, row by row.
pub fn add_rms_norm(
    a: &[f32],
    b: &[f32],
    weight: &[f32],
    eps: f32,
    row: usize,
    sum_out: &mut [f32],
    norm_out: &mut [f32],
) {
    for (s, (x, y)) in sum_out.iter_mut().zip(a.iter().zip(b)) {
        *s = x + y;
    }
    rms_norm(sum_out, weight, eps, row, norm_out);
}

/// `out[t, j] = sum_i x[t, i] * w[j, i]` (+ `residual[t, j]`), `x: [rows, k]`, `w: [n, k]`.
/// One row uses a parallel GEMV (decode); several rows use a blocked SGEMM (prefill).
pub fn matmul(x: &[f32], w: &[f32], rows: usize, n: usize, k: usize, residual: Option<&[f32]>, out: &mut [f32]) {
    assert!(x.len() >= rows * k && w.len() >= n * k && out.len() >= rows * n, "matmul: slice too short");
    if rows == 1 {
        gemv(&mut out[..n], |j| dot(&x[..k], &w[j * k..(j + 1) * k]));
    } else {
        // SAFETY: the assert above guarantees x holds rows*k, w holds n*k and out holds rows*n
        // elements; the strides describe exactly those row-major layouts (w read transposed:
        // B[i, j] = w[j*k + i]), and out does not alias x or w (distinct borrows).
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                w.as_ptr(),
                1,
                k as isize,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
    add_residual(&mut out[..rows * n], residual);
}

/// `out[j] = row_dot(j)` for every output of a one-row matmul, in parallel chunks of 64 outputs.
fn gemv(out: &mut [f32], row_dot: impl Fn(usize) -> f32 + Sync) {
    out.par_chunks_mut(64).enumerate().for_each(|(c, chunk)| {
        for (jj, o) in chunk.iter_mut().enumerate() {
            *o = row_dot(c * 64 + jj);
        }
    });
}

/// `out += residual` element-wise, when there is one.
fn add_residual(out: &mut [f32], residual: Option<&[f32]>) {
    if let Some(r) = residual {
        for (o, &v) in out.iter_mut().zip(r) {
            *o += v;
        }
    }
}

/// [`matmul`] reading the weight as f16 (as it is packed), converted block by block: half the
/// memory traffic of f32 weights, which is what bounds decode on a CPU. Same function as
/// [`matmul`] on the f32 values of `w`.
pub fn matmul_f16(
    x: &[f32],
    w: &[half::f16],
    rows: usize,
    n: usize,
    k: usize,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    use half::slice::HalfFloatSliceExt;
    assert!(x.len() >= rows * k && w.len() >= n * k && out.len() >= rows * n, "matmul_f16: slice too short");
    if rows == 1 {
        gemv(&mut out[..n], |j| dot_f16(&x[..k], &w[j * k..(j + 1) * k]));
    } else {
        // Blocks of output columns: convert the block's weight rows, then one SGEMM into the
        // block's columns of `out` (row stride n).
        const BLOCK: usize = 1024;
        let mut wf = vec![0.0f32; BLOCK.min(n) * k];
        for j0 in (0..n).step_by(BLOCK) {
            let nb = BLOCK.min(n - j0);
            wf[..nb * k]
                .par_chunks_mut(k)
                .zip(w[j0 * k..(j0 + nb) * k].par_chunks(k))
                .for_each(|(d, s)| s.convert_to_f32_slice(d));
            sgemm_columns(x, &wf, rows, k, nb, out, j0, n);
        }
    }
    add_residual(&mut out[..rows * n], residual);
}

/// `out[t, j0 + j] = sum_i x[t, i] * wf[j, i]` for `t < rows`, `j < nb`: one SGEMM into columns
/// `j0..j0 + nb` of `out` (row stride `n`); `wf` holds the block's weight rows in f32, `[nb, k]`.
/// The multi-row matmuls (prefill) run their weights through this block by block.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_columns(x: &[f32], wf: &[f32], rows: usize, k: usize, nb: usize, out: &mut [f32], j0: usize, n: usize) {
    assert!(
        x.len() >= rows * k && wf.len() >= nb * k && j0 + nb <= n && out.len() >= rows * n,
        "sgemm_columns: slice too short"
    );
    // SAFETY: the assert above: x holds rows*k floats, wf holds nb*k, and out[j0..] addressed with
    // row stride n for `rows` rows and nb columns stays within rows*n ((rows-1)*n + j0 + nb <=
    // rows*n); out does not alias x or wf (distinct borrows).
    unsafe {
        matrixmultiply::sgemm(
            rows,
            k,
            nb,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            wf.as_ptr(),
            1,
            k as isize,
            0.0,
            out.as_mut_ptr().add(j0),
            n as isize,
            1,
        );
    }
}

/// `sum_i a[i] * b[i]` with `b` in f16: AVX2+FMA+F16C (8 lanes, conversion fused into the loop)
/// where the CPU has them, else a portable loop.
pub fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features the function is compiled for were just detected on this CPU.
            return unsafe { dot_f16_avx2(a, b) };
        }
    }
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_avx2(a: &[f32], b: &[half::f16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 16;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in 0..chunks {
        let i = c * 16;
        // SAFETY: i + 16 <= n, so both 16-element loads are in bounds; unaligned loads are used.
        let (w0, w1, x0, x1) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i)),
                _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8) as *const __m128i)),
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
            )
        };
        acc0 = _mm256_fmadd_ps(x0, w0, acc0);
        acc1 = _mm256_fmadd_ps(x1, w1, acc1);
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let s4 = _mm_add_ps(hi, lo);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    let mut s = _mm_cvtss_f32(s1);
    for i in chunks * 16..n {
        s += a[i] * b[i].to_f32();
    }
    s
}

/// Dot product with four independent accumulators so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Shapes of the attention-side steps.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn q_len(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_len(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// NeoX-style rotation of one head in place at position `p`.
pub fn rope_head(x: &mut [f32], p: usize, theta: f32) {
    let d = x.len();
    let half = d / 2;
    for i in 0..half {
        let inv_freq = theta.powf(-2.0 * i as f32 / d as f32);
        let angle = p as f32 * inv_freq;
        let (s, c) = angle.sin_cos();
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

/// Bias + RoPE + KV write for `n_tokens` packed QKV rows starting at position `pos`.
/// `k_cache`/`v_cache` are this layer's `[max_seq, n_kv_heads, head_dim]` caches. Without a bias
/// 0.0 is added, as the kernels do for a null bias: bit for bit an all-zero bias (`-0.0 + 0.0` is
/// `+0.0`, which the rotation could carry into a product's sign).
#[allow(clippy::too_many_arguments)]
pub fn bias_rope_kv_write(
    qkv: &[f32],
    bias: Option<&[f32]>,
    s: AttnShape,
    theta: f32,
    pos: usize,
    n_tokens: usize,
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    q_out: &mut [f32],
) {
    let (ql, kl) = (s.q_len(), s.kv_len());
    let row = ql + 2 * kl;
    let mut buf = vec![0.0f32; row];
    for t in 0..n_tokens {
        let x = &qkv[t * row..(t + 1) * row];
        match bias {
            Some(bias) => buf.iter_mut().zip(x.iter().zip(bias)).for_each(|(b, (x, y))| *b = x + y),
            None => buf.iter_mut().zip(x).for_each(|(b, x)| *b = x + 0.0),
        }
        let p = pos + t;
        for head in buf[..ql + kl].chunks_exact_mut(s.head_dim) {
            rope_head(head, p, theta);
        }
        q_out[t * ql..(t + 1) * ql].copy_from_slice(&buf[..ql]);
        k_cache[p * kl..(p + 1) * kl].copy_from_slice(&buf[ql..ql + kl]);
        v_cache[p * kl..(p + 1) * kl].copy_from_slice(&buf[ql + kl..]);
    }
}

/// Causal grouped-query attention of `n_tokens` query rows (positions `pos..pos+n_tokens`) over
/// the cache, softmax in f32 with the running maximum subtracted.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttnShape,
    scale: f32,
    pos: usize,
    n_tokens: usize,
    out: &mut [f32],
) {
    let (ql, kl, d) = (s.q_len(), s.kv_len(), s.head_dim);
    let group = s.n_heads / s.n_kv_heads;
    out[..n_tokens * ql].par_chunks_mut(d).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / s.n_heads, idx % s.n_heads);
        let kvh = h / group;
        let qh = &q[t * ql + h * d..t * ql + (h + 1) * d];
        let len = pos + t + 1;
        let scores: Vec<f32> =
            (0..len).map(|j| scale * dot(qh, &k_cache[j * kl + kvh * d..j * kl + (kvh + 1) * d])).collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scores.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        o.fill(0.0);
        for (j, e) in exps.iter().enumerate() {
            let w = e / sum;
            let vr = &v_cache[j * kl + kvh * d..j * kl + (kvh + 1) * d];
            for (oo, &vv) in o.iter_mut().zip(vr) {
                *oo += w * vv;
            }
        }
    });
}

/// `silu(x) = x * sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `out[t, i] = silu(gate[t, i]) * up[t, i]` on packed `[gate | up]` rows of `2 * ffn`.
pub fn swiglu(gate_up: &[f32], ffn: usize, n_tokens: usize, out: &mut [f32]) {
    for t in 0..n_tokens {
        let row = &gate_up[t * 2 * ffn..(t + 1) * 2 * ffn];
        for i in 0..ffn {
            out[t * ffn + i] = silu(row[i]) * row[ffn + i];
        }
    }
}

/// Index of the largest value (lowest index on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    // The best value kept in a register (`bv == row[best]`): no load of row[best] on the loop's
    // dependency chain (that made the LM head's 151,936-wide argmax cost ~0.5 ms).
    let (mut best, mut bv) = (0, row.first().copied().unwrap_or(0.0));
    for (i, &v) in row.iter().enumerate() {
        if v > bv || bv.is_nan() {
            best = i;
            bv = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn f16_matmul_equals_f32_matmul_on_the_same_values() {
        let (n, k) = (2500, 77); // more than one column block, k not a multiple of 8
        let w16: Vec<f16> = (0..n * k).map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0)).collect();
        let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        for rows in [1, 5] {
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
            let res: Vec<f32> = (0..rows * n).map(|i| i as f32 * 1e-3).collect();
            let (mut a, mut b) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
            matmul(&x, &w32, rows, n, k, Some(&res), &mut a);
            matmul_f16(&x, &w16, rows, n, k, Some(&res), &mut b);
            let err = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-4, "rows {rows}: {err}");
        }
        let tokens = [3, 0, 2499];
        let (mut e1, mut e2) = (vec![0.0; 3 * k], vec![0.0; 3 * k]);
        embed(&tokens, &w32, k, &mut e1);
        embed_f16(&tokens, &w16, k, &mut e2);
        assert_eq!(e1, e2);
    }

    #[test]
    fn argmax_takes_the_lowest_index_of_the_largest_and_never_a_nan() {
        let nan = f32::NAN;
        assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), 1);
        assert_eq!(argmax(&[nan, -5.0, nan, -4.0]), 3);
        assert_eq!(argmax(&[2.0, nan, 2.5]), 2);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    /// One q head and one KV head of head_dim 2 at position 1 (angle 1 rad, inv_freq 1): the
    /// rotation, the cache rows and the bias by hand; no bias is an all-zero bias, bit for bit
    /// (the v element -0.0 is stored as +0.0 by both).
    #[test]
    fn bias_rope_kv_write_with_and_without_bias() {
        let s = AttnShape { n_heads: 1, n_kv_heads: 1, head_dim: 2 };
        let qkv = [1.0, 0.0, 0.0, 2.0, -0.0, 3.0];
        let (sn, cs) = 1.0f32.sin_cos();
        let run = |bias: Option<&[f32]>| {
            let (mut k, mut v, mut q) = (vec![f32::NAN; 4], vec![f32::NAN; 4], vec![f32::NAN; 2]);
            bias_rope_kv_write(&qkv, bias, s, 10000.0, 1, 1, &mut k, &mut v, &mut q);
            (q, k[2..].to_vec(), v[2..].to_vec())
        };
        let (q, k, v) = run(None);
        assert_eq!(q, [cs, sn]);
        assert_eq!(k, [-2.0 * sn, 2.0 * cs]);
        assert_eq!(v, [0.0, 3.0]);
        assert!(v[0].is_sign_positive());
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (qz, kz, vz) = run(Some(&[0.0; 6]));
        assert_eq!((bits(&q), bits(&k), bits(&v)), (bits(&qz), bits(&kz), bits(&vz)));
        let (qb, kb, vb) = run(Some(&[0.5, 0.0, 0.0, 0.0, 1.0, -1.0]));
        assert_eq!(qb, [1.5 * cs, 1.5 * sn]);
        assert_eq!(kb, [-2.0 * sn, 2.0 * cs]);
        assert_eq!(vb, [1.0, 2.0]);
    }
}
