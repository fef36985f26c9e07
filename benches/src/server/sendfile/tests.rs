//! Every sendfile server, in a thread of the test: several clients at once each get exactly
//! the file; an empty file gives an empty transfer.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::sendfile::ServedFile;
use crate::server::Workload;

/// Starts `which` serving `file` in a thread (left running: the test process ends it).
fn start(which: Impl, file: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ready, started) = mpsc::channel();
    let file = file.to_path_buf();
    std::thread::spawn(move || {
        let announce = move || ready.send(()).map_err(|e| e.to_string());
        let result = serve(which, listener, &file, announce);
        panic!("{which} stopped: {result:?}");
    });
    started.recv_timeout(Duration::from_secs(10)).expect("the server started");
    port
}

/// Everything a new connection to `port` receives until EOF.
fn fetch(port: u16) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn every_server_sends_the_whole_file_to_each_of_several_clients() {
    // Not a multiple of a page or of any chunk size.
    let file = ServedFile::create((3 << 20) + 4097).unwrap();
    let want = std::fs::read(&file.path).unwrap();
    for which in Workload::Sendfile.impls() {
        let port = start(which, &file.path);
        let clients: Vec<_> = (0..4).map(|_| std::thread::spawn(move || fetch(port))).collect();
        for client in clients {
            let got = client.join().unwrap();
            assert!(got == want, "{which}: {} bytes, not the file's {}", got.len(), want.len());
        }
    }
}

#[test]
fn an_empty_file_is_an_empty_transfer() {
    let file = ServedFile::create(0).unwrap();
    for which in Workload::Sendfile.impls() {
        let port = start(which, &file.path);
        assert_eq!(fetch(port), b"", "{which}");
    }
}
