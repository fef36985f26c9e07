//! The streams under tokio's I/O traits (feature `tokio-io`): tokio-util's `Framed` with a
//! `LinesCodec` over a real loopback connection, write backpressure, flush and shutdown, on
//! every backend built in. Run with `--features tokio-io` (CI does).
#![cfg(feature = "tokio-io")]

use std::io::Write;
use std::net::TcpListener;

use futures_util::{SinkExt, StreamExt};
use ringloop::{
    ConnectOptions, DuplexStream, Error, EventLoop, Server, ServerOptions, StreamWriter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LinesCodec, LinesCodecError};
use uring_tests::backend_tests;
use uring_tests::streams::{
    connect_to, connect_to_listener, join, must, port_of, read_peer_to_close, run, shut, timeout,
    write_until_pending,
};
use uring_tests::tls::pki;

/// A codec error as the callback's error.
fn codec_error(error: LinesCodecError) -> Error {
    Error::from(std::io::Error::other(error))
}

/// A line server on loopback (`options`: TLS or not), each connection a
/// `Framed<DuplexStream, LinesCodec>`: answers each line in upper case; at the end of the
/// client's lines, sends `"<count> lines"` and shuts down (tokio's shutdown: `write_eof`, or
/// the close over TLS).
async fn upper_case_server(lp: &EventLoop, options: ServerOptions) -> Server {
    let server = lp.start_server(
        |reader, writer| async move {
            let mut lines = Framed::new(DuplexStream::new(reader, writer), LinesCodec::new());
            let mut count = 0;
            while let Some(line) = lines.next().await {
                lines.send(line.map_err(codec_error)?.to_uppercase()).await.map_err(codec_error)?;
                count += 1;
            }
            lines.send(format!("{count} lines")).await.map_err(codec_error)?;
            SinkExt::<String>::close(&mut lines).await.map_err(codec_error)
        },
        "127.0.0.1:0",
        options,
    );
    server.await.unwrap()
}

/// Closes `writer` and waits for the end.
async fn close(lp: &EventLoop, writer: StreamWriter) {
    writer.close();
    must(lp, writer.wait_closed()).await.unwrap();
}

backend_tests! {
    // Client and server each a `Framed<DuplexStream, LinesCodec>`; `close()` on the client's
    // sink is tokio's shutdown (a half-close): the server sees the end of the lines, answers
    // its last line, shuts down too, and the client reads that to the end.
    fn framed_lines_codec_over_loopback(lp) {
        run(lp, |lp| async move {
            let server = upper_case_server(&lp, ServerOptions::default()).await;
            let stream = DuplexStream::from(connect_to(&server).await);
            let mut lines = Framed::new(stream, LinesCodec::new());
            for word in ["hello", "ringloop", "framed"] {
                must(&lp, lines.send(word)).await.unwrap();
                assert_eq!(must(&lp, lines.next()).await.unwrap().unwrap(), word.to_uppercase());
            }
            must(&lp, SinkExt::<String>::close(&mut lines)).await.unwrap();
            assert_eq!(must(&lp, lines.next()).await.unwrap().unwrap(), "3 lines");
            assert!(must(&lp, lines.next()).await.is_none(), "the server's end");
            let stream = lines.into_inner();
            assert!(stream.reader().at_eof());
            close(&lp, stream.into_parts().1).await;
            shut(server, &lp).await;
        });
    }

    // Many lines both ways at once, more than the write buffers hold: a `FramedWrite` and a
    // `FramedRead` over the two halves (`into_parts`), the writing one a task; backpressure
    // on both sides, nothing lost or reordered.
    fn framed_halves_move_many_lines(lp) {
        run(lp, |lp| async move {
            let server = upper_case_server(&lp, ServerOptions::default()).await;
            let (reader, writer) = DuplexStream::from(connect_to(&server).await).into_parts();
            let total = 20_000;
            let line = |i: usize| format!("{i:08} {}", "x".repeat(90));
            let sender = lp
                .create_task(async move {
                    let mut sink = FramedWrite::new(writer, LinesCodec::new());
                    for i in 0..total {
                        sink.feed(line(i)).await.map_err(codec_error)?;
                    }
                    SinkExt::<String>::close(&mut sink).await.map_err(codec_error)?;
                    Ok::<_, Error>(sink.into_inner())
                })
                .unwrap();
            let mut source = FramedRead::new(reader, LinesCodec::new());
            for i in 0..total {
                assert_eq!(must(&lp, source.next()).await.unwrap().unwrap(), line(i).to_uppercase());
            }
            assert_eq!(must(&lp, source.next()).await.unwrap().unwrap(), format!("{total} lines"));
            assert!(must(&lp, source.next()).await.is_none());
            close(&lp, must(&lp, sender).await.unwrap().unwrap()).await;
            shut(server, &lp).await;
        });
    }

    // Over TLS, which cannot half-close, tokio's shutdown is the close: `close_notify`, then
    // the whole connection ends (reading too), and the shutdown completes once it has.
    fn framed_over_tls_shutdown_closes(lp) {
        run(lp, |lp| async move {
            let server = upper_case_server(&lp, ServerOptions::default().ssl(pki().server())).await;
            let options = ConnectOptions::new().ssl(pki().client()).server_hostname("localhost");
            let port = port_of(&server);
            let connection = lp.open_connection(("127.0.0.1", port), options);
            let stream = DuplexStream::from(must(&lp, connection).await.unwrap());
            assert!(!stream.writer().can_write_eof());
            let mut lines = Framed::new(stream, LinesCodec::new());
            must(&lp, lines.send("secure")).await.unwrap();
            assert_eq!(must(&lp, lines.next()).await.unwrap().unwrap(), "SECURE");
            must(&lp, SinkExt::<String>::close(&mut lines)).await.unwrap();
            assert!(lines.get_ref().writer().is_closing());
            must(&lp, lines.get_ref().writer().wait_closed()).await.unwrap();
            assert!(must(&lp, lines.next()).await.is_none(), "reading ended with the close");
            shut(server, &lp).await;
        });
    }

    // tokio's read: 0 at EOF (every time); the connection's error once it was lost with one
    // (the `Error` inside), for reads, flush and shutdown alike; a second shutdown is `Ok`.
    fn tokio_read_eof_and_connection_errors(lp) {
        run(lp, |lp| async move {
            let (listener, mut reader, mut writer) = connect_to_listener(&lp).await;
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"last words").unwrap();
            drop(peer);
            let mut got = Vec::new();
            must(&lp, AsyncReadExt::read_to_end(&mut reader, &mut got)).await.unwrap();
            assert_eq!(got, b"last words");
            let mut buf = [0u8; 8];
            assert_eq!(must(&lp, AsyncReadExt::read(&mut reader, &mut buf)).await.unwrap(), 0);
            assert_eq!(must(&lp, AsyncReadExt::read(&mut reader, &mut buf)).await.unwrap(), 0);
            must(&lp, writer.shutdown()).await.unwrap();
            must(&lp, writer.shutdown()).await.unwrap();
            close(&lp, writer).await;

            let (listener, mut reader, mut writer) = connect_to_listener(&lp).await;
            let (peer, _) = listener.accept().unwrap();
            uring_tests::streams::reset(peer);
            let mut buf = [0u8; 8];
            let err = must(&lp, AsyncReadExt::read(&mut reader, &mut buf)).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            assert!(err.get_ref().and_then(|e| e.downcast_ref::<Error>()).is_some(), "{err}");
            let err = must(&lp, writer.flush()).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            let err = must(&lp, writer.shutdown()).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        });
    }

    // tokio's `poll_write` goes Pending while the transport is over its high-water mark (the
    // peer reads nothing) and the buffer stays bounded; `flush` waits for the drain; both go
    // on once the peer reads; `shutdown` is `write_eof`: the peer reads everything, then EOF,
    // and its answer is still read here. Writing after the shutdown fails.
    fn tokio_write_backpressure_flush_and_shutdown(lp) {
        run(lp, |lp| async move {
            let (listener, mut reader, mut writer) = connect_to_listener(&lp).await;
            writer.transport().set_write_buffer_limits(Some(16 * 1024), None).unwrap();
            let write_all = |mut w: StreamWriter, chunk| async move { w.write_all(chunk).await };
            let written = write_until_pending(&lp, &writer, write_all).await;
            assert!(writer.transport().get_write_buffer_size() > 16 * 1024);
            assert!(timeout(&lp, 0.1, writer.flush()).await.is_none(), "flush waits for the drain");
            let peer = std::thread::spawn(move || read_all_then_answer(listener, b"bye"));
            must(&lp, writer.write_all(b"end")).await.unwrap();
            must(&lp, writer.flush()).await.unwrap();
            must(&lp, writer.shutdown()).await.unwrap();
            let got = must(&lp, join(&lp, peer)).await;
            assert_eq!(got, written + 3);
            let mut answer = Vec::new();
            must(&lp, AsyncReadExt::read_to_end(&mut reader, &mut answer)).await.unwrap();
            assert_eq!(answer, b"bye");
            let err = writer.write_all(b"late").await.unwrap_err();
            assert!(err.get_ref().and_then(|e| e.downcast_ref::<Error>()).is_some(), "{err}");
            close(&lp, writer).await;
        });
    }
}

/// Accepts one connection, reads it to EOF, writes `answer` and closes: the byte count read.
fn read_all_then_answer(listener: TcpListener, answer: &[u8]) -> usize {
    let (mut peer, _) = listener.accept().unwrap();
    let (total, error) = read_peer_to_close(&mut peer);
    assert!(error.is_none(), "peer read: {error:?}");
    peer.write_all(answer).unwrap();
    total
}
