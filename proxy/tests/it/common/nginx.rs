//! A real nginx as an origin, with `server_name a.test` and a default server answering 421:
//! it refuses an empty `Host` (400), a wrong one never reaches the site, and it reads paths
//! its own way (it decodes `%61`, merges `//`), which is what the access tests check against.

use super::free_port;
use std::time::Duration;

/// A real nginx behind Portier, with `server_name a.test` and a default server answering
/// 421: nginx refuses an empty `Host` (400) and a wrong one never reaches the site.
pub struct Nginx {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("www/reval")).unwrap();
        std::fs::write(dir.path().join("www/page.html"), "<h1>nginx</h1>".repeat(100)).unwrap();
        std::fs::write(dir.path().join("www/reval/r.txt"), "revalidate me").unwrap();
        std::fs::create_dir_all(dir.path().join("www/admin")).unwrap();
        std::fs::write(dir.path().join("www/admin/x"), "the admin page").unwrap();
        let addr = free_port();
        let conf = format!(
            "master_process off;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{}}\n\
             http {{\n  log_format hosts '$host|$request_uri|$status';\n  access_log {d}/access.log hosts;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{ listen {addr} default_server; return 421; }}\n\
               server {{\n    listen {addr};\n    server_name a.test;\n    root {d}/www;\n\
                 location / {{ add_header Cache-Control \"max-age=60\"; }}\n\
                 location /reval/ {{ add_header Cache-Control \"no-cache\"; }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new("nginx")
            .args(["-e", "stderr", "-c"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx runs (make test installs nginx-light)");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr, dir }
    }

    /// Puts a file under the site's root (nginx reads it at the next request).
    pub fn put(&self, path: &str, body: &str) {
        let file = self.dir.path().join("www").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    }

    /// The access log: `(host, request_uri, status)` per request.
    pub fn log(&self) -> Vec<(String, String, u16)> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, '|');
                Some((it.next()?.to_string(), it.next()?.to_string(), it.next()?.parse().ok()?))
            })
            .collect()
    }
}
