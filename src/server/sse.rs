//! A streamed answer as server-sent events: `data: {chunk}` per piece of text (each chunk names
//! its choice by `index`; with `n` > 1 the choices come one after another), a closing chunk per
//! choice with its finish reason, optionally a usage chunk, then `data: [DONE]`. The stream owns
//! the request's cancel guard, so a client that disconnects (hyper drops the body) cancels its
//! generation at the next token.
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use qwen_aot_runtime::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{Echo, ResponseHead};
use super::engine::Event;
use super::errors::ApiError;
use super::logprobs::{logprobs_json, TextOffsets};
use super::routes::Answer;
use super::tool_calls::{CallFilter, Finished};
use super::CancelOnDrop;
use crate::logprobs::TokenLogprob;

/// What a choice's stream holds between chunks.
#[derive(Default)]
struct Choice {
    /// With `logprobs`: the tokens generated since the choice's last chunk (sent with its next
    /// text), and their `text_offset`s (completions) in the text sent so far.
    tokens: Vec<TokenLogprob>,
    offsets: TextOffsets,
    /// Characters of the choice's text sent so far (what `text_offset`s may point into).
    sent: usize,
    /// With tools: the text held while it may be a call.
    calls: CallFilter,
}

struct State {
    rx: UnboundedReceiver<Event>,
    head: ResponseHead,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    finished: bool,
    /// With `logprobs`: the tokenizer that names the tokens.
    logprobs: Option<Arc<Tokenizer>>,
    /// Completions' `echo` with `logprobs`, until the scored prompt arrives.
    echo: Option<Echo>,
    /// Chat with tools: the functions an answer may call.
    tools: Vec<String>,
    choices: Vec<Choice>,
    _guard: CancelOnDrop,
}

fn data(v: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl State {
    /// Turns the next engine event into SSE events; false when there is nothing more.
    async fn fill(&mut self) -> bool {
        if self.finished {
            return false;
        }
        match self.rx.recv().await {
            Some(Event::Text(i, t)) => {
                let t = if self.tools.is_empty() { t } else { self.choices[i].calls.push(&t) };
                self.text(i, &t);
            }
            Some(Event::Token(i, t)) => self.choices[i].tokens.push(t),
            // `echo` with `logprobs`: each choice's prompt chunk, once its tokens are scored.
            Some(Event::PromptLogprobs(scored)) => {
                if let (Some(tok), Some(echo)) = (self.logprobs.clone(), self.echo.take()) {
                    let chars = echo.text.chars().count();
                    let mut offsets = TextOffsets::new(0, chars).with_prompt(1 + scored.len(), chars);
                    let lp = logprobs_json(self.head.endpoint, &tok, Some(echo.first), &scored, &mut offsets);
                    for (i, c) in self.choices.iter_mut().enumerate() {
                        (c.offsets, c.sent) = (offsets.clone(), chars);
                        self.pending.push_back(data(&self.head.chunk(i, &echo.text, None, Some(lp.clone()))));
                    }
                }
            }
            Some(Event::Finished { choice, mut finish_reason }) => {
                // With tools: what was held back goes out as text, or as the answer's calls.
                if !self.tools.is_empty() {
                    let (rest, calls) = match std::mem::take(&mut self.choices[choice].calls).finish(&self.tools) {
                        Finished::Text(rest) => (rest, Vec::new()),
                        Finished::Calls { content, calls } => (content, calls),
                    };
                    self.text(choice, &rest);
                    if !calls.is_empty() {
                        self.pending.push_back(data(&self.head.tool_calls_chunk(choice, &calls)));
                        finish_reason = "tool_calls";
                    }
                }
                // Tokens whose text never came (held back by a stop string): a chunk of their own.
                if !self.choices[choice].tokens.is_empty() {
                    let lp = self.take_logprobs(choice);
                    self.pending.push_back(data(&self.head.chunk(choice, "", None, lp)));
                }
                self.pending.push_back(data(&self.head.chunk(choice, "", Some(finish_reason), None)));
            }
            Some(Event::Done { usage }) => {
                if self.include_usage {
                    self.pending.push_back(data(&self.head.usage_chunk(usage)));
                }
                self.close();
            }
            Some(Event::Failed(e)) => self.fail(e),
            None => self.fail(ApiError::internal("the engine stopped")),
        }
        true
    }

    /// The stream's error event (its headers said 200 already), then its end; a server error is
    /// logged too, as `routes::count_requests` logs a 500.
    fn fail(&mut self, e: ApiError) {
        if e.status.is_server_error() {
            eprintln!("qwen-aot serve: stream {} failed: {}", self.head.id, e.message);
        }
        self.pending.push_back(data(&e.body()));
        self.close();
    }

    /// A chunk of choice `i`'s text (none for empty text), with its tokens since the last one.
    fn text(&mut self, i: usize, t: &str) {
        if !t.is_empty() {
            self.choices[i].sent += t.chars().count();
            let lp = self.take_logprobs(i);
            self.pending.push_back(data(&self.head.chunk(i, t, None, lp)));
        }
    }

    /// The log-probabilities of choice `i`'s tokens since its last chunk, for the next one.
    fn take_logprobs(&mut self, i: usize) -> Option<serde_json::Value> {
        let tok = self.logprobs.as_deref()?;
        let c = &mut self.choices[i];
        let tokens = std::mem::take(&mut c.tokens);
        c.offsets.limit = c.sent;
        Some(logprobs_json(self.head.endpoint, tok, None, &tokens, &mut c.offsets))
    }

    fn close(&mut self) {
        self.pending.push_back(SseEvent::default().data("[DONE]"));
        self.finished = true;
    }
}

pub fn response(
    head: ResponseHead,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    include_usage: bool,
    answer: Answer,
) -> Response {
    let Answer { choices: n, logprobs, echo, tools } = answer;
    let mut pending: VecDeque<SseEvent> = (0..n).filter_map(|i| head.role_chunk(i)).map(|c| data(&c)).collect();
    // `echo` without `logprobs`: the prompt is each choice's first chunk at once (with them it
    // waits for its scores: Event::PromptLogprobs).
    let echo = match (echo, &logprobs) {
        (Some(e), None) => {
            pending.extend((0..n).map(|i| data(&head.chunk(i, &e.text, None, None))));
            None
        }
        (e, _) => e,
    };
    let state = State {
        rx,
        head,
        include_usage,
        pending,
        finished: false,
        logprobs,
        echo,
        tools,
        choices: (0..n).map(|_| Choice::default()).collect(),
        _guard: guard,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            if !st.fill().await {
                return None;
            }
        }
    });
    Sse::new(stream).into_response()
}
