//! The `lockstep` binary: argument parsing and glue over the library crates.
fn main() {}
