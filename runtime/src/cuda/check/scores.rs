//! The decode program's last kernels against their CPU twins: the device scoring of logits rows
//! (kernels/row_scores.cu, whole and cut into slices) and the greedy argmax (kernels/argmax.cu),
//! on the logits the GEMV checks produced.
use super::{cpu, CheckRow, CheckShape, Harness, Rng};
use crate::cuda::launch;
use crate::error::RuntimeError;

/// Teacher-forced scores of every row (kernels/row_scores.cu) against the CPU twin
/// (`scores::row_score`, f64), with 1, 5 and 20 alternatives: log-probabilities within 2e-5 (f32
/// results of f64 sums; the row is summed in another order), the listed ids exact -- on the LM
/// head's last row and random rows, with planted ties (the lower id must win), a vocabulary
/// shorter than the list (empty slots after every token), many equal logits (the kernel's k-pass
/// path), and with a NaN and an infinity (the row's first non-finite index must be reported);
/// rows past n_tokens untouched. Each row whole (one block), and cut into 3 and into
/// ROW_SCORE_MAX_SLICES slices (the merge; the 7-token vocabulary's third slice empty).
pub(super) fn row_score_checks(
    h: &mut Harness,
    rng: &mut Rng,
    s: &CheckShape,
    logits: &[f32],
    vocab: usize,
) -> Result<(), RuntimeError> {
    use crate::kernel_constants::{ROW_SCORE_MAX_SLICES, ROW_SCORE_PART_WORDS};
    let t = s.n_tokens;
    // Scratch for t + 1 rows at the most slices; the tickets zero.
    let parts = h.output((t + 1) * ROW_SCORE_MAX_SLICES * ROW_SCORE_PART_WORDS * 4)?;
    let tickets = h.input(&vec![0u32; t + 1])?;
    for slices in [1, 3, ROW_SCORE_MAX_SLICES] {
        let split = launch::ScoreSlices { slices, partials: parts.ptr(), tickets: tickets.ptr() };
        row_score_checks_cut(h, rng, s, logits, vocab, split)?;
    }
    let mut left = vec![0u32; t + 1];
    h.dev.dtoh(tickets.ptr(), &mut left, "row_scores tickets")?;
    h.record_flag("row_scores leaves its tickets zero".to_string(), left.iter().all(|&x| x == 0));
    Ok(())
}

/// [`row_score_checks`] with each row cut as `split` says.
fn row_score_checks_cut(
    h: &mut Harness,
    rng: &mut Rng,
    s: &CheckShape,
    logits: &[f32],
    vocab: usize,
    split: launch::ScoreSlices,
) -> Result<(), RuntimeError> {
    use crate::scores::{row_score, MAX_TOP};
    let t = s.n_tokens;
    let st = h.state.ptr();
    let cut = format!("{} slice(s)", split.slices);
    // The LM head's last row as computed above; the rows before it (poison there) random.
    let mut data: Vec<f32> = (0..(t - 1) * vocab).map(|_| rng.uniform(8.0)).collect();
    data.extend_from_slice(&logits[(t - 1) * vocab..t * vocab]);
    // Ties in the last row: two at the top (the lower id first), three just below it (third to
    // fifth of the list, by id).
    let last = (t - 1) * vocab;
    let (a, b) = (rng.below(vocab / 2), vocab / 2 + rng.below(vocab / 2));
    let top = data[last..].iter().copied().fold(f32::NEG_INFINITY, f32::max) + 1.0;
    data[last + a] = top;
    data[last + b] = top;
    for _ in 0..3 {
        data[last + rng.below(vocab)] = top - 0.5;
    }
    let targets: Vec<u32> = (0..t).map(|_| rng.below(vocab) as u32).collect();
    let ids: Vec<i32> = targets.iter().map(|&x| x as i32).collect();
    let (dl, dt) = (h.input(&data)?, h.input(&ids)?);
    for top_n in [1, 5, MAX_TOP] {
        let words = launch::row_score_words(top_n);
        // One block more than n_tokens = t: its row must stay poison.
        let out = h.input(&vec![0xFFFF_FFFFu32; words * (t + 1)])?;
        h.run(&[launch::row_scores(st, dl.ptr(), dt.ptr(), vocab, t + 1, top_n, out.ptr(), split)], "row_scores")?;
        let mut w = vec![0u32; words * (t + 1)];
        h.dev.dtoh(out.ptr(), &mut w, "row_scores read")?;
        let cpu: Vec<_> = (0..t).map(|r| row_score(&data[r * vocab..(r + 1) * vocab], targets[r], top_n)).collect();
        let (gpu_lp, cpu_lp) = score_log_probs(&w, &cpu, words);
        h.record(format!("{cut}: row_scores log-probs, top {top_n} [{t}x{vocab}]"), &gpu_lp, &cpu_lp, 2e-5);
        let ids_ok =
            (0..t).all(|r| score_ids(&w[r * words..(r + 1) * words]) == top_ids_of(&cpu[r]) && w[r * words + 1] == 0);
        h.record_flag(
            format!(
                "{cut}: row_scores top {top_n} ids (ties in the last row: {a} and {b} at the top), no non-finite flags"
            ),
            ids_ok,
        );
        h.record_flag(
            format!("{cut}: row_scores top {top_n} leaves rows past n_tokens alone"),
            w[words * t..].iter().all(|&x| x == 0xFFFF_FFFF),
        );
    }
    // A vocabulary shorter than the list: every token in order, then empty slots (id 0xFFFFFFFF).
    let small = 7;
    let tiny: Vec<f32> = (0..t * small).map(|_| rng.uniform(4.0)).collect();
    let tiny_targets: Vec<i32> = (0..t).map(|_| rng.below(small) as i32).collect();
    let (dtl, dtt) = (h.input(&tiny)?, h.input(&tiny_targets)?);
    let words = launch::row_score_words(MAX_TOP);
    let out = h.output(words * t * 4)?;
    h.run(&[launch::row_scores(st, dtl.ptr(), dtt.ptr(), small, t, MAX_TOP, out.ptr(), split)], "row_scores small")?;
    let mut w = vec![0u32; words * t];
    h.dev.dtoh(out.ptr(), &mut w, "row_scores read")?;
    let cpu: Vec<_> =
        (0..t).map(|r| row_score(&tiny[r * small..(r + 1) * small], tiny_targets[r] as u32, MAX_TOP)).collect();
    let (gpu_lp, cpu_lp) = score_log_probs(&w, &cpu, words);
    h.record(
        format!("{cut}: row_scores log-probs, top {MAX_TOP} of {small} tokens [{t}x{small}]"),
        &gpu_lp,
        &cpu_lp,
        2e-5,
    );
    let slots_ok = (0..t).all(|r| {
        let row = &w[r * words..(r + 1) * words];
        score_ids(row) == top_ids_of(&cpu[r])
            && row[2 + 2 * small..]
                .chunks_exact(2)
                .all(|p| p[0] == u32::MAX && f32::from_bits(p[1]) == f32::NEG_INFINITY)
    });
    h.record_flag(
        format!("{cut}: row_scores top {MAX_TOP} of {small} tokens: every token, then empty slots"),
        slots_ok,
    );
    // Many equal logits -- more than the kernel keeps in shared memory at its threshold -- take
    // its k-pass path: row 0 all equal (the lowest ids in order), the last row's even ids equal
    // above the rest.
    let mut flat = data.clone();
    flat[..vocab].fill(1.5);
    for j in (0..vocab).step_by(2) {
        flat[last + j] = top + 2.0;
    }
    let df = h.input(&flat)?;
    let words = launch::row_score_words(MAX_TOP);
    let out = h.output(words * t * 4)?;
    h.run(&[launch::row_scores(st, df.ptr(), dt.ptr(), vocab, t, MAX_TOP, out.ptr(), split)], "row_scores equal")?;
    let mut w = vec![0u32; words * t];
    h.dev.dtoh(out.ptr(), &mut w, "row_scores read")?;
    let cpu: Vec<_> = (0..t).map(|r| row_score(&flat[r * vocab..(r + 1) * vocab], targets[r], MAX_TOP)).collect();
    let (gpu_lp, cpu_lp) = score_log_probs(&w, &cpu, words);
    h.record(
        format!("{cut}: row_scores log-probs, top {MAX_TOP}, many equal logits [{t}x{vocab}]"),
        &gpu_lp,
        &cpu_lp,
        2e-5,
    );
    let ids_ok = (0..t).all(|r| score_ids(&w[r * words..(r + 1) * words]) == top_ids_of(&cpu[r]));
    h.record_flag(format!("{cut}: row_scores top {MAX_TOP} ids, many equal logits (the lowest ids first)"), ids_ok);
    // Non-finite logits: the first one's index, + 1, in the row's second word.
    let (nan_at, inf_at) = (rng.below(vocab / 2), vocab / 2 + rng.below(vocab / 2));
    data[nan_at] = f32::NAN;
    data[inf_at] = f32::INFINITY;
    let dl = h.input(&data)?;
    for top_n in [1, MAX_TOP] {
        let words = launch::row_score_words(top_n);
        let out = h.output(words * t * 4)?;
        h.run(
            &[launch::row_scores(st, dl.ptr(), dt.ptr(), vocab, t, top_n, out.ptr(), split)],
            "row_scores non-finite",
        )?;
        let mut w = vec![0u32; words * t];
        h.dev.dtoh(out.ptr(), &mut w, "row_scores read")?;
        let flagged = w[1] == nan_at as u32 + 1 && (1..t).all(|r| w[words * r + 1] == 0);
        h.record_flag(
            format!("{cut}: row_scores top {top_n} reports row 0's first non-finite logit ({nan_at})"),
            flagged,
        );
    }
    Ok(())
}

/// The ids of a row_scores result row (`launch::row_score_words` words), empty slots included.
fn score_ids(row: &[u32]) -> Vec<u32> {
    row[2..].chunks_exact(2).map(|p| p[0]).take_while(|&id| id != u32::MAX).collect()
}

fn top_ids_of(score: &crate::scores::RowScore) -> Vec<u32> {
    score.top.iter().map(|&(j, _)| j).collect()
}

/// Every log-probability of the results rows `w` (target's, then the listed ones) beside the
/// twin's, for one comparison.
fn score_log_probs(w: &[u32], cpu: &[crate::scores::RowScore], words: usize) -> (Vec<f32>, Vec<f32>) {
    let mut gpu_lp = Vec::new();
    let mut cpu_lp = Vec::new();
    for (r, c) in cpu.iter().enumerate() {
        let row = &w[r * words..(r + 1) * words];
        gpu_lp.push(f32::from_bits(row[0]));
        cpu_lp.push(c.logprob);
        for (i, &(_, lp)) in c.top.iter().enumerate() {
            gpu_lp.push(f32::from_bits(row[3 + 2 * i]));
            cpu_lp.push(lp);
        }
    }
    (gpu_lp, cpu_lp)
}

/// Argmax of row n_tokens - 1: on the given logits, with a planted tie (lowest index must win),
/// with NaNs (never win), and all-NaN (last index, like the CPU scan). Exact match required.
pub(super) fn argmax_checks(
    h: &mut Harness,
    rng: &mut Rng,
    s: &CheckShape,
    logits: &[f32],
    vocab: usize,
) -> Result<(), RuntimeError> {
    let t = s.n_tokens;
    let st = h.state.ptr();
    let last = (t - 1) * vocab;
    let mut cases: Vec<(&str, Vec<f32>)> = Vec::new();
    let mut base = logits.to_vec();
    for v in base[..last].iter_mut() {
        *v = rng.uniform(1.0); // rows other than the last are poison from the LM-head check
    }
    cases.push(("argmax", base.clone()));
    let mut tie = base.clone();
    let (a, b) = (rng.below(vocab / 2), vocab / 2 + rng.below(vocab / 2));
    tie[last + a] = 1e9;
    tie[last + b] = 1e9;
    cases.push(("argmax tie", tie));
    let mut nan = base.clone();
    nan[last] = f32::NAN;
    nan[last + vocab - 1] = f32::NAN;
    nan[last + rng.below(vocab)] = f32::NAN;
    cases.push(("argmax with NaN", nan));
    let mut all_nan = base;
    for v in all_nan[last..].iter_mut() {
        *v = f32::NAN;
    }
    cases.push(("argmax all NaN", all_nan));
    for (name, data) in cases {
        let d = h.input(&data)?;
        let out = h.output(4)?;
        // Twice: the second launch checks that the last block reset the ticket counter.
        for rep in 0..2 {
            h.run(&[launch::argmax(st, d.ptr(), out.ptr(), vocab, h.dev.sm_count(), h.argmax_scratch())], name)?;
            let mut g = [0i32];
            h.dev.dtoh(out.ptr(), &mut g, "argmax read")?;
            let c = cpu::argmax(&data[last..last + vocab]) as i32;
            let diff = (g[0] as f32 - c as f32).abs();
            h.rows.push(CheckRow {
                name: if rep == 0 { name.to_string() } else { format!("{name} (relaunch)") },
                shape: h.shape.clone(),
                max_abs: diff,
                max_rel: 0.0,
                tol: 0.0,
                pass: diff == 0.0,
            });
        }
    }
    Ok(())
}
