//! What covenant's tests share instead of each test file copying it: free ports,
//! `covenant` processes started and waited for (and killed if a test fails), node
//! identities and temporary data directories, TLS clients built from a `covenant dev`
//! directory's certificates, and a node served in-process.
//!
//! A dev-dependency only (`publish = false`). Helpers that run the `covenant` binary
//! take its path as a parameter: `env!("CARGO_BIN_EXE_covenant")` exists only inside
//! the CLI crate's own tests.

#![forbid(unsafe_code)]

pub mod http;
pub mod identity;
pub mod node;
pub mod process;

pub use http::Requests;
pub use identity::{
    dev_client, dev_identity, pem_identity, service_and_node, service_cert, Fixture,
};
pub use node::{serve, Serving};
pub use process::{
    dev, dev_network, free_port, free_ports, ok, pid_of, printed_since_ready, run, start_and_wait,
    stop, term, text, Dev, Reaper,
};
