//! `qwen-aot tokenize`: text to ids (or `--decode` ids to text) with the model's tokenizer.
use std::path::Path;

use anyhow::{bail, Context, Result};
use qwen_aot_compiler::tokenizer_from_gguf::tokenizer_data_from_gguf;
use qwen_aot_runtime::plan::TOKENIZER_FILE;
use qwen_aot_runtime::tokenizer::Tokenizer;

use qwen_aot::model;

/// The tokenizer of a compiled directory or of a GGUF (default model when none is given).
pub fn load_tokenizer(model_arg: Option<&Path>) -> Result<Tokenizer> {
    if let Some(dir) = model_arg.filter(|p| p.is_dir()) {
        return Tokenizer::load(&dir.join(TOKENIZER_FILE))
            .with_context(|| format!("loading the tokenizer of {}", dir.display()));
    }
    let path = model::gguf_path(model_arg)?;
    let g = model::open_gguf(&path)?;
    let data = tokenizer_data_from_gguf(&g).with_context(|| format!("reading the tokenizer of {}", path.display()))?;
    Ok(Tokenizer::from_data(data)?)
}

pub fn run(model_arg: Option<&Path>, json: bool, decode: bool, args: &[String]) -> Result<()> {
    let tok = load_tokenizer(model_arg)?;
    if decode {
        let ids: Vec<u32> = args
            .iter()
            .flat_map(|a| a.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>())
            .map(|s| s.parse::<u32>().with_context(|| format!("`{s}` is not a token id")))
            .collect::<Result<_>>()?;
        let text = tok.decode(&ids)?;
        if json {
            qwen_aot::outln!("{}", serde_json::json!({ "text": text }));
        } else {
            qwen_aot::outln!("{text}");
        }
        return Ok(());
    }
    if args.is_empty() {
        bail!("give the text to tokenize (or --decode ID...)");
    }
    let ids = tok.encode(&args.join(" "));
    if json {
        qwen_aot::outln!("{}", serde_json::json!({ "ids": ids }));
    } else {
        qwen_aot::outln!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}
