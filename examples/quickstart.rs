//! README's first server: echoes lines on 127.0.0.1:8888 (or the address given as the first
//! argument) until Ctrl-C or SIGTERM.
use ringloop::{start_server, ServerOptions};

fn main() -> ringloop::Result<()> {
    ringloop::run(async {
        let address = std::env::args().nth(1).unwrap_or("127.0.0.1:8888".into());
        let server = start_server(
            |reader, writer| async move {
                loop {
                    let line = reader.readline().await?;
                    if line.is_empty() {
                        return Ok(()); // the client closed the connection
                    }
                    writer.write(&line)?;
                    writer.drain().await?;
                }
            },
            &address,
            ServerOptions::new(),
        )
        .await?;
        println!("serving on {address}");
        server.serve_until_signal(5.0).await.map(drop) // on Ctrl-C: 5 s to finish, then exit
    })?
}
