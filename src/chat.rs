//! The interactive chat of `generate` (no prompt given, stdin a terminal): keeps the
//! conversation, reuses the KV cache across turns (only the new tokens are prefilled), `/reset`,
//! `/exit`; Ctrl-C stops the current answer and returns to the prompt.
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate};

use crate::backend::Loaded;
use crate::generation::{generate, GenOptions, StopReason};

/// `/` followed by letters only, e.g. `/rest`.
fn is_command_like(s: &str) -> bool {
    s.strip_prefix('/').is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

pub fn run(loaded: &mut Loaded, system: Option<&str>, max_tokens: usize, stop_strings: &[String]) -> Result<()> {
    let template = ChatTemplate::new(loaded.tokenizer.chat_template().context("this model has no chat template")?)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    }
    let mut messages: Vec<ChatMessage> = system.map(|s| vec![ChatMessage::system(s)]).unwrap_or_default();
    // Token ids currently in the KV cache (prompt + answer of every turn so far).
    let mut cached: Vec<u32> = Vec::new();
    eprintln!(
        "chat with {} ({} backend). /reset clears the conversation, /exit quits; Ctrl-C stops an answer.",
        loaded.model.dir.display(),
        loaded.session.executor().backend().name()
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("\n> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/help" => {
                eprintln!("/reset clears the conversation, /exit quits; Ctrl-C stops an answer.");
                continue;
            }
            "/reset" => {
                messages.retain(|m| m.role == "system");
                cached.clear();
                loaded.session.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            // A lone /word is a mistyped command, not a message (a path such as /usr/bin/x is sent).
            cmd if is_command_like(cmd) => {
                eprintln!("(unknown command {cmd}: /reset clears the conversation, /exit quits)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::user(line));
        let ids = loaded.tokenizer.encode(&template.render(&messages, true)?);
        // Reuse the cache for the part of the conversation it already holds.
        let keep = common_prefix(&cached, &ids).min(ids.len() - 1);
        loaded.session.rewind(keep);
        interrupted.store(false, Ordering::Relaxed);
        let opts = GenOptions { max_tokens, stop_strings: stop_strings.to_vec(), cancel: Some(&interrupted) };
        let result = generate(&mut loaded.session, &loaded.tokenizer, &ids[keep..], &opts, |piece| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        });
        let gen = match result {
            Ok(g) => g,
            Err(e) => {
                eprintln!("\nerror: {e:#}");
                messages.pop();
                loaded.session.rewind(keep);
                continue;
            }
        };
        println!();
        // The cache now holds the prompt and every generated id but the last (never fed back).
        cached = ids;
        cached.extend_from_slice(&gen.ids[..gen.ids.len() - 1]);
        messages.push(ChatMessage::assistant(gen.text.clone()));
        match gen.stop_reason {
            StopReason::Interrupted => eprintln!("(stopped)"),
            StopReason::Context => eprintln!("(context full: /reset to start over)"),
            _ => {}
        }
        let speed = gen.decode_tok_s.map(|r| format!(", {r:.1} tokens/s")).unwrap_or_default();
        eprintln!("[{} tokens{speed}, {} cached, reused {keep}]", gen.ids.len(), loaded.session.pos());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{common_prefix, is_command_like};

    #[test]
    fn only_a_lone_slash_word_is_a_command() {
        assert!(is_command_like("/bogus") && is_command_like("/rest"));
        assert!(
            !is_command_like("/usr/bin/env")
                && !is_command_like("/ 2")
                && !is_command_like("/")
                && !is_command_like("hi /x")
        );
    }

    #[test]
    fn common_prefix_counts_equal_leading_ids() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }
}
