//! The Qwen2.5 chat template (a byte-exact copy of `tokenizer.chat_template` from
//! qwen2.5-coder-0.5b-instruct-q4_k_m.gguf, in `fixtures/tokenizer/`) rendered without the model.
//! Expected strings follow from reading the template; each was also checked against Python
//! Jinja2 configured as transformers configures it (trim_blocks, lstrip_blocks, loopcontrols).
//! The reference prompts of the real GGUF are tested in `tests/chat_template_refs.rs`.
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError, RENDER_FUEL};

const QWEN25: &str = include_str!("fixtures/tokenizer/qwen2.5_chat_template.jinja");
const DEFAULT_SYSTEM: &str =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";

fn qwen() -> ChatTemplate {
    ChatTemplate::new(QWEN25).expect("the Qwen2.5 template parses")
}

#[test]
fn default_system_prompt_when_none_given() {
    // Reference case "a" of generation-qwen2.5-coder-0.5b.json.
    let out = qwen().render(&[ChatMessage::user("Write a haiku about GPU computing.")], true).expect("renders");
    assert_eq!(
        out,
        format!(
            "{DEFAULT_SYSTEM}<|im_start|>user\nWrite a haiku about GPU computing.<|im_end|>\n<|im_start|>assistant\n"
        )
    );
}

#[test]
fn system_and_multi_turn() {
    // A first system message replaces the default and is skipped in the loop (`not loop.first`);
    // each turn is `<|im_start|>{role}\n{content}<|im_end|>\n`.
    let messages = [
        ChatMessage::system("Be terse."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("2+2?"),
    ];
    let expected = "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
                    <|im_start|>assistant\n";
    assert_eq!(qwen().render(&messages, true).expect("renders"), expected);
    // Without the generation prompt the text ends after the last turn.
    let expected = "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n";
    assert_eq!(qwen().render(&messages[..2], false).expect("renders"), expected);
}

#[test]
fn later_system_messages_are_ordinary_turns() {
    let messages = [ChatMessage::system("S"), ChatMessage::user("u"), ChatMessage::system("mid")];
    let expected =
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>system\nmid<|im_end|>\n";
    assert_eq!(qwen().render(&messages, false).expect("renders"), expected);
}

#[test]
fn consecutive_tool_messages_share_one_user_turn() {
    // `loop.index0`, `messages[i ± 1]` and `loop.last` decide where the user turn opens/closes.
    let messages = [
        ChatMessage::user("What is the weather?"),
        ChatMessage::assistant("Calling."),
        ChatMessage::new("tool", "{\"t\": 20}"),
        ChatMessage::new("tool", "{\"h\": 5}"),
        ChatMessage::user("Thanks"),
    ];
    let expected = format!(
        "{DEFAULT_SYSTEM}<|im_start|>user\nWhat is the weather?<|im_end|>\n<|im_start|>assistant\nCalling.<|im_end|>\n\
         <|im_start|>user\n<tool_response>\n{{\"t\": 20}}\n</tool_response>\n<tool_response>\n{{\"h\": 5}}\n</tool_response><|im_end|>\n\
         <|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(qwen().render(&messages, true).expect("renders"), expected);
}

#[test]
fn messages_deserialize_from_json() {
    let messages: Vec<ChatMessage> =
        serde_json::from_str(r#"[{"role": "user", "content": "hi"}]"#).expect("valid messages");
    assert_eq!(messages, vec![ChatMessage::user("hi")]);
}

#[test]
fn special_tokens_are_template_variables() {
    let t = ChatTemplate::new("{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}")
        .expect("parses")
        .with_special_tokens(Some("<s>".into()), Some("</s>".into()));
    assert_eq!(t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false).expect("renders"), "<s>a</s>b</s>");
}

#[test]
fn errors_are_reported() {
    assert!(matches!(ChatTemplate::new("{% for %}"), Err(ChatTemplateError::Parse(_))));
    let t =
        ChatTemplate::new("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}")
            .expect("parses");
    let e = t.render(&[ChatMessage::system("x")], false).expect_err("rejects");
    assert!(e.to_string().contains("first must be user"), "{e}");
    assert!(t.render(&[ChatMessage::user("x")], false).is_ok());
}

#[test]
fn long_conversations_render_within_the_work_bound() {
    // 20,000 turns (far more than any context holds) stay under the render's instruction bound:
    // the bound stops runaway templates, not real ones.
    let messages: Vec<ChatMessage> = (0..10_000)
        .flat_map(|i| [ChatMessage::user(format!("question {i}")), ChatMessage::assistant(format!("answer {i}"))])
        .collect();
    let out = qwen().render(&messages, true).expect("renders");
    assert!(
        out.ends_with("<|im_start|>assistant\nanswer 9999<|im_end|>\n<|im_start|>assistant\n"),
        "{}",
        &out[out.len() - 80..]
    );
    assert_eq!(out.matches("<|im_start|>").count(), 1 + 20_000 + 1);
}

#[test]
fn runaway_templates_are_stopped() {
    // Nested loops, each range under minijinja's own per-range limit: bounded by instructions.
    let nested = ChatTemplate::new("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
        .expect("parses");
    let t0 = std::time::Instant::now();
    let e = nested.render(&[ChatMessage::user("hi")], true).unwrap_err();
    assert!(matches!(e, ChatTemplateError::TooMuchWork), "{e}");
    assert!(e.to_string().contains(&format!("more than {RENDER_FUEL} template instructions")), "{e}");
    assert!(t0.elapsed().as_secs() < 20, "stopped after {:?}", t0.elapsed());
    // A string doubled in a loop (each value it builds is charged by its bytes): stopped by the
    // same bound once it has grown to ~128 MB, not at gigabytes.
    let doubling = ChatTemplate::new(
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    )
    .expect("parses");
    let e = doubling.render(&[ChatMessage::user("hi")], true).unwrap_err();
    assert!(matches!(e, ChatTemplateError::TooMuchWork), "{e}");
    // Output in a loop: bounded by bytes before the instruction bound is reached.
    let wide = ChatTemplate::new("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}").expect("parses");
    let e = wide.render(&[ChatMessage::user("hi")], true).unwrap_err();
    assert!(matches!(e, ChatTemplateError::TooLong), "{e}");
}
