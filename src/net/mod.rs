//! Networking: name resolution, connections and the `sock_*` socket calls.

pub mod accepted;
pub mod address;
pub mod connect;
pub mod datagram;
pub mod dns;
pub(crate) mod sendfile;
pub mod sock;
pub(crate) mod staggered;
pub mod unix;
