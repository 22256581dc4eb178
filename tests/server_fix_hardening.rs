//! `qwen-aot serve` against clients that misbehave or push its limits, end to end (the real
//! binary, the CPU backend, the default model): connections that send part of a request are
//! closed within `--read-timeout` and never hold up a stop; open connections stay under
//! `--max-connections`; a batch completion is admitted or refused whole; and values that used to
//! reach the engine (and come back as 500s) are 400s naming their parameter.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::ServeProcess as Server;
use serde_json::{json, Value};

impl Server {
    /// POSTs `body` as it is; the status and the body parsed as JSON.
    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body ({e}): {text}")))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// A raw connection that has sent `bytes`.
    fn raw(&self, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.write_all(bytes).expect("send");
        s
    }

    /// A raw connection that has sent one whole `/v1/completions` request with `body` (written on
    /// a blocking thread: a large body is taken only as fast as the server reads it).
    async fn send_completion(&self, body: Vec<u8>) -> TcpStream {
        let mut request = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let addr = self.addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = TcpStream::connect(&addr).expect("connect");
            c.write_all(&request).expect("the whole request is taken");
            c
        })
        .await
        .unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    /// Waits for the server to exit; its status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "the server did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads `s` until the server closes it (or `limit` passes: a failure); what came, and when
/// after `since`.
fn read_until_closed(mut s: TcpStream, since: Instant, limit: Duration) -> (String, Duration) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        // A reset after the server's answer is a close too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept the connection open past {limit:?} ({e}); got {got:?}"),
    }
    (String::from_utf8_lossy(&got).into_owned(), since.elapsed())
}

/// The JSON body of a raw HTTP response.
fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_else(|| panic!("no body in {response:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {response:?}"))
}

#[cfg(target_os = "linux")]
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd").count()
}

/// Headers that never end, a connection that sends nothing, a body shorter than its
/// Content-Length: each is closed within `--read-timeout` (the body with a 408 in OpenAI's
/// shape); a flood of idle connections stays within `--max-connections` and /health answers once
/// the timeout has freed their places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_within_the_read_timeout() {
    let s = Server::start(&["--read-timeout", "2", "--max-connections", "8"]).await;
    let limit = Duration::from_secs(20);
    let opened = Instant::now();
    let headers = s.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n");
    let idle = s.raw(b"");
    let body = s.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"");
    let (headers, idle, body) = tokio::task::spawn_blocking(move || {
        let read = |s| read_until_closed(s, opened, limit);
        (read(headers), read(idle), read(body))
    })
    .await
    .unwrap();
    for (what, (got, took)) in [("partial headers", &headers), ("no bytes", &idle)] {
        assert!(got.is_empty(), "{what}: {got:?}");
        assert!(
            *took >= Duration::from_millis(1500) && *took < Duration::from_secs(10),
            "{what}: closed after {took:?}"
        );
    }
    let (got, took) = body;
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(10), "partial body: {took:?}");
    let e = &json_body(&got)["error"];
    assert_eq!(e["code"], "request_timeout", "{got}");
    assert_eq!(e["message"], "the request body did not arrive within 2 s");

    // 24 idle connections against a cap of 8: the server holds at most 8 of them (the rest wait
    // to be accepted, in order), and answers /health once the timeout has closed them all.
    #[cfg(target_os = "linux")]
    let before = open_fds(s.child.id());
    let flood: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(&s.addr).expect("connect")).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    #[cfg(target_os = "linux")]
    {
        let during = open_fds(s.child.id());
        assert!(during <= before + 8, "{before} descriptors before the flood, {during} during it");
    }
    let t = Instant::now();
    let r = s.http.get(format!("{}/health", s.base)).timeout(Duration::from_secs(30)).send().await.expect("health");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(15), "health took {:?}", t.elapsed());
    drop(flood);
}

/// SIGTERM while a stream runs and two clients have sent half a request each (the default 30 s
/// read timeout): the stream still ends with `[DONE]`, the half-sent body is answered 503 at
/// once, and the server exits 0 long before the read timeout would have closed them.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_half_sent_requests() {
    let mut s = Server::start(&[]).await;
    let body = s.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"prompt\"");
    let headers = s.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n");
    let stream = json!({"prompt": "def fibonacci(n):", "max_tokens": 64, "temperature": 0, "stream": true});
    let mut r = s
        .http
        .post(format!("{}/v1/completions", s.base))
        .header("content-type", "application/json")
        .body(stream.to_string())
        .send()
        .await
        .expect("stream");
    let mut seen = String::from_utf8_lossy(&r.chunk().await.expect("chunk").expect("first chunk")).into_owned();
    let stopped = Instant::now();
    s.signal(libc::SIGTERM);
    let limit = Duration::from_secs(20);
    let waiters = tokio::task::spawn_blocking(move || {
        (read_until_closed(body, stopped, limit), read_until_closed(headers, stopped, limit))
    });
    while let Some(chunk) = r.chunk().await.expect("the stream goes on") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.trim_end().ends_with("data: [DONE]"), "{seen}");
    assert!(seen.contains("\"finish_reason\":\"length\"") || seen.contains("\"finish_reason\":\"stop\""), "{seen}");
    let ((body_answer, body_took), (headers_answer, _)) = waiters.await.unwrap();
    assert!(body_answer.starts_with("HTTP/1.1 503"), "{body_answer:?}");
    assert_eq!(json_body(&body_answer)["error"]["message"], "the server is stopping");
    assert!(body_took < Duration::from_secs(2), "the half-sent body was answered after {body_took:?}");
    assert!(headers_answer.is_empty(), "{headers_answer:?}");
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(stopped.elapsed() < Duration::from_secs(20), "the stop took {:?}", stopped.elapsed());
}

/// A request whose body was sent whole just before the stop is answered, not refused with a 503:
/// hyper hands a large body over in chunks, and the stop used to win between two of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_whole_before_a_stop_is_answered() {
    // 12 MB: more than the kernel buffers for a connection nobody reads (a 4 MB send buffer at
    // most, the receive window at its 128 KB start), so the write below returns only once the
    // server has accepted the connection and its handler is reading the body, and the stop lands
    // with part of it still unread. (A 3 MB body could sit whole in those buffers before the
    // server accepted the connection: the stop then closed it unanswered, as it should a
    // connection with no request begun -- one CI run of the thirty-sixth session.)
    let mut s = Server::start(&["--max-body-bytes", "16777216"]).await;
    // Too long for the context: the answer is a 400 saying so, after the whole body was read.
    let body = json!({"prompt": "ab ".repeat(4_000_000), "max_tokens": 1}).to_string();
    let sent = s.send_completion(body.into_bytes()).await;
    let stopped = Instant::now();
    s.signal(libc::SIGTERM);
    let (answer, _) =
        tokio::task::spawn_blocking(move || read_until_closed(sent, stopped, Duration::from_secs(60))).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{:?}", &answer[..answer.len().min(300)]);
    assert!(json_body(&answer)["error"]["message"].as_str().unwrap().contains("context"), "{answer}");
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

/// With one place in the queue and clients filling it the moment it frees, a batch of four
/// prompts that was admitted is answered whole: its prompts queue together, so a later one
/// never meets a full queue (it used to, and the finished answers were lost to a 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_batch_is_answered_whole_while_the_queue_is_full() {
    let s = Arc::new(Server::start(&["--max-queue", "1"]).await);
    for attempt in 0..2 {
        let batch =
            json!({"prompt": ["Story A:", "Story B:", "Story C:", "Story D:"], "max_tokens": 12, "temperature": 0});
        let sb = s.clone();
        let batch = tokio::spawn(async move { sb.post("/v1/completions", &batch).await });
        // Admitted into the empty queue before the fillers come.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let fillers: Vec<_> = (0..6)
            .map(|i| {
                let (s, stop, busy) = (s.clone(), stop.clone(), busy.clone());
                tokio::spawn(async move {
                    let one = json!({"prompt": format!("Tale {i}:"), "max_tokens": 3, "temperature": 0});
                    while !stop.load(Ordering::Relaxed) {
                        if s.post("/v1/completions", &one).await.0 == 503 {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let (status, v) = batch.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        for f in fillers {
            f.await.unwrap();
        }
        assert_eq!(status, 200, "attempt {attempt}: {v}");
        let choices = v["choices"].as_array().expect("choices");
        let indices: Vec<u64> = choices.iter().map(|c| c["index"].as_u64().unwrap()).collect();
        assert_eq!(indices, [0, 1, 2, 3], "{v}");
        assert!(choices.iter().all(|c| !c["text"].as_str().unwrap().is_empty()), "{v}");
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 4, "{v}");
        assert!(busy.load(Ordering::Relaxed) > 0, "the queue was never full while the batch ran");
    }
}

/// Text offsets of `logprobs` (completions) index the returned text: within it, in order, and
/// each whole token's text where its offset says; the prompt's emoji come back split over
/// tokens that hold part of a character.
fn check_offsets(text: &str, tokens: &[Value], offsets: &[Value]) {
    let chars: Vec<char> = text.chars().collect();
    assert_eq!(tokens.len(), offsets.len());
    let offsets: Vec<usize> = offsets.iter().map(|o| o.as_u64().unwrap() as usize).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(offsets.iter().all(|&o| o < chars.len()), "offsets {offsets:?} past a text of {} characters", chars.len());
    let mut split = 0;
    for (t, &o) in tokens.iter().zip(&offsets) {
        let t = t.as_str().unwrap();
        if t.contains('\u{FFFD}') {
            split += 1;
            continue;
        }
        let at: String = chars[o..].iter().take(t.chars().count()).collect();
        assert_eq!(at, t, "token {t:?} at {o} in {text:?} ({offsets:?})");
    }
    assert!(split > 0, "no token held part of a character: the case is not exercised ({tokens:?})");
}

/// Values the engine could not take, bodies that are not one JSON object, a bad path, a grammar
/// that fails mid-answer, an oversized constraint: each a 400 in OpenAI's shape naming what is
/// wrong. Log-probability offsets stay within the text when characters split across tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400s_and_offsets_index_the_text() {
    let s = Server::start(&[]).await;
    let cmpl = |extra: Value| {
        let mut b = json!({"prompt": "Hello", "max_tokens": 2});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    // f64 values that do not survive narrowing to the sampler's f32.
    for (field, value, param) in [
        ("top_p", "1e-300", "top_p"),
        ("repetition_penalty", "1e300", "repetition_penalty"),
        ("repetition_penalty", "1e-300", "repetition_penalty"),
    ] {
        let body = format!(r#"{{"prompt": "Hello", "max_tokens": 2, "{field}": {value}}}"#);
        let (status, v) = s.post_raw("/v1/completions", body).await;
        assert_eq!(status, 400, "{field} {value}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("32-bit float"), "{v}");
    }
    // Exactly one JSON object per body.
    for (what, body, message) in [
        ("trailing garbage", r#"{"prompt": "Hello", "max_tokens": 2} }}}garbage"#, "more after its JSON object"),
        ("two objects", r#"{"prompt": "Hello", "max_tokens": 2}{"x": 1}"#, "more after its JSON object"),
        ("an array", r#"["Hello", null, null, 2]"#, "must be a JSON object, got an array"),
    ] {
        let (status, v) = s.post_raw("/v1/completions", body).await;
        assert_eq!(status, 400, "{what}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(message), "{what}: {v}");
    }
    let (status, v) = s.post_raw("/v1/completions", "{\"prompt\": \"Hello\", \"max_tokens\": 1}\n  ").await;
    assert_eq!(status, 200, "trailing whitespace is fine: {v}");
    // A model id that is not UTF-8.
    let r = s.http.get(format!("{}/v1/models/%ff", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).expect("JSON error");
    assert_eq!(v["error"]["param"], "model", "{v}");
    // A negative token id is out of range, as one past the vocabulary is.
    let (status, v) = s.post("/detokenize", &json!({"tokens": [-1]})).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().starts_with("token id -1 is not in 0.."), "{v}");

    // A grammar that compiles but exceeds llguidance's limits on the first token: the client's
    // error, in one line, streamed or not.
    let grammar = format!("start: {}", (0..3000).map(|i| format!("\"w{i}\"")).collect::<Vec<_>>().join(" | "));
    let (status, v) = s.post("/v1/completions", &cmpl(json!({"max_tokens": 4, "guided_grammar": grammar}))).await;
    assert_eq!(status, 400, "{v}");
    let e = &v["error"];
    assert_eq!((e["type"].as_str(), e["param"].as_str()), (Some("invalid_request_error"), Some("guided_grammar")));
    let m = e["message"].as_str().unwrap();
    assert!(m.starts_with("constrained decoding by `guided_grammar` stopped: ") && m.contains("max is 2000"), "{m}");
    assert!(!m.contains('\n') && !m.contains("<state>"), "{m:?}");
    let r = s
        .http
        .post(format!("{}/v1/completions", s.base))
        .body(cmpl(json!({"max_tokens": 4, "guided_grammar": grammar, "stream": true})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a stream's headers go out before the first token");
    let text = r.text().await.unwrap();
    let events: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    let error = events.iter().find_map(|e| e.get("error")).unwrap_or_else(|| panic!("no error event: {text}"));
    assert_eq!(error, e, "the streamed error is the one a non-streamed request gets");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Constraint sources are bounded: 1024 choices of 3 KB are refused, 64 KB of them are not.
    let big: Vec<String> = (0..1024).map(|i| format!("opt{i} {}", "x".repeat(3000))).collect();
    let (status, v) = s.post("/v1/completions", &cmpl(json!({"guided_choice": big}))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "guided_choice");
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 65536 bytes"), "{v}");
    let fits: Vec<String> = (0..20).map(|i| format!("opt{i} {}", "x".repeat(3200))).collect();
    let (status, v) = s.post("/v1/completions", &cmpl(json!({"guided_choice": fits, "max_tokens": 3}))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["text"].as_str().unwrap().starts_with("opt"), "{v}");

    // text_offset with characters split across tokens, not streamed and streamed.
    let body = json!({"prompt": "Emoji list: 🙂😀", "max_tokens": 12, "temperature": 0, "logprobs": 0, "echo": true});
    let (status, v) = s.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let c = &v["choices"][0];
    let lp = &c["logprobs"];
    check_offsets(c["text"].as_str().unwrap(), lp["tokens"].as_array().unwrap(), lp["text_offset"].as_array().unwrap());
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = s.http.post(format!("{}/v1/completions", s.base)).body(streamed.to_string()).send().await.unwrap();
    let sse = r.text().await.unwrap();
    let (mut text, mut tokens, mut offsets) = (String::new(), Vec::new(), Vec::new());
    for d in sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        let c = &v["choices"][0];
        text.push_str(c["text"].as_str().unwrap_or_default());
        if let Some(lp) = c["logprobs"].as_object() {
            tokens.extend(lp["tokens"].as_array().unwrap().iter().cloned());
            offsets.extend(lp["text_offset"].as_array().unwrap().iter().cloned());
        }
    }
    assert_eq!(text, c["text"], "streamed and not, the same greedy text");
    check_offsets(&text, &tokens, &offsets);
    assert_eq!(offsets, *lp["text_offset"].as_array().unwrap(), "streamed and not, the same offsets");

    // A body over --max-body-bytes (4 MiB) is read to its end before its 413, which closes the
    // connection: the client's send completes and the answer reaches it (answered unread, the
    // send failed or the close reset the connection, and a pooled client's next request on it
    // failed).
    let big = vec![b'x'; (4 << 20) + 100_000];
    let sent = s.send_completion(big).await;
    let (answer, _) =
        tokio::task::spawn_blocking(move || read_until_closed(sent, Instant::now(), Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer:?}");
    assert_eq!(json_body(&answer)["error"]["code"], "request_too_large");
}
