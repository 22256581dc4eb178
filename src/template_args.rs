//! `--chat-template-file` (llama.cpp's flag) for `generate` and `serve`: a Jinja chat template
//! that replaces the model's own (`tokenizer.chat_template`) -- for a GGUF without one, or whose
//! template renders a conversation differently from what the user wants.
use std::path::PathBuf;

use anyhow::{Context, Result};
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate};
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
        let template = ChatTemplate::new(&text)
            .with_context(|| format!("the chat template in {} does not parse", path.display()))?;
        // Filters and functions are looked up only when rendering: render a one-message chat now,
        // so that a misspelt filter fails here and not on every chat request.
        template
            .render(&[ChatMessage::user("hi")], true)
            .with_context(|| format!("the chat template in {} does not render a one-message chat", path.display()))?;
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
    Ok(with_model_tokens(ChatTemplate::new(text)?, tokenizer))
}

/// `template` with `bos_token` and `eos_token` set to the model's (as transformers passes them):
/// templates written for other engines often start with `{{ bos_token }}`.
pub fn with_model_tokens(template: ChatTemplate, tokenizer: &Tokenizer) -> ChatTemplate {
    let name = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i)).map(str::to_string);
    template.with_special_tokens(name(tokenizer.bos_id()), name(tokenizer.eos_id()))
}
