//! `qwen-aot perplexity --file F [--ctx 512]`: llama.cpp-style perplexity of a text file.
use std::path::Path;

use anyhow::{Context, Result};

use qwen_aot::backend::{self, BackendChoice};
use qwen_aot::perplexity::perplexity;

pub fn run(
    model_arg: Option<&Path>,
    file: &Path,
    ctx: usize,
    backend: BackendChoice,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    qwen_aot::perplexity::check_ctx(ctx)?; // before loading the model
    let mut loaded = backend::load_model(model_arg, backend, Some(ctx), quiet)?;
    let tokens = loaded.tokenizer.encode(&text);
    let backend_name = loaded.session.executor().backend().name();
    let r = perplexity(&mut loaded.session, &tokens, ctx, |done, total, ppl| {
        if !quiet && !json {
            eprint!("\r[{done}/{total}] running ppl {ppl:.4}   ");
        }
    })?;
    if !quiet && !json {
        eprintln!();
    }
    if json {
        let mut v = serde_json::to_value(&r)?;
        v["backend"] = backend_name.into();
        v["ctx"] = ctx.into();
        println!("{v}");
    } else {
        println!(
            "PPL = {:.4} +/- {:.4}  ({} windows of {ctx}, {} tokens scored, {:.1} tokens/s, backend {backend_name})",
            r.ppl, r.ppl_stderr, r.windows, r.tokens_scored, r.tok_s
        );
    }
    Ok(())
}
