//! Sockets a run is given from outside its sandbox, and how wrun's processes talk: the
//! published addresses (`-p`) bound in the host's network namespace, the outbound connect
//! broker (`--allow-outbound`), the loopback of a native container's new network namespace,
//! and the message packets the pool and its sandboxes exchange.

pub mod broker;
mod listen;
pub mod loopback;
pub mod packet;

pub use listen::{listen, PublishError};
