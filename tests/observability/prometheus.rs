//! A real Prometheus server scraping a listener, and its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::free_port;
use crate::get;

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: run `apt-get install prometheus` (Debian's package ships prometheus and promtool)")
        })
}

/// A Prometheus server started by the test; killed and cleaned up on drop
/// (also when the test panics).
pub struct PrometheusGuard {
    pub child: Child,
    pub dir: PathBuf,
    pub addr: SocketAddr,
}

impl Drop for PrometheusGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "prometheus files kept in {}; last log lines:\n{}",
                self.dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

pub fn start_prometheus(target: SocketAddr, rules: &Path) -> PrometheusGuard {
    let binary = find_binary("prometheus");
    let dir = std::env::temp_dir().join(format!(
        "geogate-prometheus-{}-{}",
        std::process::id(),
        target.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: geogate\n    static_configs:\n      - targets: ['{target}']\n",
        rules = rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    PrometheusGuard { child, dir, addr }
}

pub async fn prom_api(prom: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(prom, path).await;
    let doc: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: HTTP {status}: {body}"));
    doc
}

pub async fn query(prom: SocketAddr, expr: &str) -> serde_json::Value {
    prom_api(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .await
}

/// The value of a one-series PromQL result, if any.
pub async fn prom_scalar(prom: SocketAddr, expr: &str) -> Option<f64> {
    let doc = query(prom, expr).await;
    doc["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}
