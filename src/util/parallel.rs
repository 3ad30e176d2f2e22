//! Work on several items at once: a thread each, every result kept, and a
//! panic caught as its own item's failure (the others go on).

/// Runs `work` on every item at once, each on a thread of its own, and
/// returns each item's name with what its work returned, or the text of its
/// panic, in the items' order.
pub(crate) fn each<T: Sync, R: Send>(
    items: &[T],
    name: impl Fn(&T) -> String,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<(String, Result<R, String>)> {
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|it| (name(it), s.spawn(move || work(it)))).collect();
        handles
            .into_iter()
            .map(|(n, h)| (n, h.join().map_err(|p| panic_text(p.as_ref()))))
            .collect()
    })
}

/// The text of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_runs_and_a_panic_is_its_own() {
        let got = super::each(
            &[1, 2, 3],
            |n| format!("n{n}"),
            |n| if *n == 2 { panic!("two") } else { n * 10 },
        );
        assert_eq!(
            got,
            [
                ("n1".to_owned(), Ok(10)),
                ("n2".to_owned(), Err("two".to_owned())),
                ("n3".to_owned(), Ok(30))
            ]
        );
    }
}
