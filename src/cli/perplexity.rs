//! `qwen-aot perplexity --file F [--ctx 512]`: llama.cpp-style perplexity of a text file.
use std::path::Path;

use anyhow::Result;

use qwen_aot::backend::{self, BackendChoice};
use qwen_aot::perplexity::perplexity;
use qwen_aot::text_file::{read_utf8, MAX_PERPLEXITY_FILE_BYTES};

pub fn run(
    model_arg: Option<&Path>,
    file: &Path,
    ctx: usize,
    backend: BackendChoice,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let text = read_utf8(file, MAX_PERPLEXITY_FILE_BYTES, "a text to score")?;
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
        qwen_aot::outln!("{v}");
    } else {
        qwen_aot::outln!(
            "PPL = {:.4} +/- {:.4}  ({} windows of {ctx}, {} tokens scored, {:.1} tokens/s, backend {backend_name})",
            r.ppl,
            r.ppl_stderr,
            r.windows,
            r.tokens_scored,
            r.tok_s
        );
    }
    Ok(())
}
