//! `qwen-aot inspect`: hyperparameters, metadata and the tensor table of a GGUF.
use std::path::Path;

use anyhow::Result;
use qwen_aot_compiler::gguf::GgufValue;
use qwen_aot_compiler::hparams::ModelConfig;

use qwen_aot::model;

/// Long arrays (the vocabulary) are summarised, long strings (the chat template) cut.
fn show(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(items) if items.len() > 8 => {
            let head: Vec<String> = items.iter().take(4).map(show).collect();
            format!(
                "[{}, ... ({} {} items)]",
                head.join(", "),
                items.len(),
                items.first().map_or("", |x| x.type_name())
            )
        }
        GgufValue::Array(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        GgufValue::String(s) if s.chars().count() > 80 => {
            format!("{:?}... ({} chars)", s.chars().take(60).collect::<String>(), s.chars().count())
        }
        GgufValue::String(s) => format!("{s:?}"),
        GgufValue::F32(x) => format!("{x}"),
        GgufValue::F64(x) => format!("{x}"),
        GgufValue::Bool(b) => format!("{b}"),
        other => {
            other.as_i64().map(|i| i.to_string()).or_else(|| other.as_u64().map(|u| u.to_string())).unwrap_or_default()
        }
    }
}

pub fn run(model_arg: Option<&Path>) -> Result<()> {
    let path = model::gguf_path(model_arg)?;
    let g = model::open_gguf(&path)?;
    qwen_aot::outln!("model: {}  (GGUF v{}, {} tensors)", path.display(), g.version(), g.tensors().len());
    match ModelConfig::from_gguf(&g) {
        Ok(cfg) => {
            let h = &cfg.hparams;
            qwen_aot::outln!("\nhyperparameters");
            qwen_aot::outln!("  blocks           {}", h.n_layers);
            qwen_aot::outln!("  hidden           {}", h.hidden);
            qwen_aot::outln!("  heads            {} query / {} kv (head_dim {})", h.n_heads, h.n_kv_heads, h.head_dim);
            qwen_aot::outln!("  ffn              {}", h.ffn);
            qwen_aot::outln!("  vocab            {}", h.vocab);
            qwen_aot::outln!("  context length   {}", h.context_length);
            qwen_aot::outln!("  rms eps          {:e}", h.rms_eps);
            qwen_aot::outln!("  rope theta       {}", h.rope_theta);
            qwen_aot::outln!(
                "  output           {}",
                if cfg.tied_embeddings { "tied to token_embd.weight" } else { "separate output.weight" }
            );
        }
        Err(e) => qwen_aot::outln!("\nhyperparameters: {:#}", anyhow::Error::from(e)),
    }
    qwen_aot::outln!("\nmetadata");
    for (k, v) in g.metadata() {
        qwen_aot::outln!("  {k:<44} {}", show(v));
    }
    qwen_aot::outln!("\ntensors");
    qwen_aot::outln!("  {:<34} {:<6} {:>18} {:>12}", "name", "dtype", "shape", "bytes");
    let mut total = 0;
    for t in g.tensors() {
        let shape = format!("{:?}", t.dims);
        qwen_aot::outln!("  {:<34} {:<6} {:>18} {:>12}", t.name, t.dtype.to_string(), shape, t.n_bytes);
        total += t.n_bytes;
    }
    qwen_aot::outln!("  {:<34} {:<6} {:>18} {:>12}", "total", "", "", total);
    Ok(())
}
