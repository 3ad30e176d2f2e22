//! Values that must be unique within a scope: disk names and devices in a
//! VM, static addresses on a net, hostnames.

use std::collections::HashMap;
use std::hash::Hash;

use crate::decode::Decoder;
use crate::error::Pos;

/// Values that must be unique in a scope, each remembered with the key path
/// and position of the entry that used it first.
pub(super) struct Unique<K> {
    seen: HashMap<K, (String, Pos)>,
}

impl<K> Default for Unique<K> {
    fn default() -> Self {
        Self { seen: HashMap::new() }
    }
}

impl<K: Eq + Hash + Clone> Unique<K> {
    /// Claims `value` for `owner` (the key path of the entry using it),
    /// written at `pos`. If an earlier entry has it, reports
    /// `message(earlier entry's path, its position)` at `pos` under `path`,
    /// keeps the earlier claim and returns `false`.
    pub(super) fn claim(
        &mut self,
        d: &mut Decoder,
        value: &K,
        owner: &str,
        pos: Pos,
        path: &str,
        message: impl FnOnce(&str, Pos) -> String,
    ) -> bool {
        if let Some((other, other_pos)) = self.seen.get(value) {
            d.report(Some(pos), path, message(other, *other_pos));
            false
        } else {
            self.seen.insert(value.clone(), (owner.to_owned(), pos));
            true
        }
    }
}

/// The message for a `value` used twice in one VM, `what` naming its kind:
/// "expected a unique disk name in this VM, found `root`, also used by P (at L:C)".
pub(super) fn used_twice_in_vm<'a>(what: &'a str, value: &'a str) -> impl FnOnce(&str, Pos) -> String + 'a {
    move |other, pos| format!("expected a unique {what} in this VM, found `{value}`, also used by {other} (at {pos})")
}
