//! More than one core: `spawn_loops` with `reuse_port_listeners`, on every backend. Four loops
//! (more than this machine's cores) serve one port; every connection is served by exactly one
//! of them and every loop serves some; results come back through `join` and
//! `run_coroutine_threadsafe`.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use ringloop::{
    Address, Backend, LoopSpawner, ServerOptions, Shutdown, StreamReader, StreamWriter,
};
use uring_tests::backend_tests;

/// How many loops serve.
const LOOPS: usize = 4;
/// How many connections the clients make: with the kernel's hash spreading them evenly, a
/// loop gets none with probability (3/4)^256.
const CONNECTIONS: usize = 256;

/// Starts [`LOOPS`] loops on `backend`, each serving its listener until `shutdown`: every
/// connection is sent the loop's index, then closed. Each loop returns how many it served.
fn start(
    backend: Backend,
    shutdown: &Shutdown,
) -> (ringloop::LoopThreads<ringloop::Result<usize>>, u16) {
    let listeners = ringloop::reuse_port_listeners("127.0.0.1:0".parse().unwrap(), LOOPS)
        .expect("reuse_port_listeners");
    let port = listeners[0].local_addr().unwrap().as_socket().unwrap().port();
    for listener in &listeners {
        assert_eq!(listener.local_addr().unwrap().as_socket().unwrap().port(), port);
    }
    let stop = shutdown.clone();
    let loops = LoopSpawner::new()
        .backend(backend)
        .name("served")
        .spawn(listeners.into_iter().enumerate(), move |(index, sock)| {
            let shutdown = stop.clone();
            async move {
                let lp = ringloop::get_running_loop()?;
                let served = std::rc::Rc::new(std::cell::Cell::new(0));
                let count = served.clone();
                let tag = move |_: StreamReader, writer: StreamWriter| {
                    count.set(count.get() + 1);
                    async move { writer.write(&[index as u8]) }
                };
                let options = ServerOptions::default().sock(sock);
                let server = lp.start_server(tag, Address::NONE, options).await?;
                server.serve_until(&shutdown, 5.0).await?;
                Ok(served.get())
            }
        })
        .expect("spawn");
    (loops, port)
}

backend_tests! {
    fn every_connection_is_served_by_exactly_one_of_four_loops(lp) {
        let shutdown = Shutdown::new();
        let (loops, port) = start(lp.backend(), &shutdown);
        assert_eq!(loops.len(), LOOPS);
        // Connections one at a time, each from a new source port: each gets one tag, then EOF.
        let mut per_loop = [0usize; LOOPS];
        for i in 0..CONNECTIONS {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(reply.len(), 1, "connection {i}: served {} times", reply.len());
            per_loop[reply[0] as usize] += 1;
        }
        shutdown.request();
        let served: Vec<usize> = loops
            .join()
            .into_iter()
            .map(|r| r.expect("the loop thread").expect("the loop's main"))
            .collect();
        assert_eq!(served, per_loop, "what the loops counted and the clients saw");
        assert_eq!(served.iter().sum::<usize>(), CONNECTIONS);
        assert!(served.iter().all(|&n| n > 0), "a loop served no connection: {served:?}");
    }

    fn a_value_comes_back_from_each_loop_while_it_runs(lp) {
        let shutdown = Shutdown::new();
        let (loops, _) = start(lp.backend(), &shutdown);
        for (index, handle) in loops.handles().iter().enumerate() {
            let name = handle
                .run_coroutine_threadsafe(async { std::thread::current().name().map(String::from) })
                .expect("run_coroutine_threadsafe")
                .wait()
                .expect("the coroutine's result");
            assert_eq!(name, Some(format!("served-{index}")));
        }
        shutdown.request();
        for result in loops.join() {
            assert_eq!(result.unwrap().unwrap(), 0);
        }
    }

    fn a_stopped_loop_reports_it_and_a_panic_is_a_panic_error(lp) {
        let loops = LoopSpawner::new()
            .backend(lp.backend())
            .spawn(0..2, |index| async move {
                if index == 1 {
                    uring_tests::quiet_panic("main panicked");
                }
                ringloop::sleep(60.0).await
            })
            .expect("spawn");
        loops.handles()[0].stop().expect("stop");
        let results = loops.join();
        assert!(matches!(results[0], Err(ringloop::Error::Runtime { .. })), "{:?}", results[0]);
        assert!(
            matches!(&results[1], Err(ringloop::Error::Panic(m)) if m.contains("main panicked")),
            "{:?}",
            results[1]
        );
    }
}

#[test]
fn reuse_port_listeners_refuses_zero() {
    let err = ringloop::reuse_port_listeners("127.0.0.1:0".parse().unwrap(), 0).unwrap_err();
    assert!(matches!(err, ringloop::Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn a_loop_that_cannot_be_created_fails_the_spawn() {
    if cfg!(feature = "fallback") {
        return uring_tests::skipped(
            "a_loop_that_cannot_be_created_fails_the_spawn: epoll is built in",
        );
    }
    let spawned = LoopSpawner::new().backend(Backend::Epoll).spawn(0..3, |_| async {});
    assert!(spawned.is_err(), "epoll is not built in, yet the loops started");
}
