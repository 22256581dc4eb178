//! Per-kernel timings at real shapes (decode of Qwen2.5-0.5B), for `benches/kernels.rs` and
//! reports. Each case is captured `REPS` times back to back into a CUDA graph and timed with CUDA
//! events around graph replays, so the time is the kernel's own (plus the ~1 us node gap a decode
//! graph also pays), not the host launch rate. Inputs are random, not zeros.
use std::time::Duration;

use cudarc::driver::{sys, CudaGraph};
use half::f16;

use super::device::{CudaDevice, DevBuf};
use super::executor::inv_freq_table;
use super::launch::{
    self, ArgmaxScratch, AttnScratch, GemmScratch, GemvNorm, GemvOut, Heads, MatMulMode, Op, RopeArgs,
    ARGMAX_MAX_BLOCKS,
};
use super::CudaCtx;
use crate::error::RuntimeError;

/// Launches of the case per graph replay.
const REPS: usize = 20;

pub struct BenchCase {
    pub name: String,
    /// Bytes the kernel must move per launch (reads + writes), for GB/s.
    pub bytes: u64,
    graph: CudaGraph,
}

/// The buffers and cases at one shape.
pub struct KernelBench<'a> {
    dev: &'a CudaDevice,
    pub cases: Vec<BenchCase>,
    _bufs: Vec<DevBuf>,
}

fn rand_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

impl<'a> KernelBench<'a> {
    /// Qwen2.5-0.5B decode shapes; attention over `ctx_len` cached tokens.
    pub fn qwen05b(dev: &'a CudaDevice, ctx_len: usize) -> Result<KernelBench<'a>, RuntimeError> {
        let (hidden, nh, nkv, d, ffn, vocab) = (896usize, 14usize, 2usize, 64usize, 4864usize, 151936usize);
        let max_seq = ctx_len.max(1) + 1;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut bufs = Vec::new();
        let f32buf = |seed: &mut u64, n: usize, scale: f32, bufs: &mut Vec<DevBuf>| -> Result<u64, RuntimeError> {
            let b = dev.upload(&rand_vec(seed, n, scale), "bench")?;
            let p = b.ptr();
            bufs.push(b);
            Ok(p)
        };
        let f16buf = |seed: &mut u64, n: usize, scale: f32, bufs: &mut Vec<DevBuf>| -> Result<u64, RuntimeError> {
            let v: Vec<f16> = rand_vec(seed, n, scale).iter().map(|&x| f16::from_f32(x)).collect();
            let b = dev.upload(&v, "bench")?;
            let p = b.ptr();
            bufs.push(b);
            Ok(p)
        };
        let state = dev.upload(&[(max_seq - 1) as i32, 1], "bench state")?;
        let st = state.ptr();
        bufs.push(state);
        let x = f32buf(&mut seed, ffn.max(nh * d) * 2, 1.0, &mut bufs)?;
        let y = f32buf(&mut seed, 2 * ffn.max(vocab), 1.0, &mut bufs)?;
        let r = f32buf(&mut seed, ffn * 2, 1.0, &mut bufs)?;
        let norm_w = f32buf(&mut seed, hidden, 1.0, &mut bufs)?;
        let qkv_n = (nh + 2 * nkv) * d;
        let w_qkv = f16buf(&mut seed, qkv_n * hidden, 0.05, &mut bufs)?;
        let w_o = f16buf(&mut seed, hidden * nh * d, 0.05, &mut bufs)?;
        let w_gu = f16buf(&mut seed, 2 * ffn * hidden, 0.05, &mut bufs)?;
        let w_down = f16buf(&mut seed, hidden * ffn, 0.05, &mut bufs)?;
        let table = f16buf(&mut seed, vocab * hidden, 0.05, &mut bufs)?;
        let kc = f32buf(&mut seed, max_seq * nkv * d, 1.0, &mut bufs)?;
        let vc = f16buf(&mut seed, max_seq * nkv * d, 1.0, &mut bufs)?;
        let tokens = dev.upload(&[1234i32], "bench tokens")?;
        let tok = tokens.ptr();
        bufs.push(tokens);
        let inv = dev.upload(&inv_freq_table(1e6, d), "bench rope")?;
        let invp = inv.ptr();
        bufs.push(inv);
        let bias = f32buf(&mut seed, qkv_n, 1.0, &mut bufs)?;
        let splits = launch::attention_splits(nkv, dev.sm_count(), 32768.min(max_seq.max(4096)));
        let part_o = dev.alloc(nh * splits * d * 4, "bench")?;
        let part_ml = dev.alloc(nh * splits * 2 * 4, "bench")?;
        let counters = dev.alloc(nh * 4, "bench")?;
        let attn = AttnScratch { part_o: part_o.ptr(), part_ml: part_ml.ptr(), counters: counters.ptr() };
        bufs.push(part_o);
        bufs.push(part_ml);
        bufs.push(counters);
        let am = dev.alloc(ARGMAX_MAX_BLOCKS * 8 + 16, "bench")?;
        let ams = ArgmaxScratch {
            part_v: am.ptr(),
            part_i: am.ptr() + ARGMAX_MAX_BLOCKS as u64 * 4,
            counter: am.ptr() + ARGMAX_MAX_BLOCKS as u64 * 8,
        };
        bufs.push(am);
        // Decode shapes: only the GEMV paths run (no GEMM scratch).
        let gs = GemmScratch { x16: 0, scale: 0, rows: 1 };
        let heads = Heads { n_heads: nh, n_kv_heads: nkv, head_dim: d };
        let kvb = (ctx_len * nkv * d * (4 + 2)) as u64; // K f32 + V f16
        let norm = GemvNorm { weight: norm_w, eps: 1e-6 };
        let rope = RopeArgs { bias, inv_freq: invp, q_out: y, k_cache: kc, v_cache: vc, heads };

        let h = hidden as u64;
        let mm = |n: usize, k: usize, res: bool| (n * k * 2 + k * 4 + n * 4 * if res { 2 } else { 1 }) as u64;
        let cases: Vec<(String, u64, Vec<Op>)> = vec![
            ("embed".into(), h * 6, vec![launch::embed(st, tok, table, y, hidden, vocab, 1, 0)]),
            ("rms_norm".into(), h * 12, vec![launch::rms_norm(st, x, norm_w, y, hidden, 1e-6, 1)]),
            (
                "add_rms_norm".into(),
                h * 20,
                vec![launch::add_rms_norm(st, x, r, norm_w, y, y + h * 4, hidden, 1e-6, 1)],
            ),
            (
                format!("gemv qkv {qkv_n}x{hidden}"),
                mm(qkv_n, hidden, false),
                launch::matmul(dev, st, x, w_qkv, y, None, qkv_n, hidden, 1, MatMulMode::Gemv, gs),
            ),
            (
                format!("gemv o_proj+res {hidden}x{}", nh * d),
                mm(hidden, nh * d, true),
                launch::matmul(dev, st, x, w_o, y, Some(r), hidden, nh * d, 1, MatMulMode::Gemv, gs),
            ),
            (
                format!("gemv gate_up {}x{hidden}", 2 * ffn),
                mm(2 * ffn, hidden, false),
                launch::matmul(dev, st, x, w_gu, y, None, 2 * ffn, hidden, 1, MatMulMode::Gemv, gs),
            ),
            (
                format!("gemv down+res {hidden}x{ffn}"),
                mm(hidden, ffn, true),
                launch::matmul(dev, st, x, w_down, y, Some(r), hidden, ffn, 1, MatMulMode::Gemv, gs),
            ),
            (
                format!("gemv lm_head {vocab}x{hidden}"),
                mm(vocab, hidden, false),
                launch::matmul(dev, st, x, table, y, None, vocab, hidden, 1, MatMulMode::LastRow, gs),
            ),
            (
                "bias_rope_kv_write".into(),
                (qkv_n * 8 + nh * d * 4 + 2 * nkv * d * 2) as u64,
                vec![launch::bias_rope_kv_write(st, x, rope, 1)],
            ),
            (
                format!("attention ctx={ctx_len} splits={splits}"),
                kvb + (2 * nh * d * 4) as u64,
                launch::attention(st, x, kc, vc, y, heads, 0.125, 1, splits, attn, 0),
            ),
            ("swiglu".into(), (3 * ffn * 4) as u64, vec![launch::swiglu(st, y, x, ffn, 1)]),
            // The decode program's fused GEMVs (norm prologue; rope / swiglu epilogues).
            (
                format!("norm_gemv_rope_kv_write {qkv_n}x{hidden}"),
                mm(qkv_n, hidden, false) + h * 4,
                vec![launch::gemv(dev, st, x, Some(norm), w_qkv, qkv_n, hidden, 1, GemvOut::Rope(rope))],
            ),
            (
                format!("norm_gemv_swiglu {}x{hidden}", 2 * ffn),
                mm(2 * ffn, hidden, false) + h * 4 - (ffn * 4) as u64,
                vec![launch::gemv(dev, st, x, Some(norm), w_gu, 2 * ffn, hidden, 1, GemvOut::SwiGlu { out: y })],
            ),
            (
                format!("norm_gemv lm_head {vocab}x{hidden}"),
                mm(vocab, hidden, false) + h * 4,
                vec![launch::gemv(
                    dev,
                    st,
                    x,
                    Some(norm),
                    table,
                    vocab,
                    hidden,
                    1,
                    GemvOut::Store { out: y, residual: None, last_row: true },
                )],
            ),
            ("argmax".into(), (vocab * 4) as u64, vec![launch::argmax(st, y, r, vocab, dev.sm_count(), ams)]),
        ];
        let mut out = Vec::new();
        for (name, bytes, ops) in cases {
            let mut rep_ops = Vec::with_capacity(ops.len() * REPS);
            for _ in 0..REPS {
                rep_ops.extend(ops.iter().cloned());
            }
            // SAFETY: the ops address the bench buffers allocated above with the sizes their
            // builders need (x/y/r sized for the largest row, caches for max_seq positions,
            // scratch for the split count); the buffers live in the same KernelBench as the graphs.
            let graph = unsafe { dev.capture_graph(&rep_ops, &format!("bench {name}")) }?;
            out.push(BenchCase { name, bytes, graph });
        }
        dev.sync("bench setup")?;
        Ok(KernelBench { dev, cases: out, _bufs: bufs })
    }

    /// GPU time of `launches` launches of case `idx` (rounded up to whole graph replays).
    pub fn time(&self, idx: usize, launches: u64) -> Result<Duration, RuntimeError> {
        let case = &self.cases[idx];
        let replays = launches.div_ceil(REPS as u64).max(1);
        let start = self.dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).cuda_ctx(|| "event".into())?;
        let end = self.dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).cuda_ctx(|| "event".into())?;
        start.record(&self.dev.stream).cuda_ctx(|| "event record".into())?;
        for _ in 0..replays {
            case.graph.launch().cuda_ctx(|| format!("bench {}", case.name))?;
        }
        end.record(&self.dev.stream).cuda_ctx(|| "event record".into())?;
        let ms = start.elapsed_ms(&end).cuda_ctx(|| format!("bench {}", case.name))?;
        let per_launch = ms as f64 / 1e3 / (replays * REPS as u64) as f64;
        Ok(Duration::from_secs_f64(per_launch * launches as f64))
    }

    /// Median microseconds per launch over `samples` samples of `REPS * 10` launches.
    pub fn median_us(&self, idx: usize, samples: usize) -> Result<f64, RuntimeError> {
        self.time(idx, (REPS * 10) as u64)?; // warm-up
        let mut v: Vec<f64> = (0..samples.max(1))
            .map(|_| self.time(idx, (REPS * 10) as u64).map(|d| d.as_secs_f64() * 1e6 / (REPS * 10) as f64))
            .collect::<Result<_, _>>()?;
        v.sort_by(|a, b| a.total_cmp(b));
        Ok(v[v.len() / 2])
    }
}

/// Device-to-device copy bandwidth (bytes read + written per second), the practical peak the
/// kernels are compared against.
pub fn copy_bandwidth_gbps(dev: &CudaDevice) -> Result<f64, RuntimeError> {
    let bytes = 256usize << 20;
    let a = dev.alloc(bytes, "bandwidth probe")?;
    let b = dev.alloc(bytes, "bandwidth probe")?;
    let start = dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).cuda_ctx(|| "event".into())?;
    let end = dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).cuda_ctx(|| "event".into())?;
    let reps = 20;
    let copy = || {
        // SAFETY: both buffers hold `bytes` bytes and outlive the synchronisation in elapsed_ms.
        unsafe { sys::cuMemcpyDtoDAsync_v2(b.ptr(), a.ptr(), bytes, dev.cu_stream()) }
            .result()
            .cuda_ctx(|| "copy".into())
    };
    copy()?;
    start.record(&dev.stream).cuda_ctx(|| "event record".into())?;
    for _ in 0..reps {
        copy()?;
    }
    end.record(&dev.stream).cuda_ctx(|| "event record".into())?;
    let ms = start.elapsed_ms(&end).cuda_ctx(|| "bandwidth probe".into())?;
    Ok(2.0 * bytes as f64 * reps as f64 / (ms as f64 / 1e3) / 1e9)
}

/// GPU time between two points of the device's stream, from CUDA events: `start` records the
/// first event; `stop_secs` records the second and waits for it. Everything the host enqueues in
/// between is inside the interval, including the GPU's idle time while the host turns a token
/// around (so around whole decode steps it is the rate a user sees, timed by the GPU's clock).
pub struct GpuTimer {
    start: cudarc::driver::CudaEvent,
    end: cudarc::driver::CudaEvent,
}

impl GpuTimer {
    pub fn start(dev: &CudaDevice) -> Result<GpuTimer, RuntimeError> {
        dev.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        let start = dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).cuda_ctx(|| "event".into())?;
        let end = dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).cuda_ctx(|| "event".into())?;
        start.record(&dev.stream).cuda_ctx(|| "event record".into())?;
        Ok(GpuTimer { start, end })
    }

    pub fn stop_secs(self, dev: &CudaDevice) -> Result<f64, RuntimeError> {
        self.end.record(&dev.stream).cuda_ctx(|| "event record".into())?;
        let ms = self.start.elapsed_ms(&self.end).cuda_ctx(|| "event timing".into())?;
        Ok(ms as f64 / 1e3)
    }
}
