//! A streamed answer as server-sent events: `data: {chunk}` per piece of text, a closing chunk
//! with the finish reason, optionally a usage chunk, then `data: [DONE]`. The stream owns the
//! request's cancel guard, so a client that disconnects (hyper drops the body) cancels its
//! generation at the next token.
use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::ResponseHead;
use super::engine::Event;
use super::errors::ApiError;
use super::CancelOnDrop;

struct State {
    rx: UnboundedReceiver<Event>,
    head: ResponseHead,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    finished: bool,
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
            Some(Event::Text(t)) => self.pending.push_back(data(&self.head.chunk(&t, None))),
            Some(Event::Done { usage, finish_reason }) => {
                self.pending.push_back(data(&self.head.chunk("", Some(finish_reason))));
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
) -> Response {
    let pending: VecDeque<SseEvent> = head.role_chunk().iter().map(data).collect();
    let state = State { rx, head, include_usage, pending, finished: false, _guard: guard };
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
