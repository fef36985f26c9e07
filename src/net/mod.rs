//! Networking: name resolution (and, as they land, connections, servers and socket ops).

pub mod connect;
pub mod dns;
mod staggered;
pub mod unix;
