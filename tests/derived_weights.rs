//! Derived weights (plan format 7) end to end on a model that stores its embedding twice, as the
//! default model does (`token_embd` Q5_0 and `output` Q8_0 quantized from one matrix): the
//! compile leaves the embedding out of `weights.bin` for a correction a fraction of its size, the
//! load rebuilds it byte for byte -- every weight equal to a `--no-derive` compile's, the same
//! logits -- and a damaged correction or plan entry is refused with a message, not a panic.
//!
//! `QWEN_AOT_WRITE_TIED_GGUF=PATH` also writes the model as a GGUF file at PATH, for
//! `qwen-aot check --backend cuda --model PATH` on a GPU machine (the upload of derived weights).
use std::path::Path;

use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::source::MemorySource;
use qwen_aot_compiler::synthetic::gguf_file::gguf_builder;
use qwen_aot_compiler::synthetic::{default_model_mix, qwen05b_hparams, random_model_mix, store_embedding_twice};
use qwen_aot_runtime::compiled::{parse_plan, CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::derived::{DerivedRows, FrameCheck};
use qwen_aot_runtime::error::RuntimeError;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::plan::{integrity::seal_plan, HyperParams, Plan, Step, WeightId, PLAN_FILE, WEIGHTS_FILE};
use qwen_aot_runtime::quant::{PartView, WeightFormat};
use qwen_aot_runtime::session::Session;

/// Two layers at the default model's widths, a 4,096-token vocabulary: the tied pair is 3.7 MB
/// (Q8_0) and 2.4 MB (Q5_0), a correction of a few frames.
/// A change to a plan, for the refusal tests.
type PlanEdit = fn(&mut Plan);

fn hparams() -> HyperParams {
    HyperParams { vocab: 4096, context_length: 2048, ..qwen05b_hparams(2) }
}

fn tied_source(hp: &HyperParams) -> MemorySource {
    let mut src = random_model_mix(hp, false, 17, &default_model_mix());
    assert!(store_embedding_twice(&mut src, 29));
    src
}

fn compile(src: &MemorySource, hp: &HyperParams, derive: bool, dir: &Path) {
    let opts = CompileOptions { prefill_tokens: 16, derive, ..Default::default() };
    let mut c = build(hp, src, "tied-test", &opts).unwrap();
    write_dir(&mut c, src, None, dir, |_| {}).unwrap();
}

fn logits(model: &CompiledModel) -> Vec<f32> {
    let mut s = Session::new(Box::new(CpuExecutor::new(model, 64).unwrap()));
    let mut all = s.prefill(&[11, 2200, 7, 900, 5], LogitsWanted::Last).unwrap().logits;
    let next = s.prefill(&[42], LogitsWanted::Last).unwrap().logits;
    all.extend(next);
    all
}

#[test]
fn a_derived_embedding_rebuilds_byte_for_byte() {
    let hp = hparams();
    let src = tied_source(&hp);
    if let Some(path) = std::env::var_os("QWEN_AOT_WRITE_TIED_GGUF") {
        std::fs::write(&path, gguf_builder(&src, &hp, "tied-test").build().unwrap()).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let (derived_dir, stored_dir) = (tmp.path().join("derived"), tmp.path().join("stored"));
    compile(&src, &hp, true, &derived_dir);
    compile(&src, &hp, false, &stored_dir);
    let derived = CompiledModel::open(&derived_dir, Integrity::Full).unwrap();
    let stored = CompiledModel::open(&stored_dir, Integrity::Full).unwrap();

    let [d] = derived.plan.derived.as_slice() else { panic!("one derived weight: {:?}", derived.plan.derived) };
    let target = &derived.plan.weights[d.target.0 as usize];
    assert_eq!(target.name, "token_embd.weight");
    assert_eq!(derived.plan.weights[d.base.0 as usize].name, "output.weight");
    assert!(stored.plan.derived.is_empty());
    // The file shrinks by the embedding less its correction (29 frames' worth of changed codes
    // and the scales' rounding: a few percent of it).
    let (df, sf) = (derived.weight_bytes().len() as u64, stored.weight_bytes().len() as u64);
    assert_eq!(sf - df, target.bytes - d.correction_bytes, "file sizes {df} and {sf}");
    assert!(d.correction_bytes * 5 < target.bytes, "correction {} of {}", d.correction_bytes, target.bytes);
    // The executors' weight space: the file (its correction included) and the embedding past it.
    assert_eq!(derived.weights_len(), stored.weights_len() + d.correction_bytes);
    // Every weight byte-identical, and the whole weight space as an upload sees it.
    for i in 0..stored.plan.weights.len() {
        let id = WeightId(i as u32);
        assert!(
            derived.weight(id).unwrap() == stored.weight(id).unwrap(),
            "weight {} differs",
            stored.plan.weights[i].name
        );
    }
    let space = |m: &CompiledModel| {
        let mut v = vec![0u8; m.weights_len() as usize];
        m.stream_weights(1 << 20, |at, b| {
            v[at as usize..at as usize + b.len()].copy_from_slice(b);
            Ok(())
        })
        .unwrap();
        v
    };
    let (ds, ss) = (space(&derived), space(&stored));
    // A normal load rebuilds when the upload first wants the weights: the same bytes.
    let sampled = CompiledModel::open(&derived_dir, Integrity::Sampled).unwrap();
    assert!(space(&sampled) == ds, "the weight space of a normal load differs from a full check's");
    for w in &stored.plan.weights {
        let (a, b) = (&derived.plan.weights.iter().find(|x| x.name == w.name).unwrap(), w);
        assert!(
            ds[a.offset as usize..(a.offset + a.bytes) as usize]
                == ss[b.offset as usize..(b.offset + b.bytes) as usize],
            "streamed {} differs",
            w.name
        );
    }
    // `qwen-aot verify` rebuilds it too and checks every frame.
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_qwen-aot")).arg("verify").arg(&derived_dir).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let want = format!("1 derived weight(s) rebuilt, all {} frames match", d.frames.len());
    assert!(said.contains(&want), "expected `{want}` in: {said}");
    // The CPU's rows, rebuilt frame by frame as they are read: the stored embedding's rows, and
    // a normal load builds only the frames it is asked for.
    let (k, rows) = (hp.hidden, target.shape[0]);
    let stored_view = PartView::new(WeightFormat::Q5_0, rows, k, stored.weight(d.target).unwrap()).unwrap();
    let store = sampled.weight_store();
    let frames_built = |store: &qwen_aot_runtime::compiled::WeightStore| store.derived().frames_built(d.target);
    assert_eq!(frames_built(&store), 0);
    let (mut got, mut want) = (vec![0f32; 3 * k], vec![0f32; 3 * k]);
    let asked = [rows - 1, 0, 1];
    store.derived().dequant_rows(d.target, &asked, &mut got).unwrap();
    for (&r, w) in asked.iter().zip(want.chunks_exact_mut(k)) {
        stored_view.dequant_row(r, w);
    }
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "rows differ");
    assert_eq!(frames_built(&store), 2, "{} rows per frame", d.frame_rows);
    let fresh = CompiledModel::open(&derived_dir, Integrity::Sampled).unwrap().weight_store();
    fresh.derived().build_all().unwrap();
    assert_eq!(frames_built(&fresh), d.frames.len(), "build_all");
    let every: Vec<usize> = (0..rows).collect();
    let (mut got, mut want) = (vec![0f32; rows * k], vec![0f32; rows * k]);
    store.derived().dequant_rows(d.target, &every, &mut got).unwrap();
    for (r, w) in want.chunks_exact_mut(k).enumerate() {
        stored_view.dequant_row(r, w);
    }
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "rows differ");
    assert_eq!(frames_built(&store), d.frames.len());
    let err = store.derived().dequant_rows(d.target, &[rows], &mut got[..k]).expect_err("a row past the end");
    assert!(matches!(err, RuntimeError::InvalidCall(_)), "{err}");
    // The same model: identical logits (bit for bit) on the CPU.
    let (a, b) = (logits(&derived), logits(&stored));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "logits differ");
}

/// The same pair the other way round -- `output.weight` (the LM head) Q5_0, `token_embd.weight`
/// Q8_0 -- fits the recipe too, but a derived weight is rebuilt by rows, for embedding lookups
/// only: the compiler stores the LM head, and the model loads.
#[test]
fn an_lm_head_is_never_derived() {
    let hp = hparams();
    let mut src = tied_source(&hp);
    let q5 = src.tensors.remove("token_embd.weight").unwrap();
    let q8 = src.tensors.remove("output.weight").unwrap();
    src.tensors.insert("output.weight".into(), q5);
    src.tensors.insert("token_embd.weight".into(), q8);
    let tmp = tempfile::tempdir().unwrap();
    compile(&src, &hp, true, tmp.path());
    let model = CompiledModel::open(tmp.path(), Integrity::Full).unwrap();
    assert!(model.plan.derived.is_empty(), "derived: {:?}", model.plan.derived);
    assert_eq!(logits(&model).len(), 2 * hp.vocab);
}

#[test]
fn damage_to_a_correction_or_its_entry_is_refused() {
    let hp = hparams();
    let src = tied_source(&hp);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile(&src, &hp, true, &dir);
    let plan_text = std::fs::read_to_string(dir.join(PLAN_FILE)).unwrap();
    let plan = parse_plan(&plan_text).unwrap();
    let d = plan.derived[0].clone();

    // A flipped byte inside the correction: its window's hash differs (a full check), and the
    // message names the derived weight.
    let wpath = dir.join(WEIGHTS_FILE);
    let good = std::fs::read(&wpath).unwrap();
    let mut bad = good.clone();
    bad[d.correction_offset as usize + 100] ^= 0x40;
    std::fs::write(&wpath, &bad).unwrap();
    let err = CompiledModel::open(&dir, Integrity::Full).err().expect("damage refused");
    assert!(matches!(err, RuntimeError::CorruptWeights { .. }), "{err}");
    assert!(err.to_string().contains("token_embd.weight"), "{err}");
    // The same damage read row by row: the frame it lies in fails (zstd, or its hash where every
    // frame is hashed), with the derived weight's name; the other frames still read.
    let (plan_ok, map) = CompiledModel::open_unchecked(&dir).unwrap();
    let rows = DerivedRows::new(&plan_ok, std::sync::Arc::new(map), FrameCheck::All, "w.bin".into()).unwrap();
    assert!(d.frames[0] > 100, "the flipped byte lies in frame 0");
    let mut out = vec![0f32; hp.hidden];
    let err = rows.dequant_rows(d.target, &[0], &mut out).expect_err("the damaged frame refused");
    assert!(matches!(err, RuntimeError::CorruptWeights { .. }), "{err}");
    assert!(err.to_string().contains("token_embd.weight") && err.to_string().contains("frame 0"), "{err}");
    let again = rows.dequant_rows(d.target, &[1], &mut out).expect_err("and refused again");
    assert_eq!(again.to_string(), err.to_string());
    rows.dequant_rows(d.target, &[d.frame_rows as usize], &mut out).unwrap();
    std::fs::write(&wpath, &good).unwrap();

    // Entries that claim too much or point elsewhere: refused by the validator, before any
    // allocation or decompression.
    let broken: [(&str, PlanEdit); 8] = [
        ("frames of no rows", |p| p.derived[0].frame_rows = 0),
        ("frames over the bound", |p| p.derived[0].frame_rows = 1 << 20),
        ("a matrix product reading the derived weight", |p| {
            let target = p.derived[0].target;
            for s in &mut p.decode.steps {
                if let Step::Gemv { weight, n, .. } | Step::MatMul { weight, n, .. } = s {
                    if *n == 4096 {
                        *weight = target;
                    }
                }
            }
        }),
        ("a frame of 1 TB", |p| p.derived[0].frames[0] = 1 << 40),
        ("a frame missing", |p| {
            p.derived[0].frames.pop();
        }),
        ("a base that is itself", |p| p.derived[0].base = p.derived[0].target),
        ("a target out of range", |p| p.derived[0].target = WeightId(10_000)),
        ("a correction elsewhere", |p| p.derived[0].correction_offset -= 256),
    ];
    for (what, edit) in broken {
        let mut p = plan.clone();
        edit(&mut p);
        let text = seal_plan(&mut p).unwrap();
        match parse_plan(&text) {
            Err(RuntimeError::BadPlan(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: not refused as a bad plan: {:?}", other.map(|_| ())),
        }
    }
}
