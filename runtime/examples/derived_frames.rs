//! What rebuilding a derived weight's frames costs (benches/NOTES.md, CPU cold start): one frame
//! at a time as the CPU's embedding lookups build them (a sampled load hashes one in 8; a full
//! check every one), forty in one lookup (in parallel), the whole rebuild (the GPU upload's), and
//! faulting in the whole `weights.bin`
//! map (`WeightStore::prefault_in_background`).
//!
//! `cargo run --release -p qwen-aot-runtime --example derived_frames -- COMPILED_DIR`
use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use qwen_aot_runtime::compiled::{prefault, CompiledModel};
use qwen_aot_runtime::derived::{rebuild, DerivedRows, FrameCheck};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from).ok_or("usage: derived_frames COMPILED_DIR")?;
    let open = || CompiledModel::open_unchecked(&dir).map_err(|e| format!("{}: {e}", dir.display()));
    let (plan, _) = open()?;
    let d = plan.derived.first().cloned().ok_or_else(|| format!("{} has no derived weight", dir.display()))?;
    let (k, frame_rows) = (plan.hparams.hidden, d.frame_rows as usize);
    for check in [FrameCheck::Sampled(1), FrameCheck::All] {
        let rows = DerivedRows::new(&plan, Arc::new(open()?.1), check, "weights.bin".into())?;
        let mut out = vec![0f32; 40 * k];
        let mut one = Vec::new();
        for f in 0..40 {
            let t = Instant::now();
            rows.dequant_rows(d.target, &[f * frame_rows], &mut out[..k])?;
            one.push(t.elapsed().as_secs_f64() * 1e3);
        }
        one.sort_by(f64::total_cmp);
        let many: Vec<usize> = (40..80).map(|f| f * frame_rows).collect();
        let t = Instant::now();
        rows.dequant_rows(d.target, &many, &mut out)?;
        let forty = t.elapsed().as_secs_f64() * 1e3;
        println!("{check:?}: one frame median {:.3} ms (of 40); 40 frames in one lookup {forty:.2} ms", one[20]);
    }
    let file = open()?.1;
    let mut whole = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        rebuild(&plan, &file, FrameCheck::Sampled(1))?;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
    }
    whole.sort_by(f64::total_cmp);
    println!("whole rebuild (sampled hash, every core): median {:.1} ms of 5", whole[2]);
    let map = open()?.1;
    let t = Instant::now();
    prefault(&map);
    println!("fault in {} MiB of weights.bin: {:.1} ms", map.len() >> 20, t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
