//! The small worker pool of `backup` and `recover`: files are compressed
//! (or decompressed and checked) on several cores at once, as pgBackRest's
//! process-max does, while the results keep the survey's order so the
//! manifest stays deterministic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Result;

/// At most this many workers: beyond it the disk, not the codec, is the limit.
const MAX_WORKERS: usize = 4;

/// Workers for this host: its cores, at most [`MAX_WORKERS`].
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
}

/// Runs `f` on every item on up to `workers` threads, starting them in
/// `order` (indices into `items`: the largest file first, so the longest
/// one does not start last); the results come back in `items`' order. After
/// the first error no new item is started, and that error is returned.
pub fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    order: &[usize],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        break;
                    };
                    match f(&items[i]) {
                        Ok(r) => *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r),
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect())
}

/// `0..n` ordered by `size` (largest first; ties in their own order).
pub fn largest_first(n: usize, size: impl Fn(usize) -> u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(i)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_whatever_order_they_ran_in() {
        let items: Vec<u64> = (0..50).collect();
        let order = largest_first(items.len(), |i| items[i] % 7);
        let out = map_ordered(&items, &order, 3, |x| Ok(x * 2)).unwrap();
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(order[0], 6, "the largest (6 % 7) first, the first of its ties");
    }

    #[test]
    fn the_first_error_stops_new_items_and_is_returned() {
        let ran = AtomicUsize::new(0);
        let items: Vec<u32> = (0..1000).collect();
        let order: Vec<usize> = (0..items.len()).collect();
        let failing = AtomicBool::new(false);
        let r = map_ordered(&items, &order, 2, |&x| {
            ran.fetch_add(1, Ordering::SeqCst);
            if x == 3 {
                failing.store(true, Ordering::SeqCst);
                anyhow::bail!("item {x} failed");
            }
            // Slow after the failure, so that the other worker (however the
            // threads are scheduled) cannot run them all before it stops.
            if failing.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(x)
        });
        assert_eq!(r.unwrap_err().to_string(), "item 3 failed");
        assert!(ran.load(Ordering::SeqCst) < 1000);
    }
}
