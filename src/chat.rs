//! The interactive chat of `generate` (no prompt given, stdin a terminal; or `-i`): keeps the
//! conversation, reuses the KV cache across turns (only the new tokens are prefilled), `/reset`,
//! `/exit` or `/quit`, `/help`; Ctrl-C stops the current answer, and at the prompt leaves. A
//! message of several lines: see `chat_input`.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate};
use qwen_aot_runtime::speculative::NgramDrafter;

use crate::backend::Loaded;
use crate::chat_input::{Got, Input};
use crate::generation::{generate, GenOptions, StopReason};

/// `/` followed by letters only, e.g. `/rest`.
fn is_command_like(s: &str) -> bool {
    s.strip_prefix('/').is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What `/help` prints: every command, the input conventions and what the line after each
/// answer means, for a context of `max_seq` tokens.
pub fn help(max_seq: usize) -> String {
    format!(
        "commands: /reset clears the conversation; /exit or /quit leaves (so do Ctrl-D and Ctrl-C at the \
         prompt); /help shows this.\n\
         Ctrl-C while the model answers stops the answer. End a line with \\ to continue the message on \
         the next line; a pasted block of lines is one message.\n\
         After each answer, [N tokens, T tokens/s, first token F ms, C cached, reused R]: N tokens \
         generated at T tokens/s; F ms from the message to its first token (the prefill of the new \
         prompt tokens); C tokens of the conversation are now in the KV cache (it holds {max_seq}; /reset empties it); R \
         of this turn's prompt tokens were already there and were not computed again."
    )
}

/// What Ctrl-C does: at the prompt it leaves the chat, during an answer it stops the answer.
#[derive(Debug, PartialEq, Eq)]
pub enum OnInterrupt {
    Exit,
    StopAnswer,
}

pub fn on_interrupt(reading_input: bool) -> OnInterrupt {
    if reading_input {
        OnInterrupt::Exit
    } else {
        OnInterrupt::StopAnswer
    }
}

/// Why a turn whose prompt (the whole conversation, `needed` tokens; the new message with the
/// system message alone, `alone`) does not fit a context of `max_seq` tokens cannot run, and what
/// helps: /reset when the conversation is what fills it, a shorter message (or a larger
/// --ctx-size, up to the model's `model_ctx`) when the message alone does not fit.
pub fn context_advice(needed: usize, alone: usize, max_seq: usize, model_ctx: usize) -> String {
    if alone <= max_seq {
        return format!(
            "(the conversation needs {needed} tokens but the context holds {max_seq}: /reset to start over)"
        );
    }
    let raise = if max_seq < model_ctx { format!(", or raise --ctx-size (up to {model_ctx})") } else { String::new() };
    format!("(this message needs {alone} tokens but the context holds {max_seq}: shorten it{raise})")
}

pub fn run(
    loaded: &mut Loaded,
    system: Option<&str>,
    max_tokens: usize,
    stop_strings: &[String],
    speculation: Option<NgramDrafter>,
    template: ChatTemplate,
) -> Result<()> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicBool::new(false));
    {
        let (flag, reading) = (interrupted.clone(), reading.clone());
        ctrlc::set_handler(move || match on_interrupt(reading.load(Ordering::Relaxed)) {
            OnInterrupt::Exit => {
                eprintln!();
                std::process::exit(0);
            }
            OnInterrupt::StopAnswer => flag.store(true, Ordering::Relaxed),
        })
        .context("installing the Ctrl-C handler")?;
    }
    let mut messages: Vec<ChatMessage> = system.map(|s| vec![ChatMessage::system(s)]).unwrap_or_default();
    // Token ids currently in the KV cache (prompt + answer of every turn so far).
    let mut cached: Vec<u32> = Vec::new();
    let max_seq = loaded.session.executor().max_seq();
    let model_ctx = loaded.session.executor().hparams().context_length;
    eprintln!(
        "chat with {} ({} backend, context {max_seq} tokens). /help lists the commands, /exit quits; \
         Ctrl-C stops an answer.",
        loaded.name,
        loaded.session.executor().backend().name()
    );
    let mut input = Input::new(std::io::stdin().is_terminal());
    let mut warmed_up = false;
    loop {
        // At the prompt before it is shown: a Ctrl-C right after "> " appears must exit, not set
        // the stop-answer flag and leave the chat blocked reading (tests/chat.rs hung once so).
        reading.store(true, Ordering::Relaxed);
        eprint!("\n> ");
        let got = input.message(|| eprint!(". "));
        reading.store(false, Ordering::Relaxed);
        let line = match got? {
            Got::End => break,
            Got::Message(m) => m,
            Got::Skipped(why) => {
                eprintln!("({why}: skipped)");
                continue;
            }
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/help" => {
                eprintln!("{}", help(max_seq));
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
                eprintln!("(unknown command {cmd}: /help lists the commands)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::user(line.as_str()));
        let ids = loaded.tokenizer.encode(&template.render(&messages, true)?);
        if ids.len() > max_seq {
            let mut alone: Vec<ChatMessage> = messages.iter().filter(|m| m.role == "system").cloned().collect();
            alone.push(ChatMessage::user(line.as_str()));
            let alone = loaded.tokenizer.encode(&template.render(&alone, true)?).len();
            eprintln!("{}", context_advice(ids.len(), alone, max_seq, model_ctx));
            messages.pop();
            continue;
        }
        // Reuse the cache for the part of the conversation it already holds.
        let keep = common_prefix(&cached, &ids).min(ids.len() - 1);
        loaded.session.rewind(keep);
        interrupted.store(false, Ordering::Relaxed);
        let opts = GenOptions {
            max_tokens,
            stop_strings: stop_strings.to_vec(),
            cancel: Some(&interrupted),
            speculation,
            earlier: &ids[..keep],
            logprobs: None,
            draw: None,
        };
        let result = generate(&mut loaded.session, &loaded.tokenizer, &ids[keep..], &opts, |piece| {
            crate::stdout::write_flushed_or_exit(piece.as_bytes());
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
        crate::outln!();
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
        let speed = match gen.draft_tokens {
            0 => speed,
            d => format!("{speed}, drafts {}/{d} accepted", gen.accepted_draft_tokens),
        };
        eprintln!(
            "[{} tokens{speed}, first token {:.1} ms, {} cached, reused {keep}]",
            gen.ids.len(),
            gen.ttft_ms,
            loaded.session.pos()
        );
        // The first answer ran on the paths that need no warm-up (a fresh process answers
        // fastest that way); before reading the next message (~0.2 s on the GPU, while the user
        // reads this answer), pay the one-time costs of the faster prompt path (cuBLAS). A
        // failure only leaves that path cold.
        if !warmed_up {
            warmed_up = true;
            if let Err(e) = loaded.session.warm_up() {
                eprintln!("(warm-up failed: {e}; the next prompts may be slower)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{common_prefix, context_advice, help, is_command_like, on_interrupt, OnInterrupt};

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

    #[test]
    fn help_names_every_command_and_the_statistics() {
        let h = help(4096);
        for word in ["/reset", "/exit", "/quit", "/help", "Ctrl-C", "Ctrl-D", "cached", "reused", "4096", "\\"] {
            assert!(h.contains(word), "{word} missing from: {h}");
        }
    }

    #[test]
    fn ctrl_c_leaves_at_the_prompt_and_stops_an_answer() {
        assert_eq!(on_interrupt(true), OnInterrupt::Exit);
        assert_eq!(on_interrupt(false), OnInterrupt::StopAnswer);
    }

    #[test]
    fn a_full_context_suggests_reset_unless_the_message_alone_is_too_long() {
        assert_eq!(
            context_advice(120, 40, 100, 32768),
            "(the conversation needs 120 tokens but the context holds 100: /reset to start over)"
        );
        assert_eq!(
            context_advice(120, 110, 100, 32768),
            "(this message needs 110 tokens but the context holds 100: shorten it, or raise --ctx-size (up to 32768))"
        );
        // At the model's whole context there is nothing to raise.
        assert_eq!(
            context_advice(120, 110, 100, 100),
            "(this message needs 110 tokens but the context holds 100: shorten it)"
        );
    }
}
