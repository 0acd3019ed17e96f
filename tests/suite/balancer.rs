//! Scale-out on loopback: two `steno serve` replicas behind HAProxy (Debian's `haproxy`,
//! started by the test), one killed mid-run while uploads and live streams go through the
//! balancer (`tests/clients/lb_check.py` says what is checked).

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{model_dir, root};

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// `steno serve` on `port`, ready (its /health is 200).
fn replica(port: u16) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_steno"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--threads",
            "1",
            "--beam-size",
            "1",
        ])
        .args(["--model-variant", "int8"])
        .env_remove("STENO_API_KEY")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("steno serve starts");
    let replica = Killed(child);
    wait_for(port, "/health", "200 OK");
    replica
}

/// Waits until `GET path` on `port` answers a status line containing `want`.
fn wait_for(port: u16, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 64];
            if let Ok(n) = std::io::Read::read(&mut s, &mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains(want)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:{port}{path} never answered {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replica_dies_behind_haproxy_and_nothing_hangs() {
    model_dir("tiny.en");
    let haproxy = which("haproxy").expect("haproxy is missing: apt-get install haproxy (.ci/run installs it)");
    let python = root().join("tests/clients/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `tests/clients/provision`",
        python.display()
    );
    let (a, b, lb) = (free_port(), free_port(), free_port());
    let survivor = replica(a);
    let victim = replica(b);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haproxy.cfg");
    // leastconn spreads long-lived WebSockets; health checks take a dead replica out within
    // ~1 s; a request whose connection fails is retried on the other replica (redispatch).
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
             timeout tunnel 60s\n  retries 3\n  option redispatch\n  retry-on conn-failure empty-response\n\
             frontend steno\n  bind 127.0.0.1:{lb}\n  default_backend replicas\n\
             backend replicas\n  balance leastconn\n  option httpchk GET /health\n  \
             http-check expect status 200\n  \
             server a 127.0.0.1:{a} check inter 300ms fall 2 rise 1\n  \
             server b 127.0.0.1:{b} check inter 300ms fall 2 rise 1\n"
        ),
    )
    .unwrap();
    let _balancer = Killed(
        Command::new(haproxy)
            .args(["-db", "-f", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts"),
    );
    wait_for(lb, "/health", "200 OK");
    let out = Command::new(&python)
        .arg(root().join("tests/clients/lb_check.py"))
        .args(["--base-url", &format!("http://127.0.0.1:{lb}")])
        .args(["--replica", &format!("http://127.0.0.1:{a}")])
        .args(["--replica", &format!("http://127.0.0.1:{b}")])
        .args(["--kill-pid", &victim.0.id().to_string()])
        .current_dir(root())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lb_check.py failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    drop(survivor);
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
