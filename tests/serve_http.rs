//! `qwen-aot serve` end to end: the real binary on an ephemeral localhost port, the CPU backend
//! and the default model, spoken to over HTTP. Greedy answers must equal `generate --chat`'s;
//! concurrent clients all get theirs; a client that disconnects mid-stream frees the engine; bad
//! input gets an OpenAI-style 4xx and the server keeps answering; `logprobs` agree with the
//! reference implementation's (HF transformers, float32) teacher-forced log-probabilities.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::server::ServeProcess as Server;
use common::{model, refs};
use serde_json::{json, Value};

const MAX_TOKENS: u64 = 8;

impl Server {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json")
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path).body(body.to_string()).send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body ({e}): {text}")))
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in {text}"))
    }
}

/// reqwest's `json()` needs a feature; the body text through serde_json does the same.
trait JsonText {
    async fn json_text(self) -> Value;
}

impl JsonText for reqwest::Response {
    async fn json_text(self) -> Value {
        let text = self.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body ({e}): {text}"))
    }
}

/// `generate --json` on the CPU, greedy: the reference text.
fn generate(mode: &str, text: &str, max_tokens: u64) -> Value {
    generate_with(mode, text, max_tokens, &[])
}

fn generate_with(mode: &str, text: &str, max_tokens: u64, extra: &[&str]) -> Value {
    let model = model();
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(extra)
        .args([
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
            mode,
            text,
            "--max-tokens",
            &max_tokens.to_string(),
            "--json",
        ])
        .output()
        .expect("run generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("generate --json")
}

fn chat_body(message: &str, stream: bool) -> Value {
    json!({"model": "any", "messages": [{"role": "user", "content": message}], "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream, "stream_options": {"include_usage": true}})
}

/// The `data:` payloads of an SSE body, in order.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))))
        .map(|d| d.trim().to_string())
        .collect()
}

/// Text of a streamed answer, its finish reason and its usage chunk; checks the `[DONE]` end.
fn streamed_text(body: &str) -> (String, String, Value) {
    let events = sse_events(body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    let (mut text, mut finish, mut usage) = (String::new(), String::new(), Value::Null);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("chunk {e}"));
        if let Some(u) = v.get("usage") {
            usage = u.clone();
        }
        if let Some(c) = v["choices"].get(0) {
            text.push_str(c["delta"]["content"].as_str().or(c["text"].as_str()).unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    (text, finish, usage)
}

async fn chat_stream(s: &Server, message: &str) -> (String, String, Value) {
    let r = s.post("/v1/chat/completions").body(chat_body(message, true).to_string()).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    streamed_text(&r.text().await.expect("stream"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completions_match_generate_streamed_or_not() {
    let s = Server::start(&[]).await;
    let message = "Say hi.";
    let reference = generate("--chat", message, MAX_TOKENS);
    let want = reference["text"].as_str().unwrap();
    let prompt_len = reference["prompt_ids"].as_array().unwrap().len() as u64;

    let (status, v) = s.post_json("/v1/chat/completions", &chat_body(message, false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], want, "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], prompt_len, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], MAX_TOKENS, "{v}");
    assert_eq!(v["usage"]["total_tokens"], prompt_len + MAX_TOKENS, "{v}");

    let (text, finish, usage) = chat_stream(&s, message).await;
    assert_eq!(text, want);
    assert_eq!(finish, "length");
    assert_eq!(usage["completion_tokens"], MAX_TOKENS, "{usage}");

    // The next turn of the same chat: the cache holds the prompt and the answer but its last
    // token, so only the rest is prefilled.
    let turn2 = json!({"messages": [{"role": "user", "content": message}, {"role": "assistant", "content": want}, {"role": "user", "content": "And bye."}], "max_tokens": 2, "temperature": 0});
    let (status, v) = s.post_json("/v1/chat/completions", &turn2).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], prompt_len + MAX_TOKENS - 1, "{v}");

    // An answer that ends by itself finishes with "stop"; so does a stop string, which is cut.
    let (status, v) = s.post_json("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": message}], "temperature": 0, "stop": [" How"], "max_tokens": 30})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(want.starts_with(text) && !text.contains(" How"), "{text:?} vs {want:?}");

    let prompt = "def fib(n):";
    let reference = generate("--prompt", prompt, MAX_TOKENS);
    let body = json!({"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0});
    let (status, v) = s.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], reference["text"], "{v}");
    let mut body = body;
    body["stream"] = json!(true);
    let r = s.post("/v1/completions").body(body.to_string()).send().await.expect("request");
    let (text, finish, _) = streamed_text(&r.text().await.unwrap());
    assert_eq!((text.as_str(), finish.as_str()), (reference["text"].as_str().unwrap(), "length"));

    // A list of prompts (OpenAI's batch form): each answered as alone, choices numbered prompt by
    // prompt (n each), usage summed; token-id lists alike; streamed, over 64 prompts or one bad
    // prompt anywhere: 400 (checked before any runs).
    let other = generate("--prompt", "Say hi.", MAX_TOKENS);
    let lens = [&reference, &other].map(|r| r["prompt_ids"].as_array().unwrap().len() as u64);
    for batch in [json!([prompt, "Say hi."]), json!([reference["prompt_ids"], other["prompt_ids"]])] {
        let body = json!({"prompt": batch, "max_tokens": MAX_TOKENS, "temperature": 0, "n": 2});
        let (status, v) = s.post_json("/v1/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        let texts: Vec<(u64, &str)> = v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["index"].as_u64().unwrap(), c["text"].as_str().unwrap()))
            .collect();
        let (a, b) = (reference["text"].as_str().unwrap(), other["text"].as_str().unwrap());
        assert_eq!(texts, [(0, a), (1, a), (2, b), (3, b)], "{v}");
        assert_eq!(v["usage"]["prompt_tokens"], lens[0] + lens[1], "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 4 * MAX_TOKENS, "{v}");
    }
    let many: Vec<&str> = vec!["x"; 65];
    let generated = s.metric("qwen_aot_generated_tokens_total").await;
    for (body, param) in [
        (json!({"prompt": [prompt, "Say hi."], "stream": true}), "stream"),
        (json!({"prompt": many}), "prompt"),
        (json!({"prompt": [[1], [-2]], "max_tokens": 1}), "prompt"),
    ] {
        let (status, v) = s.post_json("/v1/completions", &body).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(param)), "{v}");
    }
    assert_eq!(s.metric("qwen_aot_generated_tokens_total").await, generated, "nothing ran for refused batches");

    // /tokenize gives the ids the generation endpoints prefill (chat through the template),
    // /detokenize the text of ids; ids outside the vocabulary and a missing input are 400s.
    let chat_ids = generate("--chat", message, 1)["prompt_ids"].clone();
    let (status, v) = s.post_json("/tokenize", &json!({"messages": [{"role": "user", "content": message}]})).await;
    assert_eq!((status, &v["tokens"], &v["count"]), (200, &chat_ids, &json!(prompt_len)), "{v}");
    let (status, v) = s.post_json("/tokenize", &json!({"content": prompt})).await;
    assert_eq!((status, &v["tokens"]), (200, &reference["prompt_ids"]), "{v}");
    assert!(v["max_model_len"].as_u64().unwrap() > 0, "{v}");
    let (status, v) = s.post_json("/detokenize", &json!({"tokens": reference["ids"]})).await;
    assert_eq!((status, &v["prompt"]), (200, &reference["text"]), "{v}");
    for (path, body, param) in [
        ("/detokenize", json!({"tokens": [1, 99999999]}), "tokens"),
        ("/detokenize", json!({"tokens": "abc"}), "tokens"),
        ("/tokenize", json!({}), "prompt"),
        ("/tokenize", json!({"prompt": [1, -2]}), "prompt"),
    ] {
        let (status, v) = s.post_json(path, &body).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(param)), "{path} {body}: {v}");
    }

    let models: Value = s.http.get(format!("{}/v1/models", s.base)).send().await.unwrap().json_text().await;
    assert_eq!(models["data"][0]["object"], "model", "{models}");
    let id = models["data"][0]["id"].as_str().unwrap();
    let one: Value = s.http.get(format!("{}/v1/models/{id}", s.base)).send().await.unwrap().json_text().await;
    assert_eq!(one, models["data"][0]);
    for other in ["no-such-model", "Qwen/Qwen2.5-0.5B"] {
        let r = s.http.get(format!("{}/v1/models/{other}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json_text().await["error"]["code"], "model_not_found", "{other}");
    }
    assert!(s.metric("qwen_aot_generated_tokens_total").await >= 4.0 * MAX_TOKENS as f64);
    assert!(s.metric("qwen_aot_cached_prompt_tokens_total").await >= prompt_len as f64);
    // The decode loops' time and its share in the steps: both counted, the share within it.
    let (decode, steps) =
        (s.metric("qwen_aot_decode_seconds_total").await, s.metric("qwen_aot_decode_step_seconds_total").await);
    assert!(steps > 0.0 && steps <= decode, "steps {steps} s of {decode} s");
}

/// A reference case of tests/refs by id.
fn ref_case(id: &str) -> Value {
    let r = refs("generation-qwen2.5-coder-0.5b.json");
    r["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("case {id}"))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The CPU executor's logits are within 0.0023 of the reference's (README), so a log-probability
/// (a logit less the row's log-normaliser) within about twice that (measured: at most 0.0012 over
/// the four reference cases).
const LOGPROB_TOL: f64 = 0.005;

/// Chat `logprobs` / `top_logprobs` and completions' `logprobs: N` on greedy answers of two
/// reference cases: every generated token's log-probability within LOGPROB_TOL of the reference's
/// teacher-forced one, the greedy token first among its alternatives, the entries' bytes
/// spelling the answer; streamed, the chunks carry the same entries; a prompt of token ids
/// scored with `echo` matches the reference's teacher-forced values; a wrong form is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_agree_with_the_reference_streamed_or_not() {
    let s = Server::start(&[]).await;

    // Chat: case a ends with <|im_end|> after 18 tokens; content covers the 17 before it.
    let case = ref_case("a");
    let want_lp = f64s(&case["teacher_forced"]["token_logprobs"]);
    let body =
        json!({"messages": case["messages"], "max_tokens": 48, "temperature": 0, "logprobs": true, "top_logprobs": 3});
    let (status, v) = s.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], case["n_input_tokens"], "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().expect("logprobs.content").clone();
    assert_eq!(content.len(), want_lp.len() - 1, "every token but <|im_end|>: {v}");
    let mut bytes = Vec::new();
    for (i, e) in content.iter().enumerate() {
        let lp = e["logprob"].as_f64().unwrap();
        assert!((lp - want_lp[i]).abs() <= LOGPROB_TOL, "token {i}: {lp} vs reference {}", want_lp[i]);
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{e}");
        assert_eq!((&top[0]["token"], &top[0]["logprob"]), (&e["token"], &e["logprob"]), "greedy: the likeliest");
        assert!(top.windows(2).all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()), "{e}");
        bytes.extend(e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8));
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), v["choices"][0]["message"]["content"].as_str().unwrap());

    // The same streamed: the chunks' entries, in order, are the same entries.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = s.post("/v1/chat/completions").body(streamed.to_string()).send().await.expect("request");
    let chunks = r.text().await.unwrap();
    let entries: Vec<Value> = sse_events(&chunks)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(entries, content, "{chunks}");

    // Completions: case c, 16 of its 48 greedy tokens, five alternatives each.
    let case = ref_case("c");
    let want_lp = f64s(&case["teacher_forced"]["token_logprobs"]);
    let body = json!({"prompt": case["input_text"], "max_tokens": 16, "temperature": 0, "logprobs": 5});
    let (status, v) = s.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens.len(), 16, "{v}");
    assert_eq!(tokens.concat(), v["choices"][0]["text"].as_str().unwrap());
    let offsets: Vec<u64> = lp["text_offset"].as_array().unwrap().iter().map(|o| o.as_u64().unwrap()).collect();
    let mut at = 0;
    for (i, (t, &o)) in tokens.iter().zip(&offsets).enumerate() {
        assert_eq!(o, at, "text_offset {i}");
        at += t.chars().count() as u64;
        let got = lp["token_logprobs"][i].as_f64().unwrap();
        assert!((got - want_lp[i]).abs() <= LOGPROB_TOL, "token {i}: {got} vs reference {}", want_lp[i]);
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(top.len() <= 5 && top.len() >= 4, "{top:?}");
        assert_eq!(top.get(*t).and_then(Value::as_f64), Some(got), "the greedy token is among its alternatives");
    }

    // Scoring (`echo`, `max_tokens: 0`): case d's prompt and greedy answer as token ids, every
    // answer token's log-probability the reference's teacher-forced one (the same definition:
    // one pass over the whole text); the first token has none.
    let case = ref_case("d");
    let want_lp = f64s(&case["teacher_forced"]["token_logprobs"]);
    let n_in = case["input_ids"].as_array().unwrap().len();
    let ids: Vec<Value> =
        case["input_ids"].as_array().unwrap().iter().chain(case["output_ids"].as_array().unwrap()).cloned().collect();
    let body = json!({"prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 1});
    let (status, v) = s.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let full = format!("{}{}", case["input_text"].as_str().unwrap(), case["output_text"].as_str().unwrap());
    assert_eq!(v["choices"][0]["text"], full.as_str());
    assert_eq!(
        (v["usage"]["prompt_tokens"].as_u64(), v["usage"]["completion_tokens"].as_u64()),
        (Some(ids.len() as u64), Some(0))
    );
    let lp = &v["choices"][0]["logprobs"];
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null(), "{lp}");
    for (i, want) in want_lp.iter().enumerate() {
        let got = lp["token_logprobs"][n_in + i].as_f64().unwrap();
        assert!((got - want).abs() <= LOGPROB_TOL, "answer token {i}: {got} vs reference {want}");
    }
    // Echo with an answer, streamed: the prompt is the first chunk.
    let body = json!({"prompt": "def fib(n):", "max_tokens": 2, "temperature": 0, "echo": true, "stream": true});
    let r = s.post("/v1/completions").body(body.to_string()).send().await.expect("request");
    let chunks = r.text().await.unwrap();
    let first: Value = serde_json::from_str(&sse_events(&chunks)[0]).unwrap();
    assert_eq!(first["choices"][0]["text"], "def fib(n):", "{chunks}");

    // Each endpoint's own form; anything else names the parameter.
    for (path, bad, param) in [
        ("/v1/chat/completions", json!({"logprobs": 3}), "logprobs"),
        ("/v1/chat/completions", json!({"top_logprobs": 2}), "top_logprobs"),
        ("/v1/chat/completions", json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs"),
        ("/v1/completions", json!({"logprobs": true}), "logprobs"),
        ("/v1/completions", json!({"logprobs": 1, "top_logprobs": 1}), "top_logprobs"),
        ("/v1/completions", json!({"max_tokens": 0}), "max_tokens"),
        ("/v1/completions", json!({"prompt": [1, -3]}), "prompt"),
        ("/v1/completions", json!({"prompt": [[]]}), "prompt"),
        ("/v1/chat/completions", json!({"echo": true}), "echo"),
    ] {
        let mut body = if path.contains("chat") {
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        } else {
            json!({"prompt": "hi", "max_tokens": 1})
        };
        body.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let (status, v) = s.post_json(path, &body).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(param)), "{body}: {v}");
    }
}

/// Function calling on the default model (greedy): it answers a weather question with a call,
/// which comes back as `tool_calls` (arguments a JSON string), finish reason "tool_calls", no
/// content -- streamed as one `tool_calls` delta; the call and the tool's answer render into the
/// next turn, which reuses the cache; an answer that names no offered function stays content;
/// what cannot be honoured is a 400 naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_come_back_as_openai_tool_calls_streamed_or_not() {
    let s = Server::start(&[]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let question = json!([{"role": "user", "content": "What's the weather like in Paris today?"}]);
    let body = json!({"messages": question, "tools": tools, "temperature": 0, "max_tokens": 60});
    let (status, v) = s.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!((&choice["finish_reason"], &choice["message"]["content"]), (&json!("tool_calls"), &Value::Null), "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!((&call["type"], &call["function"]["name"]), (&json!("function"), &json!("get_weather")), "{v}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = s.post("/v1/chat/completions").body(streamed.to_string()).send().await.expect("request");
    let chunks: Vec<Value> = sse_events(&r.text().await.unwrap())
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]).collect();
    let calls: Vec<&Value> = deltas.iter().filter_map(|d| d["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls.len(), 1, "{chunks:?}");
    assert_eq!((&calls[0]["index"], &calls[0]["function"]), (&json!(0), &call["function"]));
    assert!(deltas.iter().all(|d| d["delta"]["content"].as_str().is_none_or(str::is_empty)), "no content: {chunks:?}");
    assert_eq!(deltas.last().unwrap()["finish_reason"], "tool_calls");

    // The next turn: the call (arguments as OpenAI sends them, a string) and the tool's answer.
    let mut turn = question.as_array().unwrap().clone();
    turn.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    turn.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature\": 18}"}));
    let (status, v) = s
        .post_json(
            "/v1/chat/completions",
            &json!({"messages": turn, "tools": tools, "temperature": 0, "max_tokens": 8}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 100, "{v}");

    // A would-be call of a function nobody offered is plain content.
    let body = json!({"messages": [{"role": "user", "content": "Say hi."}], "tools": tools, "temperature": 0, "max_tokens": 20});
    let (status, v) = s.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["choices"][0]["message"]["tool_calls"].is_null() && v["choices"][0]["message"]["content"].is_string(),
        "{v}"
    );

    // A forced choice: "required" on a greeting still answers with a call, by the grammar of
    // the tools' parameters (one call; its arguments valid against them); the same streamed.
    // `add`'s parameters as pydantic writes them ($defs and a $ref); `note`'s allow any value.
    let add = json!({"type": "function", "function": {"name": "add", "parameters": {"$defs": {"Int": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/Int"}, "b": {"$ref": "#/$defs/Int"}}, "required": ["a", "b"], "additionalProperties": false}}});
    let both = json!([tools[0], add]);
    let greeting = json!([{"role": "user", "content": "Hello! How are you?"}]);
    let note = json!({"type": "function", "function": {"name": "note", "parameters": {}}});
    for (choice, offered) in [
        (json!("required"), &both),
        (json!({"type": "function", "function": {"name": "add"}}), &both),
        (json!({"type": "function", "function": {"name": "note"}}), &json!([note])),
    ] {
        let body =
            json!({"messages": greeting, "tools": offered, "tool_choice": choice, "temperature": 0, "max_tokens": 60});
        let (status, v) = s.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{choice}: {v}");
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{v}");
        let (name, args) = (&calls[0]["function"]["name"], &calls[0]["function"]["arguments"]);
        let args: serde_json::Map<String, Value> = serde_json::from_str(args.as_str().unwrap()).unwrap();
        match name.as_str().unwrap() {
            "add" => assert!(args.len() == 2 && args["a"].is_i64() && args["b"].is_i64(), "{v}"),
            "get_weather" => assert!(args["city"].is_string(), "{v}"),
            "note" => {} // any object
            other => panic!("{other} is not a tool: {v}"),
        }
        if let Some(named) = choice["function"]["name"].as_str() {
            assert_eq!(name, named, "{v}");
        }
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let r = s.post("/v1/chat/completions").body(streamed.to_string()).send().await.expect("request");
        let events = sse_events(&r.text().await.unwrap());
        let calls: Vec<Value> = events
            .iter()
            .filter(|e| *e != "[DONE]")
            .filter_map(|e| {
                serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["tool_calls"].as_array().cloned()
            })
            .flatten()
            .collect();
        assert_eq!(calls.len(), 1, "{events:?}");
        assert_eq!(calls[0]["function"]["name"], *name, "{events:?}");
    }

    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"messages": question, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        ("/v1/chat/completions", json!({"messages": question, "tool_choice": "required"}), "tool_choice"),
        (
            "/v1/chat/completions",
            json!({"messages": question, "tools": tools, "tool_choice": "required", "response_format": {"type": "json_object"}}),
            "tools",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": question, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}], "tool_choice": "required"}),
            "tools",
        ),
        ("/v1/chat/completions", json!({"messages": question, "tools": [{"type": "function"}]}), "tools[0]"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function"}]}]}),
            "messages[0].tool_calls[0]",
        ),
        ("/v1/completions", json!({"prompt": "x", "tools": tools}), "tools"),
    ] {
        let (status, v) = s.post_json(path, &body).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(param)), "{body}: {v}");
    }
}

/// `n` answers, one after another from the same prompt: choice i draws with the request's seed
/// plus i, so it equals a one-answer request seeded so; streamed, each choice's chunks carry its
/// index and its own closing chunk; the usage counts every answer's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_are_the_answers_of_successive_seeds_streamed_or_not() {
    let s = Server::start(&[]).await;
    let ask = |n: u64, seed: u64, stream: bool| json!({"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 6, "temperature": 1.0, "seed": seed, "n": n, "stream": stream});
    let (status, v) = s.post_json("/v1/chat/completions", &ask(3, 40, false)).await;
    assert_eq!(status, 200, "{v}");
    let texts: Vec<&str> =
        v["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 3, "{v}");
    let indices: Vec<u64> = v["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2]);
    let mut tokens = 0;
    for (i, text) in texts.iter().enumerate() {
        let (status, one) = s.post_json("/v1/chat/completions", &ask(1, 40 + i as u64, false)).await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["choices"][0]["message"]["content"].as_str(), Some(*text), "choice {i}");
        tokens += one["usage"]["completion_tokens"].as_u64().unwrap();
    }
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(tokens), "{v}");
    assert!(texts.iter().any(|t| *t != texts[0]), "three seeds, three draws: {texts:?}");

    let r = s.post("/v1/chat/completions").body(ask(3, 40, true).to_string()).send().await.expect("request");
    let mut streamed = vec![String::new(); 3];
    let mut finished = vec![0; 3];
    for e in sse_events(&r.text().await.unwrap()).iter().filter(|e| *e != "[DONE]") {
        let c: Value = serde_json::from_str(e).unwrap();
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        streamed[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        finished[i] += usize::from(choice["finish_reason"].is_string());
    }
    assert_eq!(streamed, texts);
    assert_eq!(finished, [1, 1, 1]);
}

/// JSON mode (`response_format: {"type": "json_object"}`): answers that end by themselves parse
/// as one JSON object -- greedy or sampled, streamed or not, for prompts that ask for JSON and
/// for ones that do not; a schema is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_answers_are_json_objects() {
    let s = Server::start(&[]).await;
    let ask = |msg: &str, temperature: f64, n: u64, stream: bool| json!({"messages": [{"role": "user", "content": msg}], "response_format": {"type": "json_object"}, "temperature": temperature, "seed": 3, "n": n, "max_tokens": 60, "stream": stream});
    for msg in ["Describe a cat with a name and an age, as JSON.", "Say hi.", "List three colors."] {
        let (status, v) = s.post_json("/v1/chat/completions", &ask(msg, 1.0, 2, false)).await;
        assert_eq!(status, 200, "{v}");
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["finish_reason"], "stop", "{msg}: {v}");
            let text = c["message"]["content"].as_str().unwrap();
            assert!(serde_json::from_str::<serde_json::Map<String, Value>>(text).is_ok(), "{msg}: {text:?}");
        }
        let (status, greedy) = s.post_json("/v1/chat/completions", &ask(msg, 0.0, 1, false)).await;
        assert_eq!(status, 200, "{greedy}");
        let text = greedy["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(serde_json::from_str::<serde_json::Map<String, Value>>(text).is_ok(), "{msg}: {text:?}");
        let r = s.post("/v1/chat/completions").body(ask(msg, 0.0, 1, true).to_string()).send().await.expect("request");
        let (streamed, finish, _) = streamed_text(&r.text().await.unwrap());
        assert_eq!((streamed.as_str(), finish.as_str()), (text, "stop"));
    }
}

/// Structured outputs (`response_format` json_schema): every answer -- greedy or sampled, chat
/// or completion, streamed or not, asked for JSON or not -- that ends by itself is an object
/// valid against the schema (its required keys, types and enum); vLLM's `guided_*` and
/// `structured_outputs` (choice, regex, schema text, Lark and GBNF grammars) end in what they allow;
/// constraints that do not compile, two at once and malformed formats are a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_answers_follow_the_schema() {
    let s = Server::start(&[]).await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "color": {"enum": ["black", "white", "orange"]}, "toys": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}, "required": ["name", "age", "color"], "additionalProperties": false});
    let format = json!({"type": "json_schema", "json_schema": {"name": "cat", "strict": true, "schema": schema}});
    let valid = |text: &str| {
        let v: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v["name"].is_string() && v["age"].as_u64().is_some(), "{text}");
        assert!(["black", "white", "orange"].contains(&v["color"].as_str().unwrap()), "{text}");
        assert!(v.keys().all(|k| ["name", "age", "color", "toys"].contains(&k.as_str())), "{text}");
        if let Some(toys) = v.get("toys") {
            let toys = toys.as_array().unwrap();
            assert!(toys.len() <= 3 && toys.iter().all(Value::is_string), "{text}");
        }
    };
    for msg in ["Describe a cat.", "Say hi.", "List three colors."] {
        let ask = |temperature: f64, n: u64, stream: bool| json!({"messages": [{"role": "user", "content": msg}], "response_format": format, "temperature": temperature, "seed": 5, "n": n, "max_tokens": 80, "stream": stream});
        let (status, v) = s.post_json("/v1/chat/completions", &ask(1.0, 2, false)).await;
        assert_eq!(status, 200, "{v}");
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["finish_reason"], "stop", "{msg}: {v}");
            valid(c["message"]["content"].as_str().unwrap());
        }
        let (status, greedy) = s.post_json("/v1/chat/completions", &ask(0.0, 1, false)).await;
        assert_eq!((status, &greedy["choices"][0]["finish_reason"]), (200, &json!("stop")), "{greedy}");
        let text = greedy["choices"][0]["message"]["content"].as_str().unwrap();
        valid(text);
        let r = s.post("/v1/chat/completions").body(ask(0.0, 1, true).to_string()).send().await.expect("request");
        let (streamed, finish, _) = streamed_text(&r.text().await.unwrap());
        assert_eq!((streamed.as_str(), finish.as_str()), (text, "stop"));
    }
    let body = json!({"prompt": "A cat:", "response_format": format, "temperature": 0, "max_tokens": 80});
    let (status, v) = s.post_json("/v1/completions", &body).await;
    assert_eq!((status, &v["choices"][0]["finish_reason"]), (200, &json!("stop")), "{v}");
    valid(v["choices"][0]["text"].as_str().unwrap());

    // vLLM's extensions: a choice, a regex, a schema given as text, a Lark grammar.
    let ask = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Is water wet? Then count."}], "temperature": 0, "max_tokens": 30});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, check) in [
        (json!({"guided_choice": ["yes", "no", "a.b"]}), r"^(yes|no|a\.b)$"),
        (json!({"structured_outputs": {"choice": ["Yes!", "No."]}}), r"^(Yes!|No\.)$"),
        (json!({"structured_outputs": {"regex": "[0-9]{3}-[A-Z]"}}), r"^[0-9]{3}-[A-Z]$"),
        (json!({"guided_regex": "(red|green) [a-z]{1,5}"}), r"^(red|green) [a-z]{1,5}$"),
        (
            json!({"guided_json": r#"{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}"#}),
            r#"^\{\s*"n"\s*:\s*-?[0-9]+\s*\}$"#,
        ),
        (json!({"guided_grammar": "start: \"It is \" WORD \".\"\nWORD: /[a-z]+/"}), r"^It is [a-z]+\.$"),
        // llama.cpp's GBNF, as written for it.
        (
            json!({"structured_outputs": {"grammar": "root ::= \"It is \" [a-z]+ (\".\" | \"!\")"}}),
            r"^It is [a-z]+[.!]$",
        ),
        (json!({"structured_outputs": {"json_object": true}}), r"^\{[\s\S]*\}$"),
    ] {
        let (status, v) = s.post_json("/v1/chat/completions", &ask(extra.clone())).await;
        assert_eq!((status, &v["choices"][0]["finish_reason"]), (200, &json!("stop")), "{extra}: {v}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(regex::Regex::new(check).unwrap().is_match(text), "{extra}: {text:?} against {check}");
    }
    for (extra, param) in [
        (json!({"guided_choice": []}), "guided_choice"),
        (json!({"guided_regex": "a("}), "guided_regex"),
        (json!({"structured_outputs": {"json": "[1]"}}), "structured_outputs.json"),
        (json!({"guided_choice": ["a"], "response_format": {"type": "json_object"}}), "guided_choice"),
        (json!({"structured_outputs": 5}), "structured_outputs"),
        (json!({"structured_outputs": {"structural_tag": "x"}}), "structured_outputs"),
        (json!({"guided_grammar": "root ::= [a-"}), "guided_grammar"),
    ] {
        let (status, v) = s.post_json("/v1/chat/completions", &ask(extra.clone())).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(param)), "{extra}: {v}");
    }

    for bad in [
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}}),
        json!({"type": "json_schema", "json_schema": {"name": "x"}}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}),
        json!({"type": "yaml"}),
    ] {
        let body = json!({"messages": [{"role": "user", "content": "x"}], "response_format": bad});
        let (status, v) = s.post_json("/v1/chat/completions", &body).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some("response_format")), "{bad}: {v}");
    }
}

/// `--chat-template-file`: chats render with the file's template, not the model's -- what
/// /tokenize and a chat's prompt count show against the by-hand rendering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_template_file_replaces_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.jinja");
    std::fs::write(&file, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}").unwrap();
    let s = Server::start(&["--chat-template-file", file.to_str().unwrap()]).await;
    let by_hand = generate("--prompt", "user: Say hi.\nassistant:", 1)["prompt_ids"].clone();
    let messages = json!([{"role": "user", "content": "Say hi."}]);
    let (status, v) = s.post_json("/tokenize", &json!({"messages": messages})).await;
    assert_eq!((status, &v["tokens"]), (200, &by_hand), "{v}");
    let (status, v) = s.post_json("/v1/chat/completions", &json!({"messages": messages, "max_tokens": 2})).await;
    assert_eq!((status, &v["usage"]["prompt_tokens"]), (200, &json!(by_hand.as_array().unwrap().len())), "{v}");
}

/// Completions' `suffix` (fill in the middle): the answer is generate's for the prompt spelled in
/// the model's FIM markers; a FIM end marker the model writes stops it ("stop", nothing shown);
/// `suffix` with `echo` or on the chat endpoint is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suffix_fills_in_the_middle() {
    let s = Server::start(&[]).await;
    let (prefix, suffix) = ("def add(a, b):\n    ", "\n    return c\n");
    let reference = generate("--prompt", &format!("<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"), 8);
    let body = json!({"prompt": prefix, "suffix": suffix, "max_tokens": 8, "temperature": 0});
    let (status, v) = s.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], reference["text"], "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], reference["prompt_ids"].as_array().unwrap().len(), "{v}");

    let fim_pad = 151662; // <|fim_pad|> in Qwen2.5's vocabulary
    let mut forced = body.clone();
    forced["logit_bias"] = json!({fim_pad.to_string(): 100});
    let (status, v) = s.post_json("/v1/completions", &forced).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["choices"][0]["text"].as_str(), v["choices"][0]["finish_reason"].as_str()),
        (Some(""), Some("stop")),
        "{v}"
    );

    let mut echoed = body.clone();
    echoed["echo"] = json!(true);
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "suffix": "x"});
    for (path, bad) in [("/v1/completions", echoed), ("/v1/chat/completions", chat)] {
        let (status, v) = s.post_json(path, &bad).await;
        assert_eq!(status, 400, "{path}: {v}");
    }
}

/// `logit_bias` and `frequency_penalty` (drawn on the host): a bias of -100 on the greedy first
/// token makes another one first, +100 on " dog" makes every token " dog"; a frequency penalty
/// thins out a repeated word; out-of-range values are a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_and_frequency_penalty_change_the_draw() {
    let s = Server::start(&[]).await;
    let prompt = "dog dog dog dog dog dog";
    let reference = generate("--prompt", prompt, 12);
    let first = reference["ids"][0].as_u64().unwrap();
    let dog = reference["prompt_ids"][1].as_u64().unwrap();
    let ask = |extra: Value| {
        let mut body = json!({"prompt": prompt, "temperature": 0, "max_tokens": 12});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let text = |v: &Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let (status, plain) = s.post_json("/v1/completions", &ask(json!({}))).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(text(&plain), reference["text"].as_str().unwrap(), "no bias or penalty: generate's answer");

    let (status, v) =
        s.post_json("/v1/completions", &ask(json!({"logit_bias": {first.to_string(): -100}, "max_tokens": 1}))).await;
    assert_eq!(status, 200, "{v}");
    assert!(!text(&plain).starts_with(&text(&v)), "{v}");
    let (status, v) =
        s.post_json("/v1/completions", &ask(json!({"logit_bias": {dog.to_string(): 100}, "max_tokens": 3}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(text(&v), " dog dog dog", "{v}");

    let (status, v) = s.post_json("/v1/completions", &ask(json!({"frequency_penalty": 2.0}))).await;
    assert_eq!(status, 200, "{v}");
    let dogs = |t: &str| t.matches("dog").count();
    assert!(dogs(&text(&v)) < dogs(&text(&plain)), "{:?} vs {:?}", text(&v), text(&plain));

    for (bad, param) in [
        (json!({"frequency_penalty": 3}), "frequency_penalty"),
        (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
        (json!({"logit_bias": {"1": 101}}), "logit_bias"),
        (json!({"logit_bias": [1]}), "logit_bias"),
    ] {
        let (status, v) = s.post_json("/v1/completions", &ask(bad.clone())).await;
        assert_eq!((status, v["error"]["param"].as_str()), (400, Some(param)), "{bad}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_their_answers_and_a_disconnect_frees_the_engine() {
    let s = Server::start(&[]).await;
    let messages = ["Say hi.", "Name a color."];
    let wants: Vec<String> =
        messages.iter().map(|m| generate("--chat", m, MAX_TOKENS)["text"].as_str().unwrap().to_string()).collect();

    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let message = messages[i % 2];
        tasks.push(tokio::spawn(async move {
            if i % 4 < 2 {
                chat_stream(&s, message).await.0
            } else {
                let (status, v) = s.post_json("/v1/chat/completions", &chat_body(message, false)).await;
                assert_eq!(status, 200, "{v}");
                v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("client task"), wants[i % 2], "client {i}");
    }

    // A long answer whose client goes away after the first piece of text.
    let before = s.metric("qwen_aot_generated_tokens_total").await;
    {
        let client = reqwest::Client::new();
        let body = json!({"messages": [{"role": "user", "content": "Write a very long story about a dragon."}], "max_tokens": 2000, "temperature": 0, "stream": true});
        let mut r = client
            .post(format!("{}/v1/chat/completions", s.base))
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let mut seen = String::new();
        while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 3 {
            let chunk = r.chunk().await.expect("chunk").expect("more of the stream");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    } // response and client dropped: the connection closes
    let started = Instant::now();
    let (status, v) = s.post_json("/v1/chat/completions", &chat_body(messages[0], false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], wants[0]);
    // Uncancelled, the story would take minutes on the CPU and thousands of tokens.
    let generated = s.metric("qwen_aot_generated_tokens_total").await - before;
    assert!(
        generated < 200.0,
        "the abandoned stream went on: {generated} tokens, next answer after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculative_decoding_serves_the_plain_answer_and_counts_its_drafts() {
    // The reference case whose answer repeats itself ("Paris is located in ..." twice).
    let prompt = "The capital of France is";
    let reference = generate_with("--prompt", prompt, 48, &["--draft-max", "0"]);
    assert_eq!((reference["draft_tokens"].as_u64(), reference["accepted_draft_tokens"].as_u64()), (Some(0), Some(0)));
    let s = Server::start(&["--draft-max", "8"]).await;
    let body = json!({"prompt": prompt, "max_tokens": 48, "temperature": 0});
    let (status, v) = s.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], reference["text"], "{v}");
    let (drafted, accepted) =
        (s.metric("qwen_aot_draft_tokens_total").await, s.metric("qwen_aot_accepted_draft_tokens_total").await);
    assert!(accepted > 0.0 && accepted <= drafted, "{accepted} of {drafted} drafts accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_style_4xx_and_the_server_stays_up() {
    const KEY: &str = "sesame";
    let s =
        Server::start(&["--api-key", KEY, "--ctx-size", "128", "--max-queue", "1", "--max-body-bytes", "65536"]).await;
    let user = |content: &str| json!([{"role": "user", "content": content}]);
    let long = "word ".repeat(400);
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400, None),
        ("not an object", b"[1, 2]".to_vec(), 400, None),
        ("empty body", Vec::new(), 400, None),
        ("messages of the wrong type", json!({"messages": "hi"}).to_string().into_bytes(), 400, Some("messages")),
        (
            "content of the wrong type",
            json!({"messages": [{"role": "user", "content": 5}]}).to_string().into_bytes(),
            400,
            Some("messages[0].content"),
        ),
        (
            "temperature of the wrong type",
            json!({"messages": user("hi"), "temperature": "hot"}).to_string().into_bytes(),
            400,
            Some("temperature"),
        ),
        ("missing messages", json!({"max_tokens": 4}).to_string().into_bytes(), 400, Some("messages")),
        ("empty messages", json!({"messages": []}).to_string().into_bytes(), 400, Some("messages")),
        (
            "unknown role",
            json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string().into_bytes(),
            400,
            Some("messages[0].role"),
        ),
        (
            "prompt longer than the context",
            json!({"messages": user(&long)}).to_string().into_bytes(),
            400,
            Some("messages"),
        ),
        (
            "max_tokens 0",
            json!({"messages": user("hi"), "max_tokens": 0}).to_string().into_bytes(),
            400,
            Some("max_tokens"),
        ),
        (
            "max_tokens negative",
            json!({"messages": user("hi"), "max_tokens": -5}).to_string().into_bytes(),
            400,
            Some("max_tokens"),
        ),
        (
            "max_tokens beyond the context",
            json!({"messages": user("hi"), "max_completion_tokens": 100000}).to_string().into_bytes(),
            400,
            Some("max_completion_tokens"),
        ),
        ("n = 17", json!({"messages": user("hi"), "n": 17}).to_string().into_bytes(), 400, Some("n")),
        ("n = 0", json!({"messages": user("hi"), "n": 0}).to_string().into_bytes(), 400, Some("n")),
        (
            "top_p out of range",
            json!({"messages": user("hi"), "top_p": 1.5}).to_string().into_bytes(),
            400,
            Some("top_p"),
        ),
        (
            "frequency_penalty out of range",
            json!({"messages": user("hi"), "frequency_penalty": -2.5}).to_string().into_bytes(),
            400,
            Some("frequency_penalty"),
        ),
        (
            "chat logprobs as a count",
            json!({"messages": user("hi"), "logprobs": 2}).to_string().into_bytes(),
            400,
            Some("logprobs"),
        ),
        ("invalid UTF-8", b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(), 400, None),
        (
            "body over the limit",
            format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "x".repeat(70_000)).into_bytes(),
            413,
            None,
        ),
    ];
    for (what, body, status, param) in cases {
        let r = s.post("/v1/chat/completions").bearer_auth(KEY).body(body).send().await.expect(what);
        assert_eq!(r.status().as_u16(), status, "{what}");
        let v: Value =
            serde_json::from_str(&r.text().await.unwrap()).unwrap_or_else(|e| panic!("{what}: JSON error body ({e})"));
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(), "{what}: {v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{what}: {v}");
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{what}: {v}");
        }
    }
    let ok = json!({"messages": user("hi"), "max_tokens": 1}).to_string();
    for (what, key) in [("wrong API key", Some("nope")), ("no API key", None)] {
        let mut req = s.post("/v1/chat/completions").body(ok.clone());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(
            serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["error"]["code"],
            "invalid_api_key"
        );
    }
    let r = s.http.get(format!("{}/v1/nothing", s.base)).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // A full queue (one running, one waiting) answers 503 with Retry-After at once.
    let long_answer =
        json!({"messages": user("Count from 1 to 100."), "max_tokens": 80, "temperature": 0, "stream": true})
            .to_string();
    let sends = (0..4).map(|_| s.post("/v1/chat/completions").bearer_auth(KEY).body(long_answer.clone()).send());
    let responses: Vec<reqwest::Response> =
        futures_util::future::join_all(sends).await.into_iter().map(|r| r.expect("request")).collect();
    let busy: Vec<&reqwest::Response> = responses.iter().filter(|r| r.status() == 503).collect();
    assert!(busy.len() >= 2, "statuses {:?}", responses.iter().map(|r| r.status()).collect::<Vec<_>>());
    assert!(busy.iter().all(|r| r.headers().contains_key("retry-after")));
    drop(responses);

    let r = s.http.get(format!("{}/health", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "health after all the bad input");
    // The abandoned streams end at their next token; until the engine has reached the
    // queued one, the queue is still full and the server says so (503): retry, as a client would.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = s.post("/v1/chat/completions").bearer_auth(KEY).body(ok.clone()).send().await.unwrap();
        let (status, v) = (r.status(), r.text().await.unwrap());
        if status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "{v}");
        break;
    }
}

/// SIGTERM while a stream is running: the stream still ends with its last chunk and `[DONE]`,
/// and the server exits 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_stream_in_flight_and_exits_0() {
    let mut s = Server::start(&[]).await;
    let body = json!({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 12, "temperature": 0, "stream": true});
    let mut r = s.post("/v1/chat/completions").body(body.to_string()).send().await.expect("request");
    let mut seen = String::from_utf8_lossy(&r.chunk().await.expect("chunk").expect("first chunk")).into_owned();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    while let Some(chunk) = r.chunk().await.expect("the stream continues") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (_, finish, _) = streamed_text(&seen);
    assert!(finish == "length" || finish == "stop", "{seen}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = s.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
