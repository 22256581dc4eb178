//! The device sampler (kernels/sample.cu) against crate::sampler.
//!
//! Exact agreement is required: the kernel follows the CPU's f32 operation order (penalties, the
//! weights exp(l / T - top) with glibc's expf ported, the sequential prefix sums, the draw), so the
//! chosen ids can only differ through expf itself, which the first row checks bit for bit.
use super::{CheckRow, Harness, Rng};
use crate::cuda::{sample, test_kernels};
use crate::error::RuntimeError;
use crate::sampler;

/// Vocabularies of the sampler rows: the 0.5B LM head, an odd one, one smaller than the cap.
const SAMPLER_VOCABS: [(usize, usize); 3] = [(151_936, 150), (1003, 300), (97, 200)];

fn sampler_cases() -> Vec<(&'static str, sampler::SamplingParams)> {
    use sampler::SamplingParams as P;
    let base = P {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        presence_penalty: 0.0,
        penalty_window: 64,
        seed: 11,
    };
    vec![
        ("greedy", P { temperature: 0.0, ..base.clone() }),
        (
            "greedy + penalties w64",
            P { temperature: 0.0, repeat_penalty: 1.3, presence_penalty: 0.5, seed: 12, ..base.clone() },
        ),
        ("T=0.7 top-k 40", P { temperature: 0.7, top_k: 40, seed: 13, ..base.clone() }),
        ("T=1 top-p 0.9", P { top_p: 0.9, seed: 14, ..base.clone() }),
        ("T=1 min-p 0.1", P { min_p: 0.1, seed: 15, ..base.clone() }),
        ("T=1.5 k=0 (256 cap)", P { temperature: 1.5, seed: 16, ..base.clone() }),
        (
            "T=0.8 k100 p.95 minp.05 pen w256",
            P {
                temperature: 0.8,
                top_k: 100,
                top_p: 0.95,
                min_p: 0.05,
                repeat_penalty: 1.2,
                presence_penalty: 0.3,
                penalty_window: 256,
                seed: 17,
            },
        ),
        (
            "T=0.9 k1000(cap) rp0.8 pp-0.2 w4096",
            P {
                temperature: 0.9,
                top_k: 1000,
                repeat_penalty: 0.8,
                presence_penalty: -0.2,
                penalty_window: 4096,
                seed: u64::MAX - 5,
                ..base
            },
        ),
    ]
}

/// Logits rows of three kinds: LLM-like (a bell of small values and a few spikes), uniform in
/// [-8, 8] (crowded histogram bins: many candidates tie on the top bits), and quantised to
/// 1/4 with planted -inf, -0.0 and +0.0 (exact ties broken by id).
fn sampler_rows(rng: &mut Rng, vocab: usize) -> Vec<Vec<f32>> {
    let bell =
        |rng: &mut Rng| (0..vocab).map(|_| (0..4).map(|_| rng.uniform(1.0)).sum::<f32>() * 1.5).collect::<Vec<f32>>();
    let mut llm = bell(rng);
    for _ in 0..30.min(vocab) {
        let i = rng.below(vocab);
        llm[i] += 4.0 + rng.uniform(1.0).abs() * 8.0;
    }
    let uniform = rng.vec(vocab, 8.0);
    let mut ties: Vec<f32> = bell(rng).iter().map(|v| (v * 4.0).round() / 4.0).collect();
    for (k, v) in [(0, f32::NEG_INFINITY), (1, -0.0), (2, 0.0), (3, f32::NEG_INFINITY)] {
        let i = (rng.below(vocab) + k) % vocab;
        ties[i] = v;
    }
    vec![llm, uniform, ties]
}

pub(super) fn sampler_checks(h: &mut Harness, seed: u64, quick: bool) -> Result<(), RuntimeError> {
    let st = h.state.ptr();
    let sm = h.dev.sm_count();

    // expf: every 64th f32 in [-104.5, 0] (the sampler's domain, x = l/T - top <= 0) and specials.
    {
        let mut xs: Vec<f32> = (0x8000_0000u32..0xc2d1_0000).step_by(64).map(f32::from_bits).collect();
        // -63.09946 (0xc27c65d9): glibc's FMA build and a build without FMA round it differently.
        xs.extend([
            f32::from_bits(0xc27c_65d9),
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            0.0,
            1.0,
            -103.5,
            -103.99,
            -87.9,
            -88.0,
            -88.7,
            -1e-30,
            88.8,
            f32::INFINITY,
        ]);
        let d_in = h.input(&xs)?;
        let d_out = h.output(xs.len() * 4)?;
        // SAFETY: d_in and d_out hold xs.len() f32 each (allocated just above).
        unsafe { h.tests.run(h.dev, &test_kernels::sample_expf(d_in.ptr(), d_out.ptr(), xs.len()))? };
        let g = h.read_f32(&d_out, xs.len())?;
        let bad = xs
            .iter()
            .zip(&g)
            .filter(|(x, g)| {
                let c = x.exp();
                !(c.to_bits() == g.to_bits() || (c.is_nan() && g.is_nan()))
            })
            .count();
        h.rows.push(CheckRow {
            name: "sample expf vs f32::exp (bits)".into(),
            shape: format!("{} inputs", xs.len()),
            max_abs: bad as f32,
            max_rel: 0.0,
            tol: 0.0,
            pass: bad == 0,
        });
    }

    for (vi, &(vocab, draws)) in SAMPLER_VOCABS.iter().enumerate() {
        let draws = if quick { (draws / 8).max(12) } else { draws };
        let mut rng = Rng(seed ^ 0x5A3F_1E00 ^ (vi as u64) << 40);
        let shape = |n: usize| format!("vocab={vocab}, {n} draws");
        let rows = sampler_rows(&mut rng, vocab);
        // Each kind in a [3, vocab] buffer whose rows 0 and 1 are NaN poison: an n_tokens = 3 draw
        // reads row 2 of it, an n_tokens = 1 draw gets the address of row 2.
        let mut d_rows = Vec::new();
        for r in &rows {
            let mut buf = vec![f32::from_bits(0xFFFF_FFFF); 2 * vocab];
            buf.extend_from_slice(r);
            d_rows.push(h.input(&buf)?);
        }
        // Penalties look at "hot" ids (near the top of each row) with repeats, and random ones.
        let mut hot: Vec<u32> = Vec::new();
        for r in &rows {
            let mut idx: Vec<u32> = (0..vocab as u32).collect();
            idx.sort_by(|&a, &b| r[b as usize].total_cmp(&r[a as usize]).then(a.cmp(&b)));
            hot.extend(&idx[..20.min(vocab)]);
        }
        let max_seq = 4200;
        let pick = |rng: &mut Rng, hot: &[u32]| {
            if rng.below(2) == 0 {
                hot[rng.below(hot.len())]
            } else {
                rng.below(vocab) as u32
            }
        };
        let (scratch_buf, scratch) = sample::alloc_scratch(h.dev, vocab)?;
        let d_params = h.dev.alloc(sample::PARAM_WORDS * 4, "sampling parameters")?;
        let d_fed = h.dev.alloc(3 * 4, "fed tokens")?;
        let d_out = h.dev.alloc(4, "sampled token")?;
        let mut host_hist: Vec<u32> = (0..max_seq).map(|_| pick(&mut rng, &hot)).collect();
        let d_hist = h.input(&host_hist.iter().map(|&t| t as i32).collect::<Vec<i32>>())?;
        let mut pl_checked = false;
        for (label, p) in sampler_cases() {
            h.dev.htod(d_params.ptr(), &sample::device_params(&p), "sampling parameters")?;
            let mut misses = 0usize;
            let mut first_miss = String::new();
            for i in 0..draws {
                let kind = i % 3;
                let n = if i % 4 == 3 { 3 } else { 1 };
                let pos = if i == 0 { 0 } else { (i * 131 + 7 * i * i) % (max_seq - n) };
                let fed: Vec<u32> = (0..n).map(|_| pick(&mut rng, &hot)).collect();
                let mut recent: Vec<u32> = host_hist[..pos].to_vec();
                recent.extend(&fed);
                let want = sampler::sample(&rows[kind], &recent, &p, pos + n);

                h.set_state(pos, n)?;
                h.dev.htod(d_fed.ptr(), &fed.iter().map(|&t| t as i32).collect::<Vec<i32>>(), "fed tokens")?;
                let logits = d_rows[kind].ptr() + if n == 3 { 0 } else { 2 * vocab as u64 * 4 };
                let ops = sample::sample(
                    st,
                    logits,
                    d_fed.ptr(),
                    d_hist.ptr(),
                    d_params.ptr(),
                    d_out.ptr(),
                    vocab,
                    sm,
                    scratch,
                );
                h.run(&ops, "sample")?;
                let mut got = [0i32];
                h.dev.dtoh(d_out.ptr(), &mut got, "sampled token")?;
                if got[0] as i64 != want as i64 {
                    misses += 1;
                    if first_miss.is_empty() {
                        first_miss =
                            format!(" [first miss: draw {i} kind {kind} pos {pos} n {n}: gpu {} cpu {want}]", got[0]);
                    }
                }
                host_hist[pos..pos + n].copy_from_slice(&fed);
                // The penalised copy, once: bit-identical to apply_penalties (T > 0 writes it).
                if !pl_checked && p.temperature > 0.0 && p.repeat_penalty != 1.0 {
                    pl_checked = true;
                    let mut c = rows[kind].clone();
                    sampler::apply_penalties(&mut c, &recent, &p);
                    let mut g = vec![0f32; vocab];
                    h.dev.dtoh(scratch.pl, &mut g, "penalised logits")?;
                    let bad = g.iter().zip(&c).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    let changed = c.iter().zip(&rows[kind]).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    h.rows.push(CheckRow {
                        name: "sample penalised copy == apply_penalties".into(),
                        shape: format!("vocab={vocab}, {changed} ids penalised"),
                        max_abs: bad as f32,
                        max_rel: 0.0,
                        tol: 0.0,
                        pass: bad == 0 && changed > 0,
                    });
                }
            }
            h.rows.push(CheckRow {
                name: format!("sample {label}"),
                shape: shape(draws) + &first_miss,
                max_abs: misses as f32,
                max_rel: 0.0,
                tol: 0.0,
                pass: misses == 0,
            });
        }
        // The logits are never written; the fed tokens were recorded at their positions.
        let mut untouched = true;
        for (r, d) in rows.iter().zip(&d_rows) {
            let g = h.read_f32(d, 3 * vocab)?;
            untouched &= g[..2 * vocab].iter().all(|v| v.to_bits() == 0xFFFF_FFFF)
                && g[2 * vocab..].iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits());
        }
        h.rows.push(CheckRow {
            name: "sample leaves the logits untouched".into(),
            shape: shape(draws * 8),
            max_abs: if untouched { 0.0 } else { 1.0 },
            max_rel: 0.0,
            tol: 0.0,
            pass: untouched,
        });
        let mut g = vec![0i32; max_seq];
        h.dev.dtoh(d_hist.ptr(), &mut g, "history")?;
        let bad = g.iter().zip(&host_hist).filter(|(a, b)| **a as i64 != **b as i64).count();
        h.rows.push(CheckRow {
            name: "sample records the fed tokens".into(),
            shape: format!("vocab={vocab}, {max_seq} positions"),
            max_abs: bad as f32,
            max_rel: 0.0,
            tol: 0.0,
            pass: bad == 0,
        });
        drop(scratch_buf);
    }
    Ok(())
}
