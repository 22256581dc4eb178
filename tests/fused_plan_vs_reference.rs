//! The fused plan, run by the CPU executor, against a straightforward unfused forward pass written
//! here from the architecture's definition (full causal attention over the whole sequence, no KV
//! cache, no fusion), on seeded random-weight Qwen2 models of several shapes. Every fusion, the
//! concatenated weights, the memory plan, prefill chunking and the KV cache are exercised at shapes
//! other than 0.5B.
//!
//! Tolerance: both sides use the same matrices (f16, or quantized blocks dequantised exactly as
//! the GGUF dequantiser does) and compute in f32; they differ only in
//! summation order (SGEMM blocking vs. plain loops), which over a few layers stays far below 1e-3
//! relative. We assert max |Δlogit| <= 2e-3 * max(1, max|logit|).
use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::gguf::GgmlType;
use qwen_aot_compiler::source::{MemorySource, TensorSource};
use qwen_aot_compiler::synthetic::{default_model_mix, q4_k_m_1_5b_mix, random_model_mix, remove_qkv_bias, FormatMix};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::plan::HyperParams;
use qwen_aot_runtime::session::Session;

fn hp(n_layers: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize, ffn: usize, vocab: usize) -> HyperParams {
    HyperParams {
        n_layers,
        hidden: n_heads * head_dim,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn,
        vocab,
        rms_eps: 1e-6,
        rope_theta: 10000.0,
        context_length: 256,
    }
}

/// Weight `name` as the packer stores it: the source's values (F16 or quantized blocks are
/// stored losslessly in native mode).
fn tensor(src: &MemorySource, name: &str) -> Vec<f32> {
    src.load_f32(name).unwrap()
}

/// `x [t, k] · W^T` with W `[n, k]`.
fn linear(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let n = w.len() / k;
    let t = x.len() / k;
    let mut out = vec![0.0; t * n];
    for r in 0..t {
        for j in 0..n {
            out[r * n + j] = (0..k).map(|i| x[r * k + i] * w[j * k + i]).sum();
        }
    }
    out
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|r| {
            let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
            r.iter().zip(w).map(move |(v, g)| v * inv * g)
        })
        .collect()
}

fn add_bias(x: &mut [f32], b: &[f32]) {
    for r in x.chunks_mut(b.len()) {
        r.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
    }
}

fn rope(x: &mut [f32], heads: usize, d: usize, theta: f32) {
    for (t, row) in x.chunks_mut(heads * d).enumerate() {
        for h in row.chunks_mut(d) {
            for i in 0..d / 2 {
                let a = t as f32 * theta.powf(-((2 * i) as f32) / d as f32);
                let (s, c) = a.sin_cos();
                let (x0, x1) = (h[i], h[i + d / 2]);
                h[i] = x0 * c - x1 * s;
                h[i + d / 2] = x1 * c + x0 * s;
            }
        }
    }
}

/// Logits `[t, vocab]` of the whole sequence, computed the slow obvious way.
fn reference_forward(src: &MemorySource, hp: &HyperParams, tokens: &[u32]) -> Vec<f32> {
    let (hdim, d, nh, nkv) = (hp.hidden, hp.head_dim, hp.n_heads, hp.n_kv_heads);
    let t = tokens.len();
    let emb = tensor(src, "token_embd.weight");
    let mut h: Vec<f32> =
        tokens.iter().flat_map(|&id| emb[id as usize * hdim..(id as usize + 1) * hdim].to_vec()).collect();
    for l in 0..hp.n_layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        let x = rms_norm(&h, &tensor(src, &p("attn_norm.weight")), hp.rms_eps);
        let mut q = linear(&x, &tensor(src, &p("attn_q.weight")), hdim);
        let mut k = linear(&x, &tensor(src, &p("attn_k.weight")), hdim);
        let mut v = linear(&x, &tensor(src, &p("attn_v.weight")), hdim);
        // Biases where the model has them (a Llama-style model has none).
        for (x, b) in [(&mut q, "attn_q.bias"), (&mut k, "attn_k.bias"), (&mut v, "attn_v.bias")] {
            if src.dims(&p(b)).is_some() {
                add_bias(x, &tensor(src, &p(b)));
            }
        }
        rope(&mut q, nh, d, hp.rope_theta);
        rope(&mut k, nkv, d, hp.rope_theta);
        let mut att = vec![0.0; t * nh * d];
        for i in 0..t {
            for head in 0..nh {
                let kvh = head / (nh / nkv);
                let qv = &q[i * nh * d + head * d..][..d];
                let scores: Vec<f32> = (0..=i)
                    .map(|j| (0..d).map(|c| qv[c] * k[j * nkv * d + kvh * d + c]).sum::<f32>() / (d as f32).sqrt())
                    .collect();
                let m = scores.iter().cloned().fold(f32::MIN, f32::max);
                let z: f32 = scores.iter().map(|s| (s - m).exp()).sum();
                for (j, s) in scores.iter().enumerate() {
                    for c in 0..d {
                        att[i * nh * d + head * d + c] += (s - m).exp() / z * v[j * nkv * d + kvh * d + c];
                    }
                }
            }
        }
        let o = linear(&att, &tensor(src, &p("attn_output.weight")), nh * d);
        h.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        let x = rms_norm(&h, &tensor(src, &p("ffn_norm.weight")), hp.rms_eps);
        let g = linear(&x, &tensor(src, &p("ffn_gate.weight")), hdim);
        let u = linear(&x, &tensor(src, &p("ffn_up.weight")), hdim);
        let m: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        let dn = linear(&m, &tensor(src, &p("ffn_down.weight")), hp.ffn);
        h.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
    }
    let x = rms_norm(&h, &tensor(src, "output_norm.weight"), hp.rms_eps);
    let head = if src.dims("output.weight").is_some() { "output.weight" } else { "token_embd.weight" };
    linear(&x, &tensor(src, head), hdim)
}

fn check_model(hp: HyperParams, tied: bool, prefill_chunk: usize, n_prompt: usize, n_decode: usize, seed: u64) {
    check_model_mix(hp, tied, prefill_chunk, n_prompt, n_decode, seed, &FormatMix::f16());
}

fn check_model_mix(
    hp: HyperParams,
    tied: bool,
    prefill_chunk: usize,
    n_prompt: usize,
    n_decode: usize,
    seed: u64,
    mix: &FormatMix,
) {
    check_source(random_model_mix(&hp, tied, seed, mix), hp, prefill_chunk, n_prompt, n_decode, seed);
}

fn check_source(src: MemorySource, hp: HyperParams, prefill_chunk: usize, n_prompt: usize, n_decode: usize, seed: u64) {
    let mut compiled =
        build(&hp, &src, "synthetic", &CompileOptions { prefill_tokens: prefill_chunk, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    write_dir(&mut compiled, &src, None, &out, |_| {}).unwrap();
    let model = CompiledModel::open(&out, Integrity::Sampled).unwrap();
    let mut session = Session::new(Box::new(CpuExecutor::new(&model, hp.context_length).unwrap()));

    let mut rng = qwen_aot_compiler::synthetic::Rng::new(seed + 1);
    let tokens: Vec<u32> = (0..n_prompt + n_decode).map(|_| (rng.next_u64() % hp.vocab as u64) as u32).collect();
    let reference = reference_forward(&src, &hp, &tokens);
    let v = hp.vocab;

    let mut ours = session.prefill(&tokens[..n_prompt], LogitsWanted::All).unwrap().logits;
    assert_eq!(ours.len(), n_prompt * v);
    for &t in &tokens[n_prompt..] {
        let step = session.decode(t, true).unwrap();
        let row = &step.logits;
        let best = row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b });
        assert_eq!(step.next_token as usize, best, "next_token is the argmax of the returned logits");
        ours.extend_from_slice(row);
    }
    assert_eq!(ours.len(), reference.len());
    let scale = reference.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let max_err = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(max_err <= 2e-3 * scale, "max |Δlogit| = {max_err} (scale {scale}) for {hp:?}");
    assert!(scale > 0.1, "logits are not degenerate");
}

#[test]
fn head_dim_128_four_kv_heads_tied_three_layers() {
    check_model(hp(3, 8, 4, 128, 96, 97), true, 16, 9, 4, 1);
}

#[test]
fn qwen_05b_attention_shape_with_prefill_chunks() {
    // 14/2 heads of 64 (the 0.5B attention) at 2 layers; a prefill chunk of 4 forces 3 chunks.
    check_model(hp(2, 14, 2, 64, 160, 211), false, 4, 11, 3, 2);
}

#[test]
fn multi_query_attention_single_layer() {
    check_model(hp(1, 4, 1, 32, 64, 50), false, 8, 5, 6, 3);
}

#[test]
fn the_default_models_formats_q5_0_q8_0_q6_k() {
    // hidden 256, ffn 512: q|k Q5_0 and v Q8_0 in one qkv weight (two parts), Q6_K ffn_down.
    check_model_mix(hp(2, 4, 2, 64, 512, 97), false, 4, 7, 3, 5, &default_model_mix());
}

#[test]
fn q4_k_m_formats_tied() {
    check_model_mix(hp(2, 4, 2, 64, 512, 97), true, 8, 6, 3, 6, &q4_k_m_1_5b_mix());
}

#[test]
fn every_other_format() {
    // Each remaining format in some role (k = 256 or 512 everywhere).
    let mix = FormatMix {
        embed: GgmlType::Q4_0,
        qk: GgmlType::Q4_1,
        v: GgmlType::Q5_1,
        o: GgmlType::Q2_K,
        gate_up: GgmlType::Q3_K,
        down: GgmlType::Q5_K,
        output: GgmlType::BF16,
    };
    check_model_mix(hp(1, 4, 2, 64, 512, 61), false, 8, 5, 2, 7, &mix);
    let mix = FormatMix {
        embed: GgmlType::F32,
        qk: GgmlType::Q8_0,
        v: GgmlType::Q6_K,
        o: GgmlType::F16,
        gate_up: GgmlType::Q5_K,
        down: GgmlType::Q4_K,
        output: GgmlType::Q2_K,
    };
    check_model_mix(hp(1, 4, 2, 64, 512, 61), false, 8, 5, 2, 8, &mix);
}

#[test]
fn without_qkv_bias() {
    // Llama-style attention: no q/k/v biases at all (the description's biases are optional).
    let hp = hp(2, 4, 2, 64, 512, 97);
    let mut src = random_model_mix(&hp, false, 9, &default_model_mix());
    remove_qkv_bias(&mut src);
    check_source(src, hp, 4, 7, 3, 9);
}
