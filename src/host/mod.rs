//! What lives on this host: the workdir (its whole layout), the state saved
//! there, subnet leases, who owns an environment, keys, disk images, seeds,
//! and the template store.

pub mod image;
pub mod keys;
pub mod lease;
pub mod owner;
pub mod seed;
pub(crate) mod state;
pub mod store;
pub(crate) mod workdir;
