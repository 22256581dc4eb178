//! A streamed answer as server-sent events: `data: {chunk}` per piece of text, a closing chunk
//! with the finish reason, optionally a usage chunk, then `data: [DONE]`. The stream owns the
//! request's cancel guard, so a client that disconnects (hyper drops the body) cancels its
//! generation at the next token.
use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc::UnboundedReceiver;

use std::sync::Arc;

use qwen_aot_runtime::tokenizer::Tokenizer;

use super::api::{Echo, ResponseHead};
use super::engine::Event;
use super::errors::ApiError;
use super::logprobs::{chars_of, logprobs_json};
use super::routes::Answer;
use super::tool_calls::{CallFilter, Finished};
use super::CancelOnDrop;
use crate::logprobs::TokenLogprob;

struct State {
    rx: UnboundedReceiver<Event>,
    head: ResponseHead,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    finished: bool,
    /// With `logprobs`: the tokenizer that names the tokens, the tokens generated since the last
    /// chunk (sent with the next text), and where the next one's text starts (completions).
    logprobs: Option<Arc<Tokenizer>>,
    tokens: Vec<TokenLogprob>,
    text_offset: usize,
    /// Completions' `echo` with `logprobs`, until the scored prompt arrives.
    echo: Option<Echo>,
    /// Chat with tools: the functions an answer may call, and the text held while it may be a call.
    tools: Vec<String>,
    calls: CallFilter,
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
            Some(Event::Text(t)) => {
                let t = if self.tools.is_empty() { t } else { self.calls.push(&t) };
                if !t.is_empty() {
                    let lp = self.take_logprobs();
                    self.pending.push_back(data(&self.head.chunk(&t, None, lp)));
                }
            }
            Some(Event::Token(t)) => self.tokens.push(t),
            // `echo` with `logprobs`: the prompt's chunk, once its tokens are scored.
            Some(Event::PromptLogprobs(scored)) => {
                if let (Some(tok), Some(echo)) = (self.logprobs.as_deref(), self.echo.take()) {
                    let lp = logprobs_json(self.head.endpoint, tok, Some(echo.first), &scored, 0);
                    self.text_offset = chars_of(tok, std::iter::once(echo.first).chain(scored.iter().map(|t| t.id)));
                    self.pending.push_back(data(&self.head.chunk(&echo.text, None, Some(lp))));
                }
            }
            Some(Event::Done { usage, mut finish_reason }) => {
                // With tools: what was held back goes out as text, or as the answer's calls.
                if !self.tools.is_empty() {
                    let (rest, calls) = match std::mem::take(&mut self.calls).finish(&self.tools) {
                        Finished::Text(rest) => (rest, Vec::new()),
                        Finished::Calls { content, calls } => (content, calls),
                    };
                    if !rest.is_empty() {
                        let lp = self.take_logprobs();
                        self.pending.push_back(data(&self.head.chunk(&rest, None, lp)));
                    }
                    if !calls.is_empty() {
                        self.pending.push_back(data(&self.head.tool_calls_chunk(&calls)));
                        finish_reason = "tool_calls";
                    }
                }
                // Tokens whose text never came (held back by a stop string): a chunk of their own.
                if !self.tokens.is_empty() {
                    let lp = self.take_logprobs();
                    self.pending.push_back(data(&self.head.chunk("", None, lp)));
                }
                self.pending.push_back(data(&self.head.chunk("", Some(finish_reason), None)));
                if self.include_usage {
                    self.pending.push_back(data(&self.head.usage_chunk(usage)));
                }
                self.close();
            }
            Some(Event::Failed(m)) => {
                self.pending.push_back(data(&ApiError::internal(m).body()));
                self.close();
            }
            None => {
                self.pending.push_back(data(&ApiError::internal("the engine stopped").body()));
                self.close();
            }
        }
        true
    }

    /// The log-probabilities of the tokens since the last chunk, for the next one.
    fn take_logprobs(&mut self) -> Option<serde_json::Value> {
        let tok = self.logprobs.as_deref()?;
        let tokens = std::mem::take(&mut self.tokens);
        let v = logprobs_json(self.head.endpoint, tok, None, &tokens, self.text_offset);
        self.text_offset += chars_of(tok, tokens.iter().map(|t| t.id));
        Some(v)
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
    let Answer { logprobs, echo, tools } = answer;
    let mut pending: VecDeque<SseEvent> = head.role_chunk().iter().map(data).collect();
    // `echo` without `logprobs`: the prompt is the first chunk at once (with them it waits for
    // its scores: Event::PromptLogprobs).
    let echo = match (echo, &logprobs) {
        (Some(e), None) => {
            pending.push_back(data(&head.chunk(&e.text, None, None)));
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
        tokens: Vec::new(),
        text_offset: 0,
        echo,
        tools,
        calls: CallFilter::default(),
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
