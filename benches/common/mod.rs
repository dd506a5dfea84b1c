//! Shared by the benchmarks: start a real receptord and learn the port it bound.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A daemon killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `receptord -c config` (with `path` as PATH when given) and waits for its
/// "listener bound" line; its remaining stderr is drained in the background.
pub fn spawn(receptord: &str, config: &Path, path: Option<&str>) -> Daemon {
    let mut cmd = Command::new(receptord);
    cmd.arg("-c").arg(config).stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("receptord");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("addr=127.0.0.1:").nth(1).and_then(|p| p.split_whitespace().next()?.parse().ok())
        })
        .expect("listener port");
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, port }
}
