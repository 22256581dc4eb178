//! Constrained decoding's host cost on the real Qwen2.5 vocabulary (151,936 tokens): indexing
//! the vocabulary (once per process), compiling a JSON schema (once per request), and one step
//! of an answer -- the mask over a whole logits row and the chosen token fed -- averaged over the
//! tokens of a JSON answer that follows the schema. The vocabulary comes from `QWEN_AOT_TOKENIZER`
//! or `QWEN_AOT_MODEL` (as in `tokenizer.rs`).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qwen_aot::grammar::{Grammar, GrammarEnv};
use qwen_aot::host_draw::{HostDraw, HostSteps};
use qwen_aot_runtime::sampler::SamplingParams;

mod common;
use common::load_tokenizer;

/// A schema with the usual parts: strings, an integer, an enum, an array of strings.
fn schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "mood": {"enum": ["calm", "playful"]}, "toys": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "mood", "toys"], "additionalProperties": false})
}

const ANSWER: &str = "{\"name\": \"Whiskers, the very fluffy cat from the house on the corner\", \"age\": 3, \"mood\": \"playful\", \"toys\": [\"a red ball of wool\", \"a mouse that squeaks\", \"string\"]}";

fn bench(c: &mut Criterion) {
    let tok = load_tokenizer();
    let mut group = c.benchmark_group("grammar");
    group.sample_size(10);
    group.bench_function("index the vocabulary", |b| b.iter(|| GrammarEnv::new(&tok).unwrap()));
    let env = GrammarEnv::new(&tok).unwrap();
    group.bench_function("compile the schema", |b| b.iter(|| Grammar::json_schema(&env, schema()).unwrap()));
    let grammar = Grammar::json_schema(&env, schema()).unwrap();
    let ids = tok.encode(ANSWER);
    let mut row = vec![0.0f32; tok.vocab_size()];
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("mask and step through the answer", |b| {
        b.iter(|| {
            let mut steps = grammar.start();
            for &id in &ids {
                row.fill(0.0);
                steps.apply(&mut row).unwrap();
                assert_eq!(row[id as usize], 0.0, "the answer follows the schema");
                steps.advance(id).unwrap();
            }
        })
    });
    // What a constrained token costs after the decode step: the host draw from the step's logits
    // row with the mask already computed (it is, beside the step), greedy and sampled. The row
    // favours the answer's token so that the draws follow the answer.
    let draw = HostDraw { grammar: Some(std::sync::Arc::new(grammar)), frequency_penalty: 0.0, logit_bias: vec![] };
    let noise: Vec<f32> = (0..tok.vocab_size()).map(|i| ((i * 7919) % 1000) as f32 / 100.0).collect();
    for (name, temperature) in [("draw after the step, greedy", 0.0), ("draw after the step, temperature 0.8", 0.8)] {
        let sampling = SamplingParams { temperature, ..SamplingParams::default() };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let mut steps = HostSteps::new(&draw, sampling.clone(), vec![]);
                    for (pos, &id) in ids.iter().enumerate() {
                        row.copy_from_slice(&noise);
                        row[id as usize] = 100.0;
                        steps.prepare().unwrap();
                        let t = std::time::Instant::now();
                        let drawn = steps.next(&row, pos).unwrap();
                        spent += t.elapsed();
                        assert_eq!(drawn, id, "the draw follows the answer");
                    }
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
