//! Reaching a guest: SSH (sessions, commands, copies, the jump through a
//! hypervisor host), the stages of a boot, the serial console and its
//! watchdog, and the transcript of a test's commands.

pub(crate) mod boot;
pub(crate) mod console;
pub mod ssh;
pub mod transcript;
