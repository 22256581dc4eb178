//! `generate`: low-latency text generation with a compiled Qwen2 model.
//!
//! Streams the answer to stdout; prompt tokens, time to first token and decode speed go to stderr.
//! `--json` prints one object instead.
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use qwen_aot::backend::{self, BackendChoice};
use qwen_aot::cli_args::{parse_max_tokens, parse_seed, SeedArg};
use qwen_aot::generation::{generate, GenOptions, FIRST_TOKEN_PHASE};
use qwen_aot::grammar_args::GrammarArgs;
use qwen_aot::host_draw::HostDraw;
use qwen_aot::speculation_args::{unsupported_note, SpeculationArgs};
use qwen_aot::template_args::{chat_template, TemplateArgs};
use qwen_aot_runtime::chat_template::ChatMessage;
use qwen_aot_runtime::phases;
use qwen_aot_runtime::sampler::SamplingParams;

/// Flags follow llama.cpp's `llama-cli` where it has one (`-m`, `-p`, `-n`, `-c`, `-s`, `-f`, `-t`,
/// `-i`, `--temp`, `--n-predict`) so a familiar command line works unchanged.
#[derive(Parser, Debug)]
#[command(name = "generate", version, about = "Generate text with a Qwen2-family model (GGUF or compiled directory)")]
struct Args {
    /// Raw prompt text, as --prompt (the positional form llama.cpp users type).
    #[arg(value_name = "PROMPT", conflicts_with_all = ["prompt", "prompt_file", "chat", "interactive", "chat_template_file"])]
    positional_prompt: Option<String>,
    /// GGUF file or compiled directory (default: the default model, fetched and compiled on first use).
    #[arg(short = 'm', long)]
    model: Option<PathBuf>,
    /// Raw prompt text (no chat template). Without a prompt, --chat or --prompt-file on a terminal:
    /// an interactive chat.
    #[arg(short = 'p', long, conflicts_with_all = ["chat", "prompt_file", "interactive", "chat_template_file"])]
    prompt: Option<String>,
    /// Read the raw prompt from a UTF-8 file.
    #[arg(short = 'f', long, visible_alias = "file", conflicts_with_all = ["chat", "interactive", "chat_template_file"])]
    prompt_file: Option<PathBuf>,
    /// A user message, wrapped in the model's chat template.
    #[arg(long, conflicts_with = "interactive")]
    chat: Option<String>,
    /// The interactive chat, also when stdin is not a terminal (one message per line).
    #[arg(short = 'i', long, conflicts_with = "json")]
    interactive: bool,
    /// System message for --chat and the interactive chat (default: the template's own).
    #[arg(long, conflicts_with_all = ["prompt", "prompt_file", "positional_prompt"])]
    system: Option<String>,
    /// Stop when the generated text contains this string (repeatable); the text ends before it.
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Stop after this many generated tokens; -1: until end of text or the context is full.
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value = "256", value_parser = parse_max_tokens,
          allow_negative_numbers = true)]
    max_tokens: usize,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// KV-cache size in tokens (default: min(4096, model context)).
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,
    /// Threads of the CPU executor (default: one per core; at most 1024).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, visible_alias = "temp", default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep the k most likely tokens; 0 turns top-k off. The sampler never looks past the 256
    /// most likely tokens (its cap, on CPU and GPU alike), so 0 and any k above 256 keep 256.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to at least p, in (0, 1].
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one, in [0, 1].
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    min_p: f32,
    /// Divide the positive logits (multiply the negative ones) of recent tokens by this; 1 is off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repeat_penalty: f32,
    /// Subtract this from the logits of recent tokens; 0 is off, negative favours them.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    penalty_window: usize,
    /// Random seed: the same seed and prompt give the same text on the same backend; -1 picks a
    /// random seed and prints it on stderr (unless --quiet) so the run can be repeated.
    #[arg(short = 's', long, default_value = "0", value_parser = parse_seed, allow_negative_numbers = true)]
    seed: SeedArg,
    #[command(flatten)]
    speculation: SpeculationArgs,
    #[command(flatten)]
    grammar: GrammarArgs,
    #[command(flatten)]
    template: TemplateArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// No progress bars, notes or the closing statistics line on stderr.
    #[arg(long, conflicts_with = "verbose")]
    quiet: bool,
    /// Print where start-up time went (model lookup, plan, weights, tokenizer, executor, first
    /// prefill; on the GPU: context, module load, upload, graph capture) on stderr at the end.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn run(mut args: Args) -> Result<()> {
    // The positional prompt is --prompt by another name; from here on only --prompt exists.
    if let Some(p) = args.positional_prompt.take() {
        args.prompt = Some(p);
    }
    if args.max_tokens == 0 {
        anyhow::bail!("--max-tokens must be at least 1 (or -1: until end of text or the context is full)");
    }
    let file_prompt = match &args.prompt_file {
        Some(f) => {
            Some(qwen_aot::text_file::read_utf8(f, qwen_aot::text_file::MAX_PROMPT_FILE_BYTES, "a prompt file")?)
        }
        None => None,
    };
    let interactive = args.interactive || (args.prompt.is_none() && args.chat.is_none() && args.prompt_file.is_none());
    if interactive && !args.interactive && (args.json || !std::io::stdin().is_terminal()) {
        anyhow::bail!(
            "give --prompt, --prompt-file or --chat (the interactive chat needs a terminal, or -i to read stdin)"
        );
    }
    if let Some(n) = args.threads {
        // More threads than cores only take turns on them (on 2 cores, 512 threads decode 50x
        // slower): allowed, since it may be meant, but said.
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if usize::from(n) > cores && !args.quiet {
            eprintln!("warning: --threads {n} is more than the {cores} cores here; decoding will be slower");
        }
        // Before loading: the CPU executor's kernels run on rayon's global pool, which is fixed
        // the first time anything uses it.
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global()
            .context("setting up the --threads pool")?;
    }
    let seed = args.seed.resolve();
    if args.seed == SeedArg::Random && !args.quiet {
        eprintln!("seed: {seed} (repeat this run with --seed {seed})");
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        penalty_window: args.penalty_window,
        seed,
    };
    sampling.validate()?;
    let drafter = args.speculation.drafter()?;
    let grammar = args.grammar.source()?;
    let template_text = args.template.read()?;
    anyhow::ensure!(
        grammar.is_none() || !interactive,
        "--json-schema and --grammar-file take one prompt, not the interactive chat"
    );
    let quiet = args.quiet || args.json;
    let mut loaded = backend::load_model(args.model.as_deref(), args.backend, args.ctx_size, quiet)?;
    loaded.session.set_sampling(&sampling)?;
    if args.speculation.asked() && !loaded.session.can_verify() && !quiet {
        eprintln!("{}", unsupported_note(loaded.session.executor().backend().name()));
    }
    if interactive {
        if args.verbose {
            print_phases(); // what loading took; the chat's prefills come later
        }
        let template = chat_template(template_text.as_deref(), &loaded.tokenizer)?;
        return qwen_aot::chat::run(
            &mut loaded,
            args.system.as_deref(),
            args.max_tokens,
            &args.stop,
            drafter,
            template,
        );
    }
    let text = match (args.prompt.as_ref().or(file_prompt.as_ref()), &args.chat) {
        (Some(p), _) => p.clone(),
        (None, Some(user)) => {
            let template = chat_template(template_text.as_deref(), &loaded.tokenizer)?;
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(ChatMessage::system(s.clone()));
            }
            messages.push(ChatMessage::user(user.clone()));
            template.render(&messages, true)?
        }
        (None, None) => anyhow::bail!("give --prompt, --prompt-file or --chat"),
    };
    let prompt_ids = phases::time("tokenize the prompt", || loaded.tokenizer.encode(&text));
    // A grammar draws each token on the host from its masked logits row (no drafts).
    let draw = match grammar {
        Some(g) => Some(HostDraw {
            grammar: Some(phases::time("compile the grammar", || g.compile(&loaded.tokenizer))?),
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
        }),
        None => None,
    };
    let opts = GenOptions {
        max_tokens: args.max_tokens,
        stop_strings: args.stop.clone(),
        speculation: drafter,
        draw: draw.as_ref(),
        ..Default::default()
    };
    let gen = generate(&mut loaded.session, &loaded.tokenizer, &prompt_ids, &opts, |piece| {
        if !args.json {
            qwen_aot::stdout::write_flushed_or_exit(piece.as_bytes());
        }
    })?;
    if args.json {
        qwen_aot::outln!("{}", serde_json::to_string(&gen)?);
    } else {
        qwen_aot::outln!();
    }
    if !quiet {
        let speed = gen.decode_tok_s.map(|r| format!(" at {r:.1} tokens/s")).unwrap_or_default();
        let drafts = match gen.draft_tokens {
            0 => String::new(),
            d => format!(" | drafts {}/{d} accepted", gen.accepted_draft_tokens),
        };
        eprintln!(
            "[{}] prompt {} tokens | ttft {:.1} ms | {} token{}{speed}{drafts} | stop: {}",
            gen.backend,
            gen.prompt_ids.len(),
            gen.ttft_ms,
            gen.ids.len(),
            if gen.ids.len() == 1 { "" } else { "s" },
            gen.stop_reason.name()
        );
    }
    if args.verbose {
        print_phases();
        if gen.ids.len() > 1 {
            eprintln!(
                "decode {:.1} ms: {:.1} ms in the steps (launch to token), {:.1} ms the host's work between them",
                gen.decode_secs * 1e3,
                gen.step_secs * 1e3,
                (gen.decode_secs - gen.step_secs) * 1e3
            );
        }
    }
    Ok(())
}

/// The start-up phases on stderr, and when the first token came.
fn print_phases() {
    let recorded = phases::recorded();
    eprint!("{}", phases::report(&recorded));
    if let Some(p) = recorded.iter().find(|p| p.name == FIRST_TOKEN_PHASE) {
        eprintln!("first token {:.1} ms after the start of main", (p.began + p.took).as_secs_f64() * 1e3);
    }
}

fn main() {
    phases::start();
    qwen_aot::sigpipe::restore_default();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
