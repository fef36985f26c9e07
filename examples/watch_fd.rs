//! Watch a file descriptor for read events: the asyncio documentation's example, ported.
//! A reader registered with [`EventLoop::add_reader`] on one end of a socketpair waits for
//! data; a callback scheduled with `call_soon` sends `abc` from the other end. The reader
//! prints `Received: abc`, unregisters itself and stops the loop; then the sockets and the
//! loop are closed.
//!
//! Run it with `cargo run --example watch_fd`, or on the epoll backend with
//! `RINGLOOP_BACKEND=epoll cargo run --features fallback --example watch_fd`.
//!
//! [`EventLoop::add_reader`]: ringloop::EventLoop::add_reader

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::EventLoop;

mod support;

/// The first error met inside a callback (callbacks cannot return one).
type ErrorSlot = Rc<RefCell<Option<String>>>;

fn run(event_loop: &EventLoop) -> Result<(), String> {
    // Create a pair of connected file descriptors.
    let (rsock, wsock) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let rsock = Rc::new(rsock);
    let rfd = rsock.as_raw_fd();
    let error: ErrorSlot = Rc::new(RefCell::new(None));

    let reader = {
        let (event_loop, rsock, error) = (event_loop.clone(), rsock.clone(), error.clone());
        move || {
            let mut data = [0u8; 100];
            let received = (&*rsock).read(&mut data).map_err(|e| format!("recv: {e}"));
            let printed = received.and_then(|n| {
                let text = String::from_utf8_lossy(&data[..n]);
                writeln!(io::stdout(), "Received: {text}")
                    .map_err(|e| format!("writing to stdout: {e}"))
            });
            if let Err(message) = printed {
                error.borrow_mut().get_or_insert(message);
            }
            // We are done: unregister the file descriptor.
            event_loop.remove_reader(rfd);
            // Stop the event loop.
            event_loop.stop();
        }
    };

    // Register the file descriptor for read event.
    event_loop.add_reader(rfd, reader).map_err(|e| format!("add_reader: {e}"))?;

    // Simulate the reception of data from the network.
    {
        let (event_loop2, error) = (event_loop.clone(), error.clone());
        event_loop
            .call_soon(move || {
                if let Err(e) = (&wsock).write_all(b"abc") {
                    error.borrow_mut().get_or_insert(format!("send: {e}"));
                    event_loop2.stop();
                }
            })
            .map_err(|e| format!("call_soon: {e}"))?;
    }

    // Run the event loop.
    let result = event_loop.run_forever().map_err(|e| format!("run_forever: {e}"));
    let failed = error.borrow_mut().take();
    // The sockets close when `rsock` (and the callbacks holding it) and `wsock` are dropped.
    result.and(failed.map_or(Ok(()), Err))
}

fn main() -> ExitCode {
    support::run_example("watch_fd", EventLoop::new, run)
}
