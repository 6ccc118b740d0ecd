//! Where the target writer's types used to live, kept so that `apply::...` paths
//! of the command line and the tests go on resolving: the connection is
//! [`crate::conn`], the target (standalone or cluster) [`crate::target`].

pub use crate::conn::{ApplyError, ApplyOptions, ClientIdentity, Position};
