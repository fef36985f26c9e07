//! The streams API over Unix sockets: `open_unix_connection` and `start_unix_server`.

use super::{
    client_protocol, reader_and_writer, ClientConnected, StreamReader, StreamWriter, DEFAULT_LIMIT,
};
use crate::error::Result;
use crate::event_loop::EventLoop;
use crate::net::unix::{UnixConnectOptions, UnixPath};
use crate::server::{Server, UnixServerOptions};

impl EventLoop {
    /// Connects to the Unix socket at `path` and returns the connection's reader and writer
    /// (asyncio's `open_unix_connection`):
    /// [`create_unix_connection`](Self::create_unix_connection) with a stream protocol, the
    /// reader's limit [`DEFAULT_LIMIT`].
    pub async fn open_unix_connection(
        &self,
        path: impl Into<UnixPath>,
        options: UnixConnectOptions,
    ) -> Result<(StreamReader, StreamWriter)> {
        self.open_unix_connection_with_limit(path, DEFAULT_LIMIT, options).await
    }

    /// [`open_unix_connection`](Self::open_unix_connection) with the reader's buffer limit
    /// (asyncio's `limit=`); `Error::InvalidArgument` for 0.
    pub async fn open_unix_connection_with_limit(
        &self,
        path: impl Into<UnixPath>,
        limit: usize,
        options: UnixConnectOptions,
    ) -> Result<(StreamReader, StreamWriter)> {
        let (state, protocol) = client_protocol(limit)?;
        let (transport, _) = self.create_unix_connection(move || protocol, path, options).await?;
        Ok(reader_and_writer(state, transport))
    }

    /// Starts a Unix socket server whose every connection runs `client_connected(reader,
    /// writer)`'s future as a task (asyncio's `start_unix_server`):
    /// [`create_unix_server`](Self::create_unix_server) with a stream protocol, as
    /// [`start_server`](Self::start_server) does over TCP.
    ///
    /// ```
    /// use ringloop::{UnixConnectOptions, UnixServerOptions};
    ///
    /// let reply = ringloop::run(async {
    ///     let lp = ringloop::get_running_loop()?;
    ///     // An abstract name: no file to clean up.
    ///     let name = format!("\0ringloop-streams-doc-{}", std::process::id());
    ///     // The callback inline: its argument types are inferred.
    ///     let options = UnixServerOptions::new();
    ///     let server = lp
    ///         .start_unix_server(
    ///             |reader, writer| async move {
    ///                 let line = reader.readline().await?;
    ///                 writer.write(&line)?;
    ///                 writer.close();
    ///                 writer.wait_closed().await
    ///             },
    ///             name.as_str(),
    ///             options,
    ///         )
    ///         .await?;
    ///     let (reader, writer) =
    ///         lp.open_unix_connection(name.as_str(), UnixConnectOptions::new()).await?;
    ///     writer.write(b"hello\n")?;
    ///     let reply = reader.readline().await?;
    ///     writer.close();
    ///     server.close();
    ///     server.wait_closed().await;
    ///     Ok::<_, ringloop::Error>(reply)
    /// })??;
    /// assert_eq!(reply, b"hello\n");
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn start_unix_server<F: ClientConnected>(
        &self,
        client_connected: F,
        path: impl Into<UnixPath>,
        options: UnixServerOptions,
    ) -> Result<Server> {
        self.start_unix_server_with_limit(client_connected, path, DEFAULT_LIMIT, options).await
    }

    /// [`start_unix_server`](Self::start_unix_server) with the readers' buffer limit
    /// (asyncio's `limit=`); `Error::InvalidArgument` for 0.
    pub async fn start_unix_server_with_limit<F: ClientConnected>(
        &self,
        client_connected: F,
        path: impl Into<UnixPath>,
        limit: usize,
        options: UnixServerOptions,
    ) -> Result<Server> {
        let factory = self.server_protocol_factory(client_connected, limit)?;
        self.create_unix_server(factory, path, options).await
    }
}

/// [`EventLoop::open_unix_connection`] on the running loop.
pub async fn open_unix_connection(
    path: impl Into<UnixPath>,
    options: UnixConnectOptions,
) -> Result<(StreamReader, StreamWriter)> {
    crate::get_running_loop()?.open_unix_connection(path, options).await
}

/// [`EventLoop::start_unix_server`] on the running loop.
pub async fn start_unix_server<F: ClientConnected>(
    client_connected: F,
    path: impl Into<UnixPath>,
    options: UnixServerOptions,
) -> Result<Server> {
    crate::get_running_loop()?.start_unix_server(client_connected, path, options).await
}
