//! Pieces shared by the updater's broker-driven tests.

use schemas::EventKind;

/// A deterministic stream: `n` events over `users` users named
/// `{user_prefix}{n}`, items of the model (rows 0..200) and a few it does not
/// know (`new0`..`new2`).
pub fn stream(user_prefix: &str, n: usize, users: usize, seed: u64) -> Vec<(String, String, EventKind)> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = format!("{user_prefix}{}", x % users as u64);
            let item = if (x >> 20).is_multiple_of(10) {
                format!("new{}", (x >> 24) % 3)
            } else {
                model::synthetic::item_id(((x >> 30) % 200) as usize)
            };
            let kind = match (x >> 40) % 30 {
                0 => EventKind::Transaction,
                1 | 2 => EventKind::AddToCart,
                _ => EventKind::View,
            };
            (u, item, kind)
        })
        .collect()
}
