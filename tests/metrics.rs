//! The metrics listener against real daemons: scraped with curl while work runs, `/readyz`
//! following the only peer's death and return, and hostile HTTP clients (slowloris, too
//! many connections, oversized heads, wrong methods).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// GET with curl (a real HTTP client): status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl (install it: make test does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the sample `name{labels}` (exact series text), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape_until(port: u16, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
    let mut last = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let (code, body) = get(port, "/metrics");
        if code == 200 && cond(&body) {
            return body;
        }
        last = body;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}; last scrape:\n{last}");
}

#[test]
fn metrics_move_while_a_job_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, sock) = with_socket("m1", dir.path());
    // A job that writes, then waits for its stdin to end: it runs as long as the test wants.
    let slow = "[[work.command]]\nname = \"slow\"\nprogram = \"sh\"\nargs = [\"-c\", \"echo started; cat >/dev/null; echo done\"]\n";
    let d = Daemon::start(Spec::new("m1").extra(METRICS).extra(CAT).extra(slow).extra(&control));
    let port = metrics_port(&d);
    let before = scrape_until(port, "a first scrape", |t| t.contains("receptor_build_info{"));
    assert!(before.contains("version=\"0.1.0\""), "{before}");
    assert_eq!(sample(&before, "receptor_work_started_total{kind=\"job\"}"), None, "{before}");

    let mut job = receptor_cmd(&d)
        .args(["work", "submit", "slow", "--node", "m1", "-p", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("receptor work submit");
    let during = scrape_until(port, "the job running", |t| {
        sample(t, "receptor_work_running{kind=\"job\"}") == Some(1.0)
            && sample(t, "receptor_work_output_bytes_total{kind=\"job\"}").is_some_and(|b| b >= 8.0)
    });
    assert_eq!(sample(&during, "receptor_work_started_total{kind=\"job\"}"), Some(1.0), "{during}");
    assert_eq!(sample(&during, "receptor_link_up{peer=\"_client\"}"), Some(1.0), "{during}");
    assert!(sample(&during, "receptor_streams_open").is_some_and(|n| n >= 1.0), "{during}");
    assert!(
        sample(&during, "receptor_link_received_frames_total{peer=\"_client\"}").is_some_and(|n| n > 2.0)
    );
    assert!(sample(&during, "receptor_link_sent_bytes_total{peer=\"_client\"}").is_some_and(|n| n > 0.0));
    drop(job.stdin.take());
    assert!(job.wait().expect("wait").success());

    // Not a receptord peer: counted as a refused handshake, by reason.
    let mut garbage = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let refused = scrape_until(port, "the bad preface counted", |t| {
        sample(t, "receptor_handshakes_refused_total{reason=\"bad_preface\"}") == Some(1.0)
    });
    assert!(refused.contains("receptor_link_established_total{peer=\"_client\"} 1"), "{refused}");

    let after = scrape_until(port, "the job counted as succeeded", |t| {
        sample(t, "receptor_work_finished_total{kind=\"job\",outcome=\"succeeded\"}") == Some(1.0)
    });
    assert_eq!(sample(&after, "receptor_work_running{kind=\"job\"}"), Some(0.0), "{after}");
    assert_eq!(sample(&after, "receptor_work_duration_seconds_count{kind=\"job\"}"), Some(1.0), "{after}");
    assert!(sample(&after, "receptor_work_output_bytes_total{kind=\"job\"}").is_some_and(|b| b >= 13.0));

    // A work unit through the control socket, as receptorctl submits one.
    let out = Command::new(RECEPTOR)
        .args(["--socket"])
        .arg(&sock)
        .args(["work", "submit", "cat", "-l", "hello", "-f"])
        .output()
        .expect("receptor work submit");
    assert!(out.status.success(), "{}", stderr(&out));
    let units = scrape_until(port, "the unit counted", |t| {
        sample(t, "receptor_work_finished_total{kind=\"unit\",outcome=\"succeeded\"}") == Some(1.0)
            && sample(t, "receptor_work_units{state=\"Succeeded\"}") == Some(1.0)
    });
    assert_eq!(sample(&units, "receptor_work_started_total{kind=\"unit\"}"), Some(1.0), "{units}");
    assert!(sample(&units, "receptor_control_sessions_total").is_some_and(|n| n >= 1.0), "{units}");
    assert!(sample(&units, "receptor_work_unit_output_bytes").is_some_and(|n| n >= 6.0), "{units}");
    // Unit output is counted as it is written, like a job's (the "Job output" panel).
    let counted = scrape_until(port, "the unit's output counted", |t| {
        sample(t, "receptor_work_output_bytes_total{kind=\"unit\"}").is_some_and(|n| n >= 6.0)
    });
    assert!(sample(&counted, "receptor_work_output_bytes_total{kind=\"job\"}").is_some_and(|b| b >= 13.0));
    promtool_accepts(&counted);
}

/// `promtool check metrics` (Debian's `prometheus` package; `make test-tools` installs it)
/// passes the exposition, lint included.
fn promtool_accepts(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (install it: make test-tools does)");
    p.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = p.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET /metrics with an `Accept` header: content type and body.
fn get_accept(port: u16, accept: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-H"])
        .arg(format!("Accept: {accept}"))
        .args(["-w", "\n%{content_type}"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, ct) = text.rsplit_once('\n').unwrap_or(("", ""));
    (ct.to_owned(), body.to_owned())
}

#[test]
fn metrics_speak_prometheus_text_unless_openmetrics_is_asked_for() {
    let d = Daemon::start(Spec::new("fmt1").extra(METRICS));
    let port = metrics_port(&d);
    let text = scrape_until(port, "a first scrape", |t| t.contains("receptor_build_info{"));
    assert!(!text.contains("# EOF") && text.contains("# TYPE receptor_build_info gauge"), "{text}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        // CPU time may still round to 0 in a fresh process.
        let least = if name == "process_cpu_seconds_total" { 0.0 } else { 1.0 };
        assert!(sample(&text, name).is_some_and(|v| v >= least), "{name} in\n{text}");
    }
    promtool_accepts(&text);

    let (ct, body) = get_accept(port, "text/plain;version=0.0.4");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!body.contains("# EOF"), "{body}");
    // Prometheus' own scraper prefers OpenMetrics.
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, body) = get_accept(port, prom);
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "{ct}");
    assert!(body.ends_with("# EOF\n") && body.contains("# TYPE receptor_build info"), "{body}");
}

/// A port nothing listens on now (the daemon that takes it keeps it across restarts).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn readyz_follows_the_only_peer() {
    let port_a = free_port();
    let listener = format!("[[listeners]]\nurl = \"receptor://127.0.0.1:{port_a}\"\n");
    let mut a = Daemon::start(Spec { listen: false, ..Spec::new("ra").extra(FAST_MESH).extra(&listener) });
    let metrics = format!("{METRICS}rtt_interval = \"1s\"\n");
    let b = Daemon::start(Spec::new("rb").peer(port_a).extra(FAST_MESH).extra(&metrics));
    let port = metrics_port(&b);
    let (code, body) = get(port, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"node\":\"rb\""), "{body}");

    let ready = |want: u16| {
        let mut last = (0, String::new());
        wait_until(&format!("/readyz {want}"), Duration::from_secs(20), || {
            last = get(port, "/readyz");
            last.0 == want
        });
        last.1
    };
    let up = ready(200);
    assert!(up.contains("\"peers_linked\":[\"ra\"]"), "{up}");
    let linked = scrape_until(port, "a measured round trip to ra", |t| {
        sample(t, "receptor_link_rtt_seconds{peer=\"ra\"}").is_some_and(|s| s.is_finite() && s > 0.0)
    });
    assert!(sample(&linked, "receptor_routing_nodes").is_some_and(|n| n >= 2.0), "{linked}");
    assert!(sample(&linked, "receptor_routing_adverts_received_total").is_some_and(|n| n >= 1.0));
    assert!(sample(&linked, "receptor_routing_computations_total").is_some_and(|n| n >= 1.0));

    a.kill();
    let down = ready(503);
    let v: serde_json::Value = serde_json::from_str(&down).expect("JSON body");
    assert_eq!(v["ready"], false, "{down}");
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("configured peer")), "{down}");

    a.restart();
    let back = ready(200);
    assert!(back.contains("\"ready\":true"), "{back}");
    let text = scrape_until(port, "the reconnect counted", |t| {
        sample(t, "receptor_link_reconnects_total{peer=\"ra\"}").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(sample(&text, "receptor_link_up{peer=\"ra\"}"), Some(1.0), "{text}");
}

/// Reads until the server closes the connection (or 10 s pass); returns what arrived.
fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let (mut got, mut buf, start) = (Vec::new(), [0u8; 4096], Instant::now());
    while start.elapsed() < Duration::from_secs(10) {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(request).expect("write");
    let (text, closed) = read_to_close(&mut s);
    assert!(closed, "the server kept the connection after {text:?}");
    text
}

#[test]
fn the_metrics_listener_withstands_hostile_clients() {
    let limits = "[metrics]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4\nheader_timeout = \"500ms\"\nconnection_timeout = \"3s\"\n";
    let d = Daemon::start(Spec::new("h1").extra(limits));
    let port = metrics_port(&d);

    // Only GET (and HEAD) of the three paths; no bodies; bounded heads.
    assert!(
        raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .starts_with("HTTP/1.1 405")
    );
    assert!(
        raw(port, b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .starts_with("HTTP/1.1 404")
    );
    let body = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    assert!(raw(port, body).starts_with("HTTP/1.1 413"));
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = s.write_all(&huge); // the server may close before reading it all
    let (text, closed) = read_to_close(&mut s);
    assert!(closed && !text.starts_with("HTTP/1.1 200"), "oversized head answered: {text:?}");
    assert!(raw(port, b"garbage\r\n\r\n").starts_with("HTTP/1.1 400"));

    // Slowloris: every slot taken by a client that never finishes its head.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").expect("partial head");
            s
        })
        .collect();
    // Past the limit: closed at once, unanswered.
    let mut extra = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (text, closed) = read_to_close(&mut extra);
    assert!(closed, "a connection past max_connections stayed open");
    assert!(text.is_empty() || !text.starts_with("HTTP/1.1 200"), "{text:?}");
    // The slow ones are dropped after header_timeout, whatever they send meanwhile.
    for s in &mut slow {
        let _ = s.write_all(b"X-A: b\r\n");
        let (_, closed) = read_to_close(s);
        assert!(closed, "a slowloris connection outlived header_timeout");
    }
    // Many connections at once: all answered or refused, never stuck; then service resumes.
    let many: Vec<std::thread::JoinHandle<bool>> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return true };
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                read_to_close(&mut s).1
            })
        })
        .collect();
    for t in many {
        assert!(t.join().expect("thread"), "a connection was left hanging");
    }
    wait_until("the listener serving again", Duration::from_secs(10), || get(port, "/healthz").0 == 200);
    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(text.contains("\nreceptor_build_info{") && !text.contains("# EOF"), "{text}");
}
