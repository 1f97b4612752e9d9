//! Is a gateway there? The probe behind failover recovery: a TCP connect
//! and an SSLRequest, which any PostgreSQL-protocol server answers with one
//! byte without authentication or a backend process.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Gateway;
use crate::route::{BoxFuture, Probe};

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Probes gateways by region name.
pub struct GatewayProbe {
    gateways: BTreeMap<Arc<str>, Gateway>,
}

impl GatewayProbe {
    /// A probe for these gateways.
    pub fn new(gateways: BTreeMap<Arc<str>, Gateway>) -> GatewayProbe {
        GatewayProbe { gateways }
    }
}

impl Probe for GatewayProbe {
    fn probe<'a>(&'a self, region: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(gw) = self.gateways.get(region) else { return false };
            let Ok(mut tcp) = TcpStream::connect(gw.url.address()).await else { return false };
            if tcp.write_all(&SSL_REQUEST).await.is_err() {
                return false;
            }
            let mut answer = [0u8; 1];
            matches!(tcp.read_exact(&mut answer).await, Ok(_) if answer[0] == b'S' || answer[0] == b'N')
        })
    }
}
