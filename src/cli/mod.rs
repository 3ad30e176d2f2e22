//! What the `lago` command shows, and how it finds the environment: output
//! formats ([`format`](mod@format)), the tables of `status`, `validate`, `gc` and
//! `template list` ([`tables`]), workdir discovery and the preview of an
//! init file ([`discover`]). The binary (`src/bin/lago/`) only parses
//! arguments and calls one function per command; everything here is
//! reachable (and tested) from Rust too.

pub mod discover;
pub mod format;
pub mod tables;

pub use discover::{Preview, discover_workdir, preview};
pub use format::{Format, flat, render};
pub use tables::*;
