//! The ground floor: helpers that know no lago type. Host tools run with
//! bounds ([`cmd`]), file locks, log sinks, threads for many items at once,
//! names and text, random tokens, and the process's exit.

pub mod cmd;
pub(crate) mod exit;
pub(crate) mod lock;
pub(crate) mod logging;
pub(crate) mod parallel;
pub(crate) mod random;
pub mod text;
