//! Looking after the host as a whole: sweeping what crashed runs left
//! ([`gc`]) and saying what the host lacks for VMs ([`doctor`]).

pub mod doctor;
pub mod gc;
