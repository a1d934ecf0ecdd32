//! Certificates by ACME against Pebble, Let's Encrypt's test CA (Debian `pebble`), started
//! here with `pebble-challtestsrv` as its DNS: Portier answers the HTTP-01 challenge on its
//! own public listener, serves the issued certificate over HTTPS, keeps it on disk, and a
//! restart serves it at once without a new order.

use crate::common::scripted::{Reply, Scripted};
use crate::common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn portier_config(http: SocketAddr, dir: &Path, directory: &str, pebble_cert: &Path, origin: SocketAddr) -> String {
    format!(
        "[listen]\npublic = \"{http}\"\nadmin = \"127.0.0.1:0\"\n\
         [tls]\nlisten = \"127.0.0.1:0\"\n\
         acme = {{ email = \"ops@portier.test\", domains = [\"portier.test\"], directory = \"{directory}\", directory_ca = \"{}\", storage = \"{}\" }}\n\
         [upstreams.o]\naddresses = [\"{origin}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n",
        pebble_cert.display(),
        dir.join("acme").display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_from_pebble_by_http01_kept_across_restarts() {
    for bin in ["pebble", "pebble-challtestsrv"] {
        assert!(Path::new(&format!("/usr/bin/{bin}")).exists(), "{bin} missing: run `make test` (it installs Debian's pebble)");
    }
    let o = Scripted::start(|req, _| Reply::new(200, &[], format!("secure {}", req.target))).await;
    let dir = tempfile::tempdir().unwrap();
    // Pebble's own HTTPS certificate: the Debian package ships none.
    let pc = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (pebble_cert, pebble_key) = (dir.path().join("pebble.pem"), dir.path().join("pebble.key"));
    std::fs::write(&pebble_cert, pc.cert.pem()).unwrap();
    std::fs::write(&pebble_key, pc.signing_key.serialize_pem()).unwrap();
    let (acme_port, mgmt_port, http, dns, chall_mgmt, tls_port) =
        (free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
    let cfg = dir.path().join("pebble.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{}", "managementListenAddress": "127.0.0.1:{}", "certificate": "{}", "privateKey": "{}", "httpPort": {}, "tlsPort": {}, "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            acme_port.port(),
            mgmt_port.port(),
            pebble_cert.display(),
            pebble_key.display(),
            http.port(),
            tls_port.port()
        ),
    )
    .unwrap();
    // Every name resolves to 127.0.0.1 through the test DNS server.
    let _dns = Killed(
        Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &dns.to_string(), "-management", &chall_mgmt.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _pebble = Killed(
        Command::new("pebble")
            .args(["-config"])
            .arg(&cfg)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let directory = format!("https://localhost:{}/dir", acme_port.port());
    let d2 = directory.clone();
    assert!(
        eventually(Duration::from_secs(10), async || {
            let d = d2.clone();
            tokio::task::spawn_blocking(move || curl(&["-k", &d]).0).await.unwrap()
        })
        .await,
        "pebble answers"
    );

    let config = portier_config(http, dir.path(), &directory, &pebble_cert, o.addr);
    let p = Portier::start(&config);
    let issued = eventually(Duration::from_secs(40), async || p.stdout_lines().iter().any(|l| l.contains("acme_certificate_issued"))).await;
    assert!(issued, "no certificate: {:?}", p.stdout_lines().iter().filter(|l| l.contains("acme")).collect::<Vec<_>>());
    let root = dir.path().join("root.pem");
    let (ok, pem) = curl(&["-k", &format!("https://localhost:{}/roots/0", mgmt_port.port())]);
    assert!(ok, "{pem}");
    std::fs::write(&root, pem).unwrap();
    let fetch = |tls: SocketAddr| {
        curl(&[
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &format!("portier.test:{}:127.0.0.1", tls.port()),
            &format!("https://portier.test:{}/x", tls.port()),
        ])
    };
    let (ok, body) = fetch(p.tls.unwrap());
    assert!(ok, "the CA's certificate is served: {body}");
    assert_eq!(body, "secure /x");
    let key = dir.path().join("acme/key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the key is private");
    drop(p);

    // A restart serves the stored certificate at once, without asking the CA.
    let p = Portier::start(&config);
    let (ok, body) = fetch(p.tls.unwrap());
    assert!(ok, "{body}");
    assert!(p.stdout_lines().iter().any(|l| l.contains("acme_certificate_loaded")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!p.stdout_lines().iter().any(|l| l.contains("acme_certificate_issued")), "no new order");
}
