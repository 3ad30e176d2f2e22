//! The process's exit: no thread is inside libssh2 while the exit handlers
//! run.
//!
//! libssh2 initialises OpenSSL, and OpenSSL registers an exit handler that
//! tears itself down. A thread still inside libssh2 then (a tunnel's pump
//! sending EOF, a test body that outlived its timeout) calls into freed
//! OpenSSL state and the process dies of SIGSEGV after its work is done.
//! So the first SSH session registers [`on_exit`]'s handler: exit handlers
//! run in the reverse order of registration, so it runs before OpenSSL's.
//! It says "shutting down" (SSH loops return at their next step), runs the
//! stoppers registered with [`on_exit`] (the tunnels' pumps) and waits for
//! every [`InFlight`] SSH call to return, for at most [`EXIT_BOUND`].
//!
//! Owners still join their threads themselves (a dropped tunnel joins its
//! pump): the handler is the net for values never dropped (statics, leaks,
//! a test binary's suites).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the exit handler waits, in all.
pub(crate) const EXIT_BOUND: Duration = Duration::from_secs(2);

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static RETURNED: Condvar = Condvar::new();
/// Stops a kind of thread within the time it is given; returns how many still run.
type Stopper = fn(Duration) -> usize;

static STOPPERS: Mutex<Vec<(&str, Stopper)>> = Mutex::new(Vec::new());

/// Whether the process is exiting: SSH loops stop at their next step.
pub(crate) fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// One SSH call in progress; the exit handler waits for it to return.
#[derive(Debug)]
pub(crate) struct InFlight(());

impl InFlight {
    /// Counts a call in (registering the exit handler if needed).
    pub(crate) fn enter() -> InFlight {
        arm();
        *IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        RETURNED.notify_all();
    }
}

/// Runs `stop` (once per `name`) at exit, before OpenSSL is torn down; it
/// gets the time left and returns how many of its threads still run after it.
pub(crate) fn on_exit(name: &'static str, stop: Stopper) {
    arm();
    let mut list = STOPPERS.lock().unwrap_or_else(|p| p.into_inner());
    if !list.iter().any(|(n, _)| *n == name) {
        list.push((name, stop));
    }
}

fn arm() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `at_exit` is an `extern "C" fn()` that cannot unwind (its
        // body runs under `catch_unwind`), registered once.
        #[allow(unsafe_code)]
        unsafe {
            dtor::at_binary_exit(at_exit);
        }
    });
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(stop_everything);
}

fn stop_everything() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + EXIT_BOUND;
    let stoppers = STOPPERS.lock().map(|l| l.clone()).unwrap_or_default();
    let mut left: usize = stoppers
        .iter()
        .map(|(_, stop)| stop(deadline.saturating_duration_since(Instant::now())))
        .sum();
    let mut n = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    while *n > 0 {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        n = RETURNED.wait_timeout(n, wait).unwrap_or_else(|p| p.into_inner()).0;
    }
    left += *n;
    if left > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "lago: {left} SSH call(s) or tunnel(s) still running at exit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_waits_for_calls_in_flight_and_says_shutting_down() {
        fn none_left(_: Duration) -> usize {
            0
        }
        on_exit("test", none_left);
        on_exit("test", none_left);
        assert_eq!(STOPPERS.lock().unwrap().iter().filter(|(n, _)| *n == "test").count(), 1);
        let call = InFlight::enter();
        let t = std::thread::spawn(move || {
            // An SSH loop sees the flag at its next step and returns.
            while !shutting_down() {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(50));
            drop(call);
        });
        let start = Instant::now();
        stop_everything();
        assert!(shutting_down());
        assert_eq!(
            *IN_FLIGHT.lock().unwrap(),
            0,
            "the handler returned before the call did"
        );
        assert!(start.elapsed() < EXIT_BOUND, "{:?}", start.elapsed());
        t.join().unwrap();
        SHUTTING_DOWN.store(false, Ordering::SeqCst);
    }
}
