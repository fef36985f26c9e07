//! Every server, each in a thread of the test on a port of its own, driven by a plain blocking
//! client: the echo servers give back exactly what they got (in pieces, pipelined, while the
//! client reads slowly) and survive resets; the HTTP servers answer pipelined and split
//! requests with valid responses.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::http::{response_len, REQUEST};

/// Starts `which` in a thread (left running: the test process ends it) and returns its port.
fn start(workload: Workload, which: Impl) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ready, started) = mpsc::channel();
    std::thread::spawn(move || {
        let announce = move || ready.send(()).map_err(|e| e.to_string());
        let result = run(workload, which, listener, announce);
        panic!("{which} stopped: {result:?}");
    });
    started.recv_timeout(Duration::from_secs(10)).expect("the server started");
    port
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Writes `data` in uneven pieces from a thread while reading the echo slowly here.
fn echo_round_trip(port: u16, data: Vec<u8>) {
    let stream = connect(port);
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let writing = std::thread::spawn(move || {
        for piece in sent.chunks(7919) {
            writer.write_all(piece).unwrap();
        }
    });
    let (mut got, mut buf, mut reader) = (Vec::new(), [0u8; 3000], stream);
    while got.len() < data.len() {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {} of {} bytes", got.len(), data.len());
        got.extend_from_slice(&buf[..n]);
    }
    writing.join().unwrap();
    assert!(got == data, "the echo differs from what was sent");
}

/// Connections that go away while the server is busy with them.
fn abandon(port: u16) {
    for i in 0..30 {
        let mut stream = connect(port);
        let _ = stream.write_all(&vec![i as u8; if i % 2 == 0 { 10 } else { 200_000 }]);
        match i % 3 {
            0 => crate::sys::reset_on_close(stream.as_raw_fd()).unwrap(),
            1 => stream.shutdown(Shutdown::Write).unwrap(),
            _ => {}
        }
    }
}

#[test]
fn echo_servers_echo_exactly_and_survive_resets() {
    let mut servers = Workload::Echo.impls();
    let variants = [
        "raw-uring-max-no-fixed-files",
        "raw-uring-max-no-multishot",
        "raw-uring-max-with-bundle",
        "raw-uring-max-no-multishot-no-link",
        "raw-uring-max-no-multishot-no-skip-no-fixed-files",
    ];
    for variant in variants {
        servers.push(Impl::parse(variant, Workload::Echo).unwrap());
    }
    servers.push(
        Impl::parse(
            "raw-uring-max-no-multishot-with-fixed-buffers-with-poll-first",
            Workload::Echo,
        )
        .unwrap(),
    );
    for which in servers {
        let port = start(Workload::Echo, which);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        echo_round_trip(port, data);
        abandon(port);
        echo_round_trip(port, b"still there".to_vec());
    }
}

#[test]
fn http_servers_answer_pipelined_and_split_requests() {
    for which in Workload::Http.impls() {
        let port = start(Workload::Http, which);
        let mut stream = connect(port);
        let requests = REQUEST.repeat(5);
        let (first, rest) = requests.split_at(REQUEST.len() + 9);
        stream.write_all(first).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        stream.write_all(rest).unwrap();
        // Five whole valid responses (hyper's carry a `date` header: not `RESPONSE`'s length).
        let (mut got, mut buf, mut at) = (Vec::new(), [0u8; 4096], 0);
        for _ in 0..5 {
            loop {
                if let Some(len) = response_len(&got[at..]).unwrap() {
                    at += len;
                    break;
                }
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "{which}: EOF");
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(at, got.len(), "{which}: more than five responses");
        // Not HTTP/1.1: the server hangs up (hyper first answers 400 Bad Request).
        let mut stream = connect(port);
        stream.write_all(b"hello\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let hyper = [Impl::HyperUring, Impl::HyperEpoll, Impl::TokioHyper].contains(&which);
        match hyper {
            true => assert!(answer.starts_with(b"HTTP/1.1 400 "), "{which}: {answer:?}"),
            false => assert!(answer.is_empty(), "{which} answered nonsense"),
        }
    }
}

#[test]
fn names_parse_per_workload() {
    for workload in [Workload::Echo, Workload::Http] {
        for which in workload.impls() {
            assert_eq!(Impl::parse(&which.to_string(), workload), Ok(which));
        }
    }
    let t = Techniques { skip: false, ..Techniques::MAX };
    assert_eq!(Impl::parse("raw-uring-max-no-skip", Workload::Echo), Ok(Impl::RawUringMax(t)));
    assert!(Impl::parse("raw-uring-max", Workload::Http).is_err());
    assert!(Impl::parse("ringloop-streams-uring", Workload::Echo).is_err());
    assert!(Impl::parse("nginx", Workload::Http).is_err());
}
