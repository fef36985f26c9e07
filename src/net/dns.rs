//! Name resolution: `getaddrinfo` and `getnameinfo` (STUB: being written).
