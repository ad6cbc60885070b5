//! The proxy benchmark's floor: Pingora alone, configured as the gateway's edge is (its
//! threads, the keep-alive pool, the same allocator), forwarding every request to one
//! upstream with one fixed header added. What Latchkey costs beyond this is its own work.
//!
//!   bare_proxy <listen address> <upstream address> <threads>

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        upstream.insert_header("x-api-key", "bench-key-123")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = args.as_slice() else {
        eprintln!("usage: bare_proxy <listen address> <upstream address> <threads>");
        std::process::exit(2);
    };
    let Ok(threads) = threads.parse::<usize>() else {
        eprintln!("threads must be a number, not `{threads}`");
        std::process::exit(2);
    };
    let dir = std::env::temp_dir().join(format!("bare-proxy-{}", std::process::id()));
    let mut conf = ServerConf {
        threads,
        pid_file: dir.join("pingora.pid").to_string_lossy().into_owned(),
        upgrade_sock: dir.join("upgrade.sock").to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 256;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream: upstream.clone() });
    service.add_tcp(listen);
    server.add_service(service);
    server.run(RunArgs::default());
}
