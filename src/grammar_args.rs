//! `generate`'s constrained-decoding flags, with llama.cpp's names where it has them:
//! `--json-schema` (`-j`, the schema inline), `--json-schema-file` and `--grammar-file`
//! (a Lark grammar in llguidance's dialect; llama.cpp's GBNF files are not that dialect).
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use qwen_aot_runtime::tokenizer::Tokenizer;
use serde_json::Value;

use crate::grammar::{Grammar, GrammarEnv};
use crate::text_file::read_utf8;

/// Largest schema or grammar file read (a grammar is text a person writes; this bounds a wrong
/// path's allocation, not any real grammar).
const MAX_GRAMMAR_FILE_BYTES: u64 = 16 << 20;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct GrammarArgs {
    /// Constrain the answer to JSON valid against this JSON Schema (the schema's text).
    #[arg(short = 'j', long, value_name = "SCHEMA", conflicts_with_all = ["json_schema_file", "grammar_file"])]
    pub json_schema: Option<String>,
    /// --json-schema read from a file.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar_file")]
    pub json_schema_file: Option<PathBuf>,
    /// Constrain the answer to a sentence of this grammar: llama.cpp's GBNF (`root ::= ...`), or
    /// llguidance's Lark dialect (`start:` rules, "literals", /regexes/, `%json {schema}` for an
    /// embedded JSON schema).
    #[arg(long, value_name = "FILE")]
    pub grammar_file: Option<PathBuf>,
}

/// What the flags ask for, read and parsed (before the model loads, so a typo fails fast).
pub enum GrammarSource {
    JsonSchema(Value),
    /// A grammar file's text: GBNF or Lark.
    Grammar(String),
}

impl GrammarArgs {
    /// The flags' grammar source, or None when none is given.
    pub fn source(&self) -> Result<Option<GrammarSource>> {
        let schema_text = match (&self.json_schema, &self.json_schema_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(f)) => Some(read_utf8(f, MAX_GRAMMAR_FILE_BYTES, "a JSON schema")?),
            (None, None) => None,
        };
        if let Some(text) = schema_text {
            let schema: Value = serde_json::from_str(&text).context("--json-schema is not JSON")?;
            anyhow::ensure!(
                schema.is_object() || schema == Value::Bool(true),
                "--json-schema must be a JSON Schema object"
            );
            return Ok(Some(GrammarSource::JsonSchema(schema)));
        }
        Ok(match &self.grammar_file {
            Some(f) => Some(GrammarSource::Grammar(read_utf8(f, MAX_GRAMMAR_FILE_BYTES, "a grammar")?)),
            None => None,
        })
    }
}

impl GrammarSource {
    /// The grammar over `tokenizer`'s vocabulary (indexing it: ≈ 0.45 s for Qwen2's).
    pub fn compile(self, tokenizer: &Tokenizer) -> Result<Arc<Grammar>> {
        let env = GrammarEnv::new(tokenizer)?;
        let grammar = match self {
            GrammarSource::JsonSchema(schema) => {
                Grammar::json_schema(&env, schema).context("the JSON schema does not compile")?
            }
            GrammarSource::Grammar(source) => {
                Grammar::lark_or_gbnf(&env, source).context("the grammar does not compile")?
            }
        };
        Ok(Arc::new(grammar))
    }
}
