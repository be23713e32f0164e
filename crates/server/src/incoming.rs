//! The connections an xDS port accepts, at most a number open at once: past that, a new
//! one is closed as soon as it is accepted, so a flood of connections costs meshd a
//! bounded amount and the proxies already connected keep theirs. A connection frees its
//! place when it closes.

use futures::{Stream, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Connections one xDS port keeps open at most by default: every proxy holds one, and a
/// hosted meshd serves many clusters' proxies.
pub const MAX_CONNECTIONS: usize = 32_768;

/// `listener`'s connections, at most `max` open at once.
pub fn counted(listener: TcpListener, max: usize) -> impl Stream<Item = io::Result<Counted>> {
    let places = Arc::new(Semaphore::new(max));
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let place = places.clone().try_acquire_owned();
        async move {
            match (accepted, place) {
                (Err(e), _) => Some(Err(e)),
                (Ok(stream), Ok(place)) => Some(Ok(Counted {
                    stream,
                    _place: place,
                })),
                (Ok(stream), Err(_)) => {
                    tracing::debug!(peer = ?stream.peer_addr().ok(), "too many open xDS connections: closed a new one");
                    None
                }
            }
        }
    })
}

/// An accepted connection holding its place.
pub struct Counted {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
