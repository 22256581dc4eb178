//! `/metrics` in the Prometheus text format: request counts by endpoint and status, prompt
//! (prefilled and cache-reused) and generated tokens, speculative drafts (guessed and confirmed), time to first token and time per output
//! token, the decode loops' time and its part in the decode steps, queue depth and KV cache use.
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<Vec<(String, String)>, Counter>,
    pub prompt_tokens: Counter,
    pub cached_prompt_tokens: Counter,
    pub generated_tokens: Counter,
    /// Speculative decoding: tokens guessed, and how many of them the model confirmed.
    pub draft_tokens: Counter,
    pub accepted_draft_tokens: Counter,
    pub rejected_queue_full: Counter,
    /// From the request entering the queue to its first token.
    pub ttft: Histogram,
    /// Mean decode time per token after the first, one observation per request.
    pub time_per_output_token: Histogram,
    /// The decode loops' time, and the part of it spent in the steps (launch to token back):
    /// the difference is the host's work per token.
    pub decode_seconds: Counter<f64, AtomicU64>,
    pub decode_step_seconds: Counter<f64, AtomicU64>,
    pub queue_depth: Gauge,
    pub kv_cache_used: Gauge,
    pub kv_cache_capacity: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("qwen_aot");
        let m = Metrics {
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            cached_prompt_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            draft_tokens: Counter::default(),
            accepted_draft_tokens: Counter::default(),
            rejected_queue_full: Counter::default(),
            // 1 ms .. ~33 s
            ttft: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 0.1 ms .. ~0.4 s: a GPU token is well under 1 ms, a CPU one tens of ms.
            time_per_output_token: Histogram::new(exponential_buckets(0.0001, 2.0, 13)),
            decode_seconds: Counter::default(),
            decode_step_seconds: Counter::default(),
            queue_depth: Gauge::default(),
            kv_cache_used: Gauge::default(),
            kv_cache_capacity: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests by endpoint and status", m.requests.clone());
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished generations (cached ones included)",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "cached_prompt_tokens",
            "Prompt tokens reused from the KV cache instead of prefilled",
            m.cached_prompt_tokens.clone(),
        );
        registry.register("generated_tokens", "Generated tokens", m.generated_tokens.clone());
        registry.register("draft_tokens", "Tokens guessed by speculative decoding and checked", m.draft_tokens.clone());
        registry.register(
            "accepted_draft_tokens",
            "Guessed tokens the model confirmed (each saved a decode step)",
            m.accepted_draft_tokens.clone(),
        );
        registry.register(
            "rejected_queue_full",
            "Requests refused with 503 because the queue was full",
            m.rejected_queue_full.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Queue wait plus prefill until the first token",
            m.ttft.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Mean decode time per token of a request",
            m.time_per_output_token.clone(),
        );
        registry.register(
            "decode_seconds",
            "Time from each answer's first token to its last",
            m.decode_seconds.clone(),
        );
        registry.register(
            "decode_step_seconds",
            "Of decode_seconds, the time in the decode steps (launch to token back); the rest is the host's work per token",
            m.decode_step_seconds.clone(),
        );
        registry.register("queue_depth", "Requests waiting for the engine", m.queue_depth.clone());
        registry.register("kv_cache_used_tokens", "Tokens held in the KV cache", m.kv_cache_used.clone());
        registry.register("kv_cache_capacity_tokens", "Size of the KV cache in tokens", m.kv_cache_capacity.clone());
        Metrics { registry, ..m }
    }

    pub fn count_request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("endpoint".to_string(), endpoint.to_string()),
                ("status".to_string(), status.to_string()),
            ])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
