//! A socket that is plain TCP or TLS, and its read/write halves.
//!
//! After startup, plain TCP reads take one syscall per message batch: a read
//! that returns less than asked means the socket is drained, so its
//! readiness is cleared right away (through `try_io`) instead of paying for
//! a second read that would only say "would block" (measured: a third of the
//! proxy's syscalls). Reads land in a per-thread
//! scratch buffer and only the bytes received are copied out, so an idle
//! connection holds no read buffer (the 1,000-idle-clients budget).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::Interest;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
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
    pub fn split(self) -> io::Result<(PgReader, PgWriter)> {
        Ok(match self {
            PgStream::Plain(s) => {
                let fd = Arc::new(s);
                (PgReader::Plain(fd.clone()), PgWriter::Plain(fd))
            }
            PgStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (PgReader::Tls(r), PgWriter::Tls(w))
            }
        })
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

thread_local! {
    /// Where plain-TCP reads land before the bytes received are copied out.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// A plain TCP socket shared by both halves: every operation used takes
/// `&self`, and readiness is tracked per direction.
type SharedFd = Arc<TcpStream>;

/// The read half of a [`PgStream`].
pub enum PgReader {
    /// Plain TCP.
    Plain(SharedFd),
    /// TLS.
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

impl PgReader {
    /// Waits for data, then appends what is available to `buf` (0 = end of
    /// stream). Cancel-safe: no data is lost when the future is dropped.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            PgReader::Plain(fd) => std::future::poll_fn(|cx| poll_read_plain(fd, cx, buf)).await,
            PgReader::Tls(r) => {
                buf.reserve(READ_CHUNK);
                r.read_buf(buf).await
            }
        }
    }
}

/// One read of a plain socket into `buf` once it is readable.
///
/// A poll function rather than `readable().await`: tokio keeps one waker
/// slot per direction for it, where each `readable()` future joins and
/// leaves a locked waiter list (a relay loop makes and drops several such
/// futures per statement). Each direction of a socket has one reader here,
/// so the single slot is enough.
fn poll_read_plain(
    fd: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    loop {
        if let Err(e) = std::task::ready!(fd.poll_read_ready(cx)) {
            return Poll::Ready(Err(e));
        }
        let mut got = None;
        let outcome = fd.try_io(Interest::READABLE, || {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let n = fd.try_read(&mut scratch[..])?;
                buf.extend_from_slice(&scratch[..n]);
                got = Some(n);
                if n > 0 && n < scratch.len() {
                    // Drained: report "would block" so tokio clears
                    // the readiness now (only if no new event came
                    // in meanwhile; it compares ticks).
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            })
        });
        match (got, outcome) {
            (Some(n), _) => return Poll::Ready(Ok(n)),
            (None, Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            (None, Err(e)) => return Poll::Ready(Err(e)),
            (None, Ok(())) => {}
        }
    }
}

/// One write of some of `buf` to a plain socket once it is writable (a
/// poll function for the reason [`poll_read_plain`] gives).
fn poll_write_plain(fd: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        if let Err(e) = std::task::ready!(fd.poll_write_ready(cx)) {
            return Poll::Ready(Err(e));
        }
        match fd.try_write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return Poll::Ready(other),
        }
    }
}

/// The write half of a [`PgStream`].
pub enum PgWriter {
    /// Plain TCP.
    Plain(SharedFd),
    /// TLS.
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl PgWriter {
    /// Writes some of `buf`, returning how much. Cancel-safe.
    pub async fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PgWriter::Plain(fd) => std::future::poll_fn(|cx| poll_write_plain(fd, cx, buf)).await,
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
            PgWriter::Plain(fd) => match fd.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                other => other,
            },
            PgWriter::Tls(_) => Ok(0),
        }
    }

    /// Writes all of `buf` (used outside the relay loop).
    pub async fn write_all_flush(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            PgWriter::Plain(_) => {
                let mut rest = buf;
                while !rest.is_empty() {
                    let n = self.write_some(rest).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    rest = &rest[n..];
                }
                Ok(())
            }
            PgWriter::Tls(w) => {
                w.write_all(buf).await?;
                w.flush().await
            }
        }
    }

    /// Half-closes the connection (plain TCP: only once the read half is
    /// gone; otherwise the socket closes when both halves are dropped).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            PgWriter::Plain(fd) => match Arc::get_mut(fd) {
                Some(s) => s.shutdown().await,
                None => Ok(()),
            },
            PgWriter::Tls(w) => w.shutdown().await,
        };
    }
}
