//! A real Redis (Debian `redis-server`) on a free loopback port, no persistence; it can be
//! stopped and started again on the same port to test an outage.

use super::prom::which;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Redis {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Redis {
    /// Redis cannot bind port 0 and report it, so a free loopback port is picked and released.
    pub async fn start() -> Redis {
        let mut r = Redis { child: None, addr: super::free_port() };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Kills it (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, a slow Redis at worst.
    pub fn pause(&self, frozen: bool) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
            }
        }
    }

    /// Starts it (again) on the same port, empty, and waits for `PING`.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new(which("redis-server"))
            .args(["--port", &self.addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let ready =
            super::eventually(Duration::from_secs(10), async || self.command(&["PING"]).await.is_some_and(|r| r.starts_with("+PONG")))
                .await;
        assert!(ready, "redis-server answers PING on {}", self.addr);
    }

    /// One command in RESP; the raw reply (enough for the tests' checks).
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(self.addr)).await.ok()?.ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    }
}
