//! geogate under test: in-process ([`Proxy`]) or as the built binary
//! ([`Binary`]), and its metrics listener read over HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use geogate::config::Config;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_postgres::{Client, NoTls};

/// geogate running in-process on its own runtime and thread, so that sync
/// and async tests alike can start it, on the ports its config asks for
/// (`listen = "127.0.0.1:0"`: a free one). Dropping it asks for a graceful
/// shutdown; [`Proxy::shutdown`] also waits until the server returns.
pub struct Proxy {
    /// The client port.
    pub port: u16,
    /// The metrics listener, when the config sets `metrics_listen`.
    metrics: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts geogate on the config `text`; returns once it listens.
    pub fn start(text: &str) -> Proxy {
        let config = Config::parse(text).expect("test config is valid");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bound = geogate::server::bind(config).await.expect("bind");
                addr_tx
                    .send((bound.local_addr().port(), bound.metrics_addr()))
                    .unwrap();
                bound
                    .run_until(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        let (port, metrics) = addr_rx.recv().expect("geogate started");
        Proxy {
            port,
            metrics,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// The metrics listener's address (the config must set `metrics_listen`).
    pub fn metrics(&self) -> SocketAddr {
        self.metrics.expect("metrics_listen is set")
    }

    /// A `postgres://` URL through geogate.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// A libpq key/value connection string through geogate.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port
        )
    }

    /// A tokio-postgres client through geogate (its connection spawned).
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> Client {
        connect(&self.conn_str(user, password, db))
            .await
            .expect("connect through geogate")
    }

    /// `/metrics` now, `name{labels}` → value (empty if unreachable).
    pub async fn scrape(&self) -> BTreeMap<String, f64> {
        scrape(self.metrics()).await
    }

    /// `geogate_upstream_up{region}` as `/metrics` reports it now.
    pub async fn upstream_up(&self, region: &str) -> Option<f64> {
        self.scrape()
            .await
            .get(&format!("geogate_upstream_up{{region=\"{region}\"}}"))
            .copied()
    }

    /// Waits (bounded) until geogate reports `region`'s gateway up or down.
    pub async fn wait_upstream_up(&self, region: &str, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.upstream_up(region).await != Some(want) {
            assert!(
                Instant::now() < deadline,
                "geogate_upstream_up{{region={region}}} never became {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks for a graceful shutdown and waits until the server returns.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A tokio-postgres client on `conn` (its connection spawned).
pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// GET over a real HTTP/1.1 client connection, with an extra header if
/// given: (status, body), `None` if the listener cannot be reached or
/// drops the connection.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    header: Option<(&str, String)>,
) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr.to_string());
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).ok()?)
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8(body.to_vec()).ok()?))
}

/// A sample of a metrics listener's `/metrics`: `name{labels}` → value
/// (empty if it cannot be read).
pub async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let Some((_, body)) = http_get(addr, "/metrics", None).await else {
        return BTreeMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The built `geogate serve` on a config file in `dir`, logging JSON lines
/// (`RUST_LOG=info`) to `dir/geogate.log`; killed on Drop.
pub struct Binary {
    child: Child,
    /// The client port.
    pub port: u16,
    log: PathBuf,
}

impl Binary {
    /// Writes `config` to `dir/geogate.toml`, its `listen = "127.0.0.1:0"`
    /// replaced by a free port, starts geogate on it and waits until it
    /// listens (panicking with its log if it exits first).
    pub fn start(dir: &Path, config: &str) -> Binary {
        let port = super::free_port();
        std::fs::write(dir.join("geogate.toml"), with_listen(config, port)).unwrap();
        let log = dir.join("geogate.log");
        let child = Command::new(env!("CARGO_BIN_EXE_geogate"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(dir.join("geogate.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start geogate");
        let mut binary = Binary { child, port, log };
        binary.wait_listening();
        binary
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("geogate exited ({status}): {}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "geogate did not listen on {}: {}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, …).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name}");
    }

    /// Rewrites the config file (same port) and sends SIGHUP.
    pub fn reload_with(&self, dir: &Path, config: &str) {
        std::fs::write(dir.join("geogate.toml"), with_listen(config, self.port)).unwrap();
        self.signal("HUP");
    }

    /// The exit status if geogate has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Whether geogate still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The JSON log lines so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `n` log lines have the message `message`; returns them all.
    pub fn wait_for(&self, message: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.lines();
            if lines.iter().filter(|l| l["message"] == message).count() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} in {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        let start = (start..=s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[start..].to_string()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `config` with its client `listen = "127.0.0.1:0"` line on `port`
/// (`metrics_listen` stays as it is).
fn with_listen(config: &str, port: u16) -> String {
    config
        .lines()
        .map(|l| {
            if l.trim() == "listen = \"127.0.0.1:0\"" {
                format!("listen = \"127.0.0.1:{port}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
