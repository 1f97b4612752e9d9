//! A TCP relay that adds a fixed one-way delay, to emulate the round-trip
//! time between regions in the local demo (kernel netem is not available
//! everywhere). Usage: `geogate-relay LISTEN_ADDR TARGET_ADDR RTT_MS`.
//!
//! Each direction delays every chunk by RTT/2 while keeping order and
//! throughput: chunks are timestamped on arrival and released when due,
//! so a stream of many messages pays the latency once, as on a real link.
#![forbid(unsafe_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, target, rtt) = match args.as_slice() {
        [_, l, t, r] => match r.parse::<u64>() {
            Ok(ms) => (l.clone(), t.clone(), Duration::from_millis(ms)),
            Err(_) => usage(),
        },
        _ => usage(),
    };
    let listener = match TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("geogate-relay: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let one_way = rtt / 2;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pipe(cr, sw, one_way), pipe(sr, cw, one_way));
        });
    }
}

/// Copies `from` to `to`, delivering each chunk `delay` after it arrived.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

fn usage() -> ! {
    eprintln!("usage: geogate-relay LISTEN_ADDR TARGET_ADDR RTT_MS");
    std::process::exit(2);
}
