//! Sockets a run is given from outside its sandbox, and how wrun's processes talk: the
//! published addresses (`-p`) bound in the host's network namespace, the outbound connect
//! broker (`--allow-outbound`), and the message packets the pool and its sandboxes exchange.

pub mod broker;
mod listen;
pub mod packet;

pub use listen::{listen, PublishError};
