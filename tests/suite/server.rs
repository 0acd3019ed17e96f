//! `steno serve` against real clients: the official `openai` package, `websockets`, headless
//! Chromium through Playwright, the `wyoming` package's client (scripts in tests/clients/, venv
//! by `tests/clients/provision`),
//! plus limits and access checks over raw sockets. Each test starts its own server on a free
//! loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{model_dir, root};

/// A running `steno serve`; killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    /// Everything the server printed after the listening line (read on a thread).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serve {
    /// Start `steno serve --listen 127.0.0.1:0 <args>` and wait until `/health` is 200.
    fn start(args: &[&str]) -> Serve {
        model_dir("tiny.en");
        let mut child = Command::new(env!("CARGO_BIN_EXE_steno"))
            .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1", "--beam-size", "1"])
            .args(args)
            .env_remove("STENO_API_KEY")
            .env_remove("STENO_LOG")
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("steno serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = stderr.read_line(&mut line).expect("read the server's stderr");
            assert!(n > 0, "steno serve exited before listening");
            if let Some(rest) = line.trim().strip_prefix("steno serve: listening on http://") {
                break rest.parse::<SocketAddr>().expect("listening line has an address");
            }
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let server = Serve { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/health", &[]).0 != 200 {
            assert!(Instant::now() < deadline, "/health never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw HTTP/1.1 request; (status, body).
    fn request(&self, raw: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.write_all(raw).expect("send request");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn get(&self, path: &str, headers: &[&str]) -> (u16, String) {
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        self.request(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").as_bytes())
    }

    /// Run a client check script with the clients' venv; panics with its output on failure.
    fn check(&self, script: &str, args: &[&str]) {
        let python = clients_python();
        let out = Command::new(&python)
            .arg(root().join("tests/clients").join(script))
            .args(["--base-url", &self.base_url()])
            .args(args)
            .current_dir(root())
            .output()
            .expect("python runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
            out.status,
            self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        );
        eprintln!("{stdout}");
        let log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/clients/.venv/bin/python`, which must exist.
fn clients_python() -> PathBuf {
    let python = root().join("tests/clients/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `tests/clients/provision`",
        python.display()
    );
    python
}

#[test]
fn openai_client_transcribes_in_every_format_and_streams() {
    let server = Serve::start(&["--model", "tiny.en"]);
    server.check("openai_check.py", &[]);
}

#[test]
fn openai_realtime_client_transcribes_two_vad_turns_and_a_manual_commit() {
    // With a key: the openai client sends it as `Authorization: Bearer` on the upgrade.
    let server = Serve::start(&["--api-key", "realtime-test-key"]);
    server.check("realtime_check.py", &["--api-key", "realtime-test-key"]);
}

#[test]
fn websockets_client_streams_jfk_at_real_time() {
    let server = Serve::start(&[]);
    server.check("ws_check.py", &["--pace", "1", "--ping-after-end"]);
}

#[test]
fn chromium_page_streams_the_fake_microphone_and_shows_the_final_text() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: run `apt-get install chromium` (see tests/clients/provision)"
    );
    let server = Serve::start(&[]);
    server.check("browser_check.py", &[]);
}

#[test]
fn two_hundred_malformed_or_aborted_requests_leave_the_server_up_with_no_stream_leaked() {
    let server = Serve::start(&["--max-upload-mb", "1", "--idle-timeout-s", "5"]);
    server.check("abuse_check.py", &[]);
}

#[test]
fn api_key_is_required_everywhere_but_health_and_the_page() {
    let server = Serve::start(&["--api-key", "s3cret"]);
    assert_eq!(server.get("/health", &[]).0, 200);
    assert_eq!(server.get("/", &[]).0, 200);
    let (status, body) = server.get("/v1/models", &[]);
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("error is JSON");
    assert_eq!(error["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(server.get("/v1/models", &["Authorization: Bearer wrong"]).0, 401);
    assert_eq!(server.get("/v1/models", &["Authorization: Bearer s3cret"]).0, 200);
    // The WebSocket takes the key as a query parameter too (browsers cannot set headers).
    let upgrade = [
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    assert_eq!(server.get("/v1/stream", &upgrade).0, 401);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET /v1/stream?api_key=s3cret HTTP/1.1\r\nHost: x\r\n{}\r\n\r\n",
        upgrade.join("\r\n")
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[test]
fn upload_over_the_limit_is_413_and_junk_is_400_in_openai_shape() {
    let server = Serve::start(&["--max-upload-mb", "1"]);
    let multipart = |payload: &[u8]| {
        let mut body = Vec::new();
        body.extend_from_slice(b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n");
        body.extend_from_slice(payload);
        body.extend_from_slice(b"\r\n--XX--\r\n");
        let mut raw = format!(
            "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw
    };
    let (status, body) = server.request(&multipart(&vec![0u8; 2 << 20]));
    assert_eq!(status, 413, "{body}");
    let (status, body) = server.request(&multipart(b"not audio at all"));
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("error is JSON");
    assert_eq!(error["error"]["param"], "file", "{body}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    // A real file under the limit still works after both.
    let wav = std::fs::read(root().join("audio-samples/jfk.wav")).unwrap();
    let (status, body) = server.request(&multipart(&wav));
    assert_eq!(status, 200, "{body}");
    assert!(body.to_lowercase().contains("fellow americans"), "{body}");
}

#[test]
fn streams_past_the_limit_are_refused_with_close_1013() {
    let server = Serve::start(&["--max-streams", "1"]);
    let python = clients_python();
    let script = r#"
import asyncio, json, sys, websockets
async def main(url):
    async with websockets.connect(url) as first:
        await first.send(json.dumps({"type": "config", "sample_rate": 16000}))
        assert json.loads(await first.recv())["type"] == "ready"
        async with websockets.connect(url) as second:
            event = json.loads(await second.recv())
            assert event["type"] == "error" and "busy" in event["message"], event
            try:
                await second.recv()
                sys.exit("the refused stream stayed open")
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd.code == 1013, closed.rcvd
        await first.send(json.dumps({"type": "end"}))
        async for _ in first:
            pass
    # The slot is free again.
    async with websockets.connect(url) as third:
        await third.send(json.dumps({"type": "config", "sample_rate": 16000}))
        assert json.loads(await third.recv())["type"] == "ready"
    print("ok: 1013 past --max-streams, slot given back")
asyncio.run(main(sys.argv[1]))
"#;
    let url = format!("ws://{}/v1/stream", server.addr);
    let out = Command::new(python)
        .args(["-c", script, &url])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free loopback port: bound, then let go for the server to take.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

#[test]
fn wyoming_client_describes_transcribes_and_streams_transcript_chunks() {
    let wyoming = format!("127.0.0.1:{}", free_port());
    let server = Serve::start(&["--wyoming", &wyoming]);
    server.check("wyoming_check.py", &["--wyoming", &wyoming]);
}

#[test]
fn wyoming_alone_without_http_answers_describe_once_the_model_is_loaded() {
    model_dir("tiny.en");
    // Nothing to serve is refused at once.
    let out = Command::new(env!("CARGO_BIN_EXE_steno"))
        .args(["serve", "--listen", "none"])
        .output()
        .expect("steno serve runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to serve"));

    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_steno"))
        .args(["serve", "--listen", "none", "--wyoming", &addr, "--threads", "1"])
        .env_remove("STENO_LOG")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("steno serve starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
    // Killed on drop, however the test ends.
    let _server = Serve {
        child,
        addr: addr.parse().unwrap(),
        log: std::sync::Arc::default(),
    };
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read the server's stderr");
    assert_eq!(line.trim(), format!("steno serve: wyoming on tcp://{addr}"));
    // Until the model is loaded, describe gets `error` (model_loading) and a close; then `info`.
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        assert!(Instant::now() < deadline, "describe never got info");
        let stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (&stream).write_all(b"{\"type\":\"describe\"}\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header: serde_json::Value = serde_json::from_str(&header).expect("a JSON header line");
        let mut data = vec![0u8; header["data_length"].as_u64().unwrap() as usize];
        reader.read_exact(&mut data).unwrap();
        let data: serde_json::Value = serde_json::from_slice(&data).unwrap();
        match header["type"].as_str() {
            Some("info") => break data,
            Some("error") => assert_eq!(data["code"], "model_loading", "{data}"),
            other => panic!("describe answered {other:?}: {data}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(info["asr"][0]["supports_transcript_streaming"], true, "{info}");
    assert_eq!(
        info["asr"][0]["models"][0]["languages"],
        serde_json::json!(["en"]),
        "{info}"
    );
}

/// SIGTERM mid-stream: the stream gets its last final and a 1001 close, `/health` says
/// `shutting_down` meanwhile, and the server exits 0 once drained, well within the grace period.
#[test]
fn sigterm_flushes_open_streams_then_exits() {
    let mut server = Serve::start(&["--model", "tiny.en", "--shutdown-grace-s", "10"]);
    let pid = server.child.id().to_string();
    server.check("shutdown_check.py", &["--pid", &pid]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "steno serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    std::thread::sleep(Duration::from_millis(200));
    let log = server
        .log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(log.contains("steno serve: shutting down"), "{log}");
}
