//! Transports: one implementation over the driver for both backends (issue 3, in progress:
//! the write buffer and its flow control land first; the stream transport follows).
// Used by the stream transport, which lands with the socket ops.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod flow_control;
