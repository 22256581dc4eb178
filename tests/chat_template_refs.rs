//! The chat template stored in the real GGUF, rendered by the runtime's minijinja setup, against
//! the prompts Hugging Face transformers rendered (`apply_chat_template(messages, tokenize=False,
//! add_generation_prompt=True)`) in `tests/refs/generation-qwen2.5-coder-0.5b.json`, plus a
//! system + multi-turn conversation checked against the text the template spells out.
//!
//! Needs the model: `QWEN_AOT_MODEL` (default
//! `$QWEN_AOT_CACHE` or `~/.cache/qwen-aot`); refs from `QWEN_AOT_REFS`
//! (default: the vendored copy in `<repo>/tests/refs`). Missing files fail the test with a message saying so.
use qwen_aot_compiler::gguf::GgufFile;
use qwen_aot_compiler::tokenizer_from_gguf::tokenizer_data_from_gguf;
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate};

mod common;
use common::{model, refs};

fn template() -> ChatTemplate {
    let g = GgufFile::open(&model()).expect("GGUF opens");
    let data = tokenizer_data_from_gguf(&g).expect("tokenizer metadata");
    let source = data.chat_template.expect("the GGUF has tokenizer.chat_template");
    ChatTemplate::new(&source).expect("template parses")
}

#[test]
fn chat_cases_render_the_reference_prompt() {
    let t = template();
    let gen = refs("generation-qwen2.5-coder-0.5b.json");
    let mut n_chat = 0;
    for case in gen["cases"].as_array().expect("cases") {
        let Some(messages) = case.get("messages") else { continue };
        n_chat += 1;
        let id = case["id"].as_str().unwrap_or("?");
        let messages: Vec<ChatMessage> = serde_json::from_value(messages.clone()).expect("messages");
        let rendered = t.render(&messages, true).expect("renders");
        assert_eq!(rendered, case["input_text"].as_str().expect("input_text"), "case {id}");
    }
    assert!(n_chat > 0, "no chat case in the reference file");
}

#[test]
fn system_and_multi_turn() {
    let t = template();
    // Reading the template: a leading system message replaces the default system prompt and is
    // not repeated in the loop (`not loop.first`); every user/assistant turn (no tool_calls) is
    // `<|im_start|>{role}\n{content}<|im_end|>\n`; add_generation_prompt appends
    // `<|im_start|>assistant\n`. (Python Jinja2 renders the same text.)
    let messages = [
        ChatMessage::system("Be terse."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("2+2?"),
    ];
    let expected = "<|im_start|>system\nBe terse.<|im_end|>\n\
                    <|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\nHello!<|im_end|>\n\
                    <|im_start|>user\n2+2?<|im_end|>\n\
                    <|im_start|>assistant\n";
    assert_eq!(t.render(&messages, true).expect("renders"), expected);

    // Without a system message the default one is inserted; without add_generation_prompt the
    // text ends after the last turn.
    let messages = [ChatMessage::user("Hi"), ChatMessage::assistant("Hello!")];
    let expected =
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
                    <|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\nHello!<|im_end|>\n";
    assert_eq!(t.render(&messages, false).expect("renders"), expected);
}

/// Function definitions, an assistant turn that called one and the tool's answer: the text
/// Python's Jinja2 3.1.6 renders from the GGUF's template with transformers' settings
/// (`trim_blocks`, `lstrip_blocks`, `loopcontrols`, `tojson` = `json.dumps(ensure_ascii=False)`),
/// pasted here.
#[test]
fn tools_a_call_and_its_response_render_as_jinja2_does() {
    let t = template();
    let tools: Vec<serde_json::Value> = vec![
        serde_json::json!({"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}),
    ];
    let call =
        serde_json::json!({"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}});
    let messages = [
        ChatMessage::user("What's the weather like in Paris today?"),
        ChatMessage::assistant_calls("", vec![call]),
        ChatMessage::new("tool", "{\"temperature\": 18, \"sky\": \"cloudy\"}"),
    ];
    let expected = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWhat's the weather like in Paris today?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temperature\": 18, \"sky\": \"cloudy\"}\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(t.render_with_tools(&messages, &tools, true).expect("renders"), expected);
    // Without tools the same template renders the plain system prompt.
    assert!(t.render_with_tools(&messages[..1], &[], true).expect("renders").starts_with(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    ));
}
