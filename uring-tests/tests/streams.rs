//! Streams (`open_connection`, `start_server`, `StreamReader`, `StreamWriter`): BEHAVIOURS
//! section 19 (items 164, 165), 106's streams half, the read methods, both directions of
//! backpressure, and the `futures-io` traits, on every backend built in.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use ringloop::{
    ArgumentKind, ConnectOptions, Error, EventLoop, RuntimeKind, ServerOptions, StreamReader,
    StreamWriter, UnixConnectOptions, UnixServerOptions,
};
use uring_tests::streams::{
    connect_to, connect_to_listener, echo_server, join, must, pair, port_of, read_all,
    read_to_close, reset, run, serve_and_connect, shut, sleep, timeout, until, write_until_pending,
};
use uring_tests::{backend_tests, capture_exceptions, pattern, settle};

/// Writes `data` on `writer` and waits until `reader`, which had nothing buffered, holds all of
/// it.
async fn write_and_buffer(
    lp: &EventLoop,
    writer: &StreamWriter,
    reader: &StreamReader,
    data: &[u8],
) {
    writer.write(data).unwrap();
    until(lp, || reader.buffered() == data.len()).await;
}

backend_tests! {
    fn echo_round_trip(lp) {
        run(lp, |lp| async move {
            let server = echo_server(&lp).await;
            let (reader, writer) = connect_to(&server).await;
            assert!(writer.get_extra_info("peername").is_some());
            for i in 0..20 {
                let line = format!("line {i}\n");
                writer.write(line.as_bytes()).unwrap();
                must(&lp, writer.drain()).await.unwrap();
                assert_eq!(must(&lp, reader.readline()).await.unwrap(), line.as_bytes());
            }
            writer.writelines([&b"a\n"[..], b"b\n"]).unwrap();
            writer.write_eof();
            assert!(writer.can_write_eof());
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"a\nb\n");
            assert!(reader.at_eof());
            writer.close();
            must(&lp, writer.wait_closed()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    // Issue 3: the readers' buffer limit is 64 KiB by default, on both sides.
    fn default_reader_limit_is_64_kib(lp) {
        run(lp, |lp| async move {
            assert_eq!(ringloop::DEFAULT_LIMIT, 64 * 1024);
            let limits = Rc::new(RefCell::new(Vec::new()));
            let sink = limits.clone();
            let keep = move |reader: StreamReader, writer: StreamWriter| {
                sink.borrow_mut().push(reader.limit());
                async move {
                    writer.close();
                    writer.wait_closed().await
                }
            };
            let server = lp.start_server(keep, "127.0.0.1:0", ServerOptions::default()).await.unwrap();
            let (reader, writer) = connect_to(&server).await;
            assert_eq!(reader.limit(), 64 * 1024, "open_connection");
            until(&lp, || !limits.borrow().is_empty()).await;
            assert_eq!(*limits.borrow(), [64 * 1024], "start_server");
            writer.close();
            must(&lp, writer.wait_closed()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    fn readline_readexactly_readuntil(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"a\nbc\nxyzfoo--bar").unwrap();
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"a\n");
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"bc\n");
            assert_eq!(must(&lp, reader.readexactly(3)).await.unwrap(), b"xyz");
            assert_eq!(must(&lp, reader.readuntil(b"--")).await.unwrap(), b"foo--");
            let empty = reader.readuntil(b"").await;
            assert!(matches!(&empty, Err(Error::InvalidArgument { kind: ArgumentKind::Missing, .. })), "{empty:?}");
            assert_eq!(empty.unwrap_err().to_string(), "readuntil: the separator must not be empty");
            assert!(!reader.at_eof());
            sw.write_eof();
            match must(&lp, reader.readuntil(b"--")).await {
                Err(err @ Error::IncompleteRead { .. }) => {
                    assert_eq!(err.to_string(), "3 bytes read before EOF, without the separator");
                    let Error::IncompleteRead { partial, expected } = err else { unreachable!() };
                    assert_eq!((partial.as_slice(), expected), (&b"bar"[..], None));
                }
                other => panic!("expected IncompleteRead, got {other:?}"),
            }
            assert!(reader.at_eof());
            assert_eq!(reader.readline().await.unwrap(), b"");
            shut(server, &lp).await;

            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"ab").unwrap();
            sw.write_eof();
            match must(&lp, reader.readexactly(5)).await {
                Err(err @ Error::IncompleteRead { .. }) => {
                    assert_eq!(err.to_string(), "2 bytes read on a total of 5 expected bytes");
                    let Error::IncompleteRead { partial, expected } = err else { unreachable!() };
                    assert_eq!((partial.as_slice(), expected), (&b"ab"[..], Some(5)));
                }
                other => panic!("expected IncompleteRead, got {other:?}"),
            }
            assert!(reader.at_eof());
            assert_eq!(reader.readexactly(0).await.unwrap(), b"");
            shut(server, &lp).await;

            // A last line without "\n" is returned as is.
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"tail").unwrap();
            sw.write_eof();
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"tail");
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"");
            shut(server, &lp).await;
        });
    }

    fn readuntil_finds_a_separator_split_across_chunks_and_in_a_long_buffer(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            let r = reader.clone();
            let head = lp.create_task(async move { r.readuntil(b"\r\n\r\n").await }).unwrap();
            // Three of the separator's four bytes: not found yet, nothing taken.
            write_and_buffer(&lp, &sw, &reader, b"GET / HTTP/1.1\r\n\r").await;
            sleep(&lp, 0.02).await;
            assert!(!head.done());
            sw.write(b"\nbody").unwrap();
            let head = must(&lp, head).await.unwrap().unwrap();
            assert_eq!(head, b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(must(&lp, reader.readexactly(4)).await.unwrap(), b"body");
            // A buffer past 256 bytes is searched another way: the first match still wins.
            let mut long = pattern(1000);
            long.retain(|&b| b != b'\r');
            long.extend_from_slice(b"\r\n\r\nrest\r\n\r\n");
            write_and_buffer(&lp, &sw, &reader, &long).await;
            let first = must(&lp, reader.readuntil(b"\r\n\r\n")).await.unwrap();
            assert_eq!(first, &long[..long.len() - 8]);
            assert_eq!(must(&lp, reader.readuntil(b"\r\n\r\n")).await.unwrap(), b"rest\r\n\r\n");
            shut(server, &lp).await;
        });
    }

    fn limit_overrun(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 8).await;
            // The separator is found, beyond the limit: an overrun; nothing is consumed.
            write_and_buffer(&lp, &sw, &reader, b"0123456789abcdef\nxy\n").await;
            match must(&lp, reader.readuntil(b"\n")).await {
                Err(Error::LimitOverrun { consumed, message }) => {
                    assert_eq!(consumed, 16);
                    assert!(message.contains("Separator is found"), "{message}");
                }
                other => panic!("expected LimitOverrun, got {other:?}"),
            }
            assert_eq!(reader.buffered(), 20);
            // readline turns it into InvalidArgument and drops the long line.
            assert!(matches!(reader.readline().await, Err(Error::InvalidArgument { .. })));
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"xy\n");

            // Not found, and more than the limit buffered.
            write_and_buffer(&lp, &sw, &reader, b"0123456789abcdefghij").await;
            match must(&lp, reader.readuntil(b"\n")).await {
                Err(err @ Error::LimitOverrun { .. }) => {
                    assert!(err.to_string().contains("Separator is not found"), "{err}");
                }
                other => panic!("expected LimitOverrun, got {other:?}"),
            }
            assert!(matches!(reader.readline().await, Err(Error::InvalidArgument { .. })));
            assert_eq!(reader.buffered(), 0);
            sw.write(b"ok\n").unwrap();
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"ok\n");
            shut(server, &lp).await;
        });
    }

    fn read_n_semantics(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            write_and_buffer(&lp, &sw, &reader, b"hello world").await;
            assert_eq!(reader.read(0).await.unwrap(), b"");
            assert_eq!(reader.read(5).await.unwrap(), b"hello");
            assert_eq!(reader.read(100).await.unwrap(), b" world");
            // A read with nothing buffered waits for data.
            let r = reader.clone();
            let pending = lp.create_task(async move { r.read(100).await }).unwrap();
            sleep(&lp, 0.05).await;
            assert!(!pending.done());
            sw.write(b"abcd").unwrap();
            assert_eq!(must(&lp, pending).await.unwrap().unwrap(), b"abcd");
            // A read dropped while waiting takes nothing.
            assert!(timeout(&lp, 0.02, reader.read(10)).await.is_none());
            sw.write(b"xyz").unwrap();
            sw.write_eof();
            assert!(!reader.at_eof());
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"xyz");
            assert!(reader.at_eof());
            assert_eq!(reader.read(5).await.unwrap(), b"");
            assert_eq!(reader.read_to_end().await.unwrap(), b"");
            shut(server, &lp).await;
        });
    }

    fn close_then_wait_closed_item_164(lp) {
        run(lp, |lp| async move {
            // Nothing unread: after wait_closed the reader is at EOF.
            let (server, _side, (reader, writer)) = pair(&lp, 64 * 1024).await;
            writer.close();
            assert!(writer.is_closing());
            must(&lp, writer.wait_closed()).await.unwrap();
            assert!(reader.at_eof());
            assert_eq!(reader.read_to_end().await.unwrap(), b"");
            assert_eq!(reader.read(10).await.unwrap(), b"");
            shut(server, &lp).await;

            // Unread data: wait_closed completes all the same.
            let (server, (_sr, sw), (reader, writer)) = pair(&lp, 64 * 1024).await;
            sw.write(&vec![b'u'; 100_000]).unwrap();
            until(&lp, || reader.buffered() > 0).await;
            writer.close();
            assert!(writer.is_closing());
            must(&lp, writer.wait_closed()).await.unwrap();
            let rest = reader.read_to_end().await.unwrap();
            assert!(!rest.is_empty() && rest.iter().all(|&b| b == b'u'));
            assert!(reader.at_eof());
            assert_eq!(reader.read(10).await.unwrap(), b"");
            shut(server, &lp).await;
        });
    }

    fn connection_lost_error_fails_a_pending_read(lp) {
        run(lp, |lp| async move {
            let (reader, writer) = reset_while_reading(&lp, |r| async move { r.read(100).await }).await;
            // Later reads, drain and wait_closed report it too.
            assert_eq!(reader.read(1).await.unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
            assert_eq!(reader.exception().and_then(|e| e.raw_os_error()), Some(libc::ECONNRESET));
            assert_eq!(writer.drain().await.unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
            assert!(must(&lp, writer.wait_closed()).await.is_err());
        });
    }

    fn write_and_drain_after_close_item_106(lp) {
        run(lp, |lp| async move {
            let seen = capture_exceptions(&lp);
            let (server, _side, (_reader, writer)) = pair(&lp, 64 * 1024).await;
            writer.close();
            writer.write(b"lost").unwrap();
            let err = must(&lp, writer.drain()).await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
            assert!(seen.borrow().is_empty());
            shut(server, &lp).await;
        });
    }

    fn client_callback_failure_item_165(lp) {
        run(lp, |lp| async move {
            let seen = capture_exceptions(&lp);
            let boom = |_r: StreamReader, _w: StreamWriter| async move {
                if _w.can_write_eof() {
                    panic!("boom in the callback");
                }
            };
            let (server, (reader, _writer)) = serve_and_connect(&lp, boom).await;
            until(&lp, || !seen.borrow().is_empty()).await;
            {
                let seen = seen.borrow();
                assert_eq!(seen[0].message, "Unhandled exception in client_connected_cb");
                assert!(matches!(&seen[0].error, Some(Error::Panic(m)) if m == "boom in the callback"));
            }
            // The server closed the connection.
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"");
            shut(server, &lp).await;

            // An error returned is reported the same way; a self-cancellation is not.
            seen.borrow_mut().clear();
            let fails = |_r: StreamReader, w: StreamWriter| async move {
                if w.get_extra_info("peername").is_some() {
                    return Err(Error::runtime(RuntimeKind::Other, "callback failed"));
                }
                Ok(())
            };
            let (server, _conn) = serve_and_connect(&lp, fails).await;
            until(&lp, || !seen.borrow().is_empty()).await;
            assert_eq!(seen.borrow()[0].message, "Unhandled exception in client_connected_cb");
            assert!(matches!(&seen.borrow()[0].error, Some(Error::Runtime { message: m, .. }) if m == "callback failed"));
            shut(server, &lp).await;

            seen.borrow_mut().clear();
            let cancels = |_r: StreamReader, _w: StreamWriter| async move {
                Err::<(), _>(Error::Cancelled)
            };
            let (server, _conn) = serve_and_connect(&lp, cancels).await;
            sleep(&lp, 0.1).await;
            assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
            shut(server, &lp).await;
        });
    }

    fn hundred_clients_write_eof_twice_item_165(lp) {
        run(lp, |lp| async move {
            let seen = capture_exceptions(&lp);
            let echo_all = |reader: StreamReader, writer: StreamWriter| async move {
                let data = reader.read_to_end().await?;
                writer.write(&data)?;
                writer.drain().await?;
                writer.close();
                writer.wait_closed().await
            };
            let server =
                lp.start_server(echo_all, "127.0.0.1:0", ServerOptions::default().backlog(128))
                    .await
                    .unwrap();
            let port = port_of(&server);
            let mut clients = Vec::new();
            for i in 0..100 {
                clients.push(
                    lp.create_task(async move {
                        let (reader, writer) = ringloop::open_connection(
                            ("127.0.0.1",
                            port),
                            ConnectOptions::default(),
                        )
                        .await?;
                        let message = format!("client {i}");
                        writer.write(message.as_bytes())?;
                        writer.write_eof();
                        writer.write_eof();
                        writer.drain().await?;
                        let reply = reader.read_to_end().await?;
                        writer.close();
                        writer.wait_closed().await?;
                        Ok::<_, Error>(reply == message.as_bytes())
                    })
                    .unwrap(),
                );
            }
            for client in clients {
                assert!(must(&lp, client).await.unwrap().unwrap());
            }
            assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
            shut(server, &lp).await;
        });
    }

    fn drain_waits_for_a_slow_peer(lp) {
        run(lp, |lp| async move {
            let (listener, _reader, writer) = connect_to_listener(&lp).await;
            let (high, chunk) = (64 * 1024, 64 * 1024);
            writer.transport().set_write_buffer_limits(Some(high), None).unwrap();
            // Write until drain blocks: the peer reads nothing.
            let mut written = 0usize;
            loop {
                writer.write(&vec![7u8; chunk]).unwrap();
                written += chunk;
                assert!(writer.transport().get_write_buffer_size() <= high + chunk);
                if timeout(&lp, 0.2, writer.drain()).await.is_none() {
                    break;
                }
                assert!(written < 64 << 20, "drain never blocked");
            }
            // It stays pending, and the buffer stays bounded.
            let w = writer.clone();
            let drain = lp.create_task(async move { w.drain().await }).unwrap();
            sleep(&lp, 0.1).await;
            assert!(!drain.done());
            assert!(writer.transport().get_write_buffer_size() <= high + chunk);
            // The peer reads: drain completes.
            let peer = std::thread::spawn(move || read_all(listener));
            must(&lp, drain).await.unwrap().unwrap();
            must(&lp, writer.drain()).await.unwrap();
            writer.close();
            must(&lp, writer.wait_closed()).await.unwrap();
            let got = must(&lp, join(&lp, peer)).await;
            assert_eq!(got, written);
        });
    }

    fn reader_backpressure_pauses_the_transport(lp) {
        run(lp, |lp| async move {
            let (server, (sr, sw), (_cr, cw)) = pair(&lp, 1024).await;
            let total = 1 << 20;
            let data = pattern(total);
            cw.write(&data).unwrap();
            until(&lp, || !sw.transport().is_reading()).await;
            sleep(&lp, 0.05).await;
            // Bounded: at most 2 * limit plus the one chunk that crossed it.
            assert!(sr.buffered() <= 2 * 1024 + 64 * 1024, "{}", sr.buffered());
            assert!(!sw.transport().is_reading());
            let mut got = Vec::new();
            while got.len() < total {
                got.extend(must(&lp, sr.read(4096)).await.unwrap());
            }
            assert!(got == data, "the bytes differ");
            until(&lp, || sw.transport().is_reading()).await;
            must(&lp, cw.drain()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    fn futures_io_traits(lp) {
        run(lp, |lp| async move {
            let server = echo_server(&lp).await;
            let (mut reader, mut writer) = lp
                .open_connection(("127.0.0.1", port_of(&server)), ConnectOptions::default())
                .await
                .unwrap();
            must(&lp, writer.write_all(b"over futures-io\n")).await.unwrap();
            must(&lp, writer.flush()).await.unwrap();
            let mut line = [0u8; 16];
            must(&lp, reader.read_exact(&mut line)).await.unwrap();
            assert_eq!(&line, b"over futures-io\n");
            writer.write_eof();
            let mut rest = Vec::new();
            must(&lp, AsyncReadExt::read_to_end(&mut reader, &mut rest)).await.unwrap();
            assert!(rest.is_empty());
            must(&lp, AsyncWriteExt::close(&mut writer)).await.unwrap();
            assert!(writer.is_closing());
            assert!(writer.write_all(b"late").await.is_err());
            // Nothing left to flush once close() ended the connection (as Framed's close does).
            must(&lp, writer.flush()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    fn dropping_the_last_writer_closes(lp) {
        run(lp, |lp| async move {
            let (server, (sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            let clone = sw.clone();
            sw.write(b"bye").unwrap();
            drop(sw);
            assert!(!clone.is_closing());
            drop(clone);
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"bye");
            until(&lp, || sr.at_eof()).await;
            shut(server, &lp).await;
        });
    }

    fn futures_io_write_backpressure(lp) {
        run(lp, |lp| async move {
            let (listener, _reader, mut writer) = connect_to_listener(&lp).await;
            writer.transport().set_write_buffer_limits(Some(16 * 1024), None).unwrap();
            // write_all goes Pending once the transport pauses the writer.
            let write_all = |mut w: StreamWriter, chunk| async move { w.write_all(chunk).await };
            let written = write_until_pending(&lp, &writer, write_all).await;
            let peer = std::thread::spawn(move || read_all(listener));
            must(&lp, writer.write_all(b"end")).await.unwrap();
            must(&lp, AsyncWriteExt::close(&mut writer)).await.unwrap();
            let got = must(&lp, join(&lp, peer)).await;
            assert!(got >= written + 3);
        });
    }

    // Issue 16: `abort` drops the buffered bytes and closes at once; the peer reads what the
    // kernel had taken, then the end; this side's reader sees EOF; the socket is closed.
    fn abort_drops_the_buffer_and_closes_at_once(lp) {
        run(lp, |lp| async move {
            let (listener, reader, writer) = connect_to_listener(&lp).await;
            let fd = socket_fd(&writer);
            let inode = fd_target(fd).expect("the socket is open");
            let r = reader.clone();
            let pending = lp.create_task(async move { r.read(100).await }).unwrap();
            // More than the kernel takes while the peer does not read: the rest is buffered.
            let total = 32 << 20;
            writer.write(&pattern(total)).unwrap();
            let buffered = writer.transport().get_write_buffer_size();
            assert!(buffered > 0, "nothing buffered to drop");
            writer.abort();
            assert!(writer.is_closing());
            assert_eq!(writer.transport().get_write_buffer_size(), 0, "the buffer is dropped");
            writer.abort(); // idempotent
            must(&lp, writer.wait_closed()).await.unwrap();
            // Readers of the connection see the end.
            assert_eq!(must(&lp, pending).await.unwrap().unwrap(), b"");
            assert!(reader.at_eof());
            assert_eq!(reader.read_to_end().await.unwrap(), b"");
            // Later writes are dropped; drain says the connection is gone.
            writer.write(b"late").unwrap();
            let err = writer.drain().await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
            // The I/O traits' flush too: the buffered bytes were dropped.
            let err = writer.clone().flush().await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            // No fd left: the transport forgot it, and the number no longer names that socket.
            settle(&lp);
            assert!(writer.get_extra_info("socket").is_none());
            assert_ne!(fd_target(fd).as_ref(), Some(&inode), "fd {fd} still open");
            // The peer gets the end without the dropped bytes: EOF, or a reset.
            let peer = std::thread::spawn(move || read_to_close(listener));
            let (got, error) = must(&lp, join(&lp, peer)).await;
            assert!(got <= total - buffered, "got {got} of {total}, {buffered} were dropped");
            if let Some(err) = error {
                assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
            }
        });
    }

    // Issue 16: the server side aborts; the client reads the end (EOF or a reset).
    fn abort_in_a_server_callback(lp) {
        run(lp, |lp| async move {
            let (server, (reader, writer)) = serve_and_connect(&lp, |reader, writer| async move {
                let _ = reader.readline().await?;
                writer.write(b"dropped unless the kernel took it first")?;
                writer.abort();
                Ok(())
            })
            .await;
            writer.write(b"go\n").unwrap();
            match must(&lp, reader.read_to_end()).await {
                Ok(_) => assert!(reader.at_eof()),
                Err(err) => assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}"),
            }
            writer.close();
            let _ = must(&lp, writer.wait_closed()).await;
            shut(server, &lp).await;
        });
    }

    // Issue 16: `read_buf` appends into the buffer's spare capacity without reallocating it;
    // 0 only at EOF.
    fn read_buf_fills_spare_capacity(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 8).await;
            write_and_buffer(&lp, &sw, &reader, b"hello world").await;
            let mut buf = BytesMut::with_capacity(4);
            let (ptr, cap) = (buf.as_ptr(), buf.capacity());
            assert_eq!(must(&lp, reader.read_buf(&mut buf)).await.unwrap(), cap);
            assert_eq!(&buf[..], &b"hello world"[..cap]);
            assert_eq!((buf.as_ptr(), buf.capacity()), (ptr, cap), "no reallocation");
            // Reused: cleared, the same memory is filled again.
            let mut got = buf.to_vec();
            while got.len() < 11 {
                buf.clear();
                let n = must(&lp, reader.read_buf(&mut buf)).await.unwrap();
                assert!(n > 0 && n <= cap, "{n}");
                assert_eq!((buf.as_ptr(), buf.capacity()), (ptr, cap), "no reallocation");
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, b"hello world");
            // Appends after what the buffer holds.
            let mut buf = BytesMut::with_capacity(64);
            buf.extend_from_slice(b">>");
            sw.write(b"abc").unwrap();
            assert_eq!(must(&lp, reader.read_buf(&mut buf)).await.unwrap(), 3);
            assert_eq!(&buf[..], b">>abc");
            // A full buffer gets up to the limit (8 here), growing for it.
            let mut full = BytesMut::new();
            write_and_buffer(&lp, &sw, &reader, &pattern(20)).await;
            assert_eq!(must(&lp, reader.read_buf(&mut full)).await.unwrap(), 8);
            assert_eq!(&full[..], &pattern(8)[..]);
            assert_eq!(reader.buffered(), 12);
            // Waits for data; a future dropped while waiting appends and takes nothing.
            let mut buf = BytesMut::with_capacity(64);
            assert_eq!(must(&lp, reader.read_buf(&mut buf)).await.unwrap(), 12);
            buf.clear();
            assert!(timeout(&lp, 0.05, reader.read_buf(&mut buf)).await.is_none());
            assert!(buf.is_empty());
            sw.write(b"late").unwrap();
            assert_eq!(must(&lp, reader.read_buf(&mut buf)).await.unwrap(), 4);
            assert_eq!(&buf[..], b"late");
            // EOF: 0, the buffer untouched, every time.
            sw.write_eof();
            assert_eq!(must(&lp, reader.read_buf(&mut buf)).await.unwrap(), 0);
            assert_eq!(reader.read_buf(&mut buf).await.unwrap(), 0);
            assert_eq!(&buf[..], b"late");
            assert!(reader.at_eof());
            shut(server, &lp).await;
        });
    }

    // Issue 16: `read_buf` fails with the connection's error (the reader's exception), whether
    // it was waiting when the error came or called after.
    fn read_buf_reports_the_connection_error(lp) {
        run(lp, |lp| async move {
            let read_buf = |r: StreamReader| async move {
                let mut buf = BytesMut::with_capacity(16);
                r.read_buf(&mut buf).await.map(|n| (n, buf))
            };
            let (reader, _writer) = reset_while_reading(&lp, read_buf).await;
            assert!(reader.exception().is_some());
            let mut buf = BytesMut::with_capacity(16);
            let err = reader.read_buf(&mut buf).await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
            assert!(buf.is_empty());
        });
    }

    // Issue 16: `start_server`, `ringloop::start_server` and `start_unix_server` take closures
    // written as a user writes them: no argument types, `Ok(())` without its error type, or
    // a future giving `()`.
    fn start_server_infers_closure_types(lp) {
        run(lp, |lp| async move {
            let server = lp
                .start_server(
                    |reader, writer| async move {
                        let line = reader.readline().await?;
                        writer.write(&line.to_ascii_uppercase())?;
                        writer.drain().await?;
                        writer.close();
                        Ok(())
                    },
                    "127.0.0.1:0",
                    ServerOptions::default(),
                )
                .await
                .unwrap();
            let (reader, writer) = connect_to(&server).await;
            writer.write(b"shout\n").unwrap();
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"SHOUT\n");
            shut(server, &lp).await;

            let server = ringloop::start_server(
                |_reader, writer| async move {
                    writer.write(b"hi").ok();
                    writer.close();
                },
                "127.0.0.1:0",
                ServerOptions::default(),
            )
            .await
            .unwrap();
            let (reader, _writer) = connect_to(&server).await;
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"hi");
            shut(server, &lp).await;

            let name = format!("\0ringloop-streams-infer-{}-{}", std::process::id(), lp.backend());
            let server = lp
                .start_unix_server(
                    |reader, writer| async move {
                        let data = reader.read(100).await?;
                        writer.write(&data)?;
                        writer.close();
                        Ok(())
                    },
                    name.as_str(),
                    UnixServerOptions::default(),
                )
                .await
                .unwrap();
            let (reader, writer) =
                must(&lp, lp.open_unix_connection(name.as_str(), UnixConnectOptions::new()))
                    .await
                    .unwrap();
            writer.write(b"unix").unwrap();
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"unix");
            shut(server, &lp).await;

            let server = ringloop::start_unix_server(
                |_reader, writer| async move { writer.close() },
                format!("{name}-free").as_str(),
                UnixServerOptions::default(),
            )
            .await
            .unwrap();
            shut(server, &lp).await;
        });
    }
}

/// Connects to a plain peer, runs `read` on the reader as a task, resets the peer (RST) while
/// the read waits and checks that the read fails with `ECONNRESET`: the reader and writer.
async fn reset_while_reading<T, Fut>(
    lp: &EventLoop,
    read: impl FnOnce(StreamReader) -> Fut,
) -> (StreamReader, StreamWriter)
where
    T: std::fmt::Debug + 'static,
    Fut: std::future::Future<Output = ringloop::Result<T>> + 'static,
{
    let (listener, reader, writer) = connect_to_listener(lp).await;
    let (peer, _) = listener.accept().unwrap();
    let pending = lp.create_task(read(reader.clone())).unwrap();
    sleep(lp, 0.02).await;
    assert!(!pending.done());
    reset(peer);
    let err = must(lp, pending).await.unwrap().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    (reader, writer)
}

/// The fd of `writer`'s socket, while open.
fn socket_fd(writer: &StreamWriter) -> std::os::fd::RawFd {
    match writer.get_extra_info("socket") {
        Some(ringloop::ExtraInfo::Fd(fd)) => fd,
        other => panic!("no socket fd: {other:?}"),
    }
}

/// What `fd` names now (`socket:[inode]` for a socket), if it is open: the same fd number
/// naming another socket later is told apart.
fn fd_target(fd: std::os::fd::RawFd) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}
