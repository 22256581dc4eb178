//! `--chat-template-file` (llama.cpp's flag) for `generate` and `serve`: a Jinja chat template
//! that replaces the model's own (`tokenizer.chat_template`) -- for a GGUF without one, or whose
//! template renders a conversation differently from what the user wants.
use std::path::PathBuf;

use anyhow::{Context, Result};
use qwen_aot_runtime::chat_template::ChatTemplate;
use qwen_aot_runtime::tokenizer::Tokenizer;

use crate::text_file::read_utf8;

/// Largest template file read (real templates are a few kB; tool-calling ones up to ~20 kB).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TemplateArgs {
    /// Render chats with this Jinja chat template instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template_file: Option<PathBuf>,
}

impl TemplateArgs {
    /// The file's template text, read and checked to parse (before the model loads, so a
    /// mistake fails fast); None without the flag.
    pub fn read(&self) -> Result<Option<String>> {
        let Some(path) = &self.chat_template_file else { return Ok(None) };
        let text = read_utf8(path, MAX_TEMPLATE_BYTES, "a chat template")?;
        ChatTemplate::new(&text).with_context(|| format!("the chat template in {} does not parse", path.display()))?;
        Ok(Some(text))
    }
}

/// The chat template in effect: `chosen` (from `--chat-template-file`), else the model's own.
pub fn chat_template(chosen: Option<&str>, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
    let text = match chosen {
        Some(t) => t,
        None => tokenizer
            .chat_template()
            .context("this model has no chat template (give one with --chat-template-file, or use --prompt)")?,
    };
    Ok(ChatTemplate::new(text)?)
}
