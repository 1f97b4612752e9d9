//! A socket that is plain TCP or TLS, and its read/write halves.
//!
//! Reads on plain TCP wait for readiness *before* taking buffer memory, so an
//! idle connection holds no read buffer (the 1,000-idle-clients budget).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;

/// Bytes taken per read when data is ready.
pub const READ_CHUNK: usize = 16 * 1024;

/// A connection, before being split.
pub enum PgStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (client or server side).
    Tls(Box<TlsStream<TcpStream>>),
}

impl PgStream {
    /// Splits into halves that can be used concurrently.
    pub fn split(self) -> (PgReader, PgWriter) {
        match self {
            PgStream::Plain(s) => {
                let (r, w) = s.into_split();
                (PgReader::Plain(r), PgWriter::Plain(w))
            }
            PgStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (PgReader::Tls(r), PgWriter::Tls(w))
            }
        }
    }

    /// Reads at least one byte into `buf` (0 = end of stream).
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(READ_CHUNK.min(4096));
        self.read_buf(buf).await
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The read half of a [`PgStream`].
pub enum PgReader {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

impl PgReader {
    /// Waits for data, then appends what is available to `buf` (0 = end of
    /// stream). Cancel-safe: no data is lost when the future is dropped.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            PgReader::Plain(r) => loop {
                r.readable().await?;
                buf.reserve(READ_CHUNK);
                match r.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            },
            PgReader::Tls(r) => {
                buf.reserve(READ_CHUNK);
                r.read_buf(buf).await
            }
        }
    }
}

/// The write half of a [`PgStream`].
pub enum PgWriter {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl PgWriter {
    /// Writes some of `buf`, returning how much. Cancel-safe.
    pub async fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PgWriter::Plain(w) => w.write(buf).await,
            PgWriter::Tls(w) => {
                let n = w.write(buf).await?;
                // rustls buffers records; push them to the socket now.
                w.flush().await?;
                Ok(n)
            }
        }
    }

    /// Writes without waiting when the socket can take it (plain TCP only);
    /// `Ok(0)` when it would block, so the caller falls back to `write_some`.
    pub fn try_write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PgWriter::Plain(w) => match w.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                other => other,
            },
            PgWriter::Tls(_) => Ok(0),
        }
    }

    /// Writes all of `buf` (used outside the relay loop).
    pub async fn write_all_flush(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            PgWriter::Plain(w) => w.write_all(buf).await,
            PgWriter::Tls(w) => {
                w.write_all(buf).await?;
                w.flush().await
            }
        }
    }

    /// Half-closes the connection.
    pub async fn shutdown(&mut self) {
        let _ = match self {
            PgWriter::Plain(w) => w.shutdown().await,
            PgWriter::Tls(w) => w.shutdown().await,
        };
    }
}
