//! A `qwen-aot serve` process for the server tests: the real binary on an ephemeral localhost
//! port, the CPU backend and the default model, healthy before it is handed over and killed when
//! dropped.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct ServeProcess {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub http: reqwest::Client,
}

impl ServeProcess {
    /// Starts `qwen-aot serve` with `extra` arguments and waits until `/health` is 200 (503 while
    /// the model loads; anything else fails the test).
    pub async fn start(extra: &[&str]) -> ServeProcess {
        let model = super::model();
        let mut child = Command::new(env!("CARGO_BIN_EXE_qwen-aot"))
            .args([
                "serve",
                "--model",
                model.to_str().unwrap(),
                "--backend",
                "cpu",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qwen-aot serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining stderr (into the test's output) so that the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                eprintln!("[server] {line}");
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the server prints its address");
        let server = ServeProcess { child, base: format!("http://{addr}"), addr, http: reqwest::Client::new() };
        server.wait_healthy().await;
        server
    }

    /// Polls /health until 200 (the model is loaded).
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(r) = self.http.get(format!("{}/health", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
                assert_eq!(r.status(), 503, "health answers 503 while loading");
            }
            assert!(Instant::now() < deadline, "the server did not become healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
