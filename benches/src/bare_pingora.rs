//! Pingora with the thinnest proxy: every request to one upstream, no hook overridden.
//!
//! `bare-pingora LISTEN UPSTREAM` (for example `127.0.0.1:19005 127.0.0.1:19001`), one worker
//! thread. `vs-bench` and the pass-through profile in benches/README.md use it as the floor
//! Portier's own hooks add to: what a request costs in Pingora alone.

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let conf = ServerConf { threads: 1, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
