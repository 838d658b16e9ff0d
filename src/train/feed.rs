//! The training feed: a producer thread makes items (training batches: rows read from the
//! pack, cropped, flipped, with their colour shifts) in order ahead of the consumer (the
//! engine), holding at most `depth` finished ones, so reading and cropping overlap the
//! engine's work while memory stays bounded whatever the dataset's size. Making one batch is
//! itself spread over the rayon pool.

use std::ops::ControlFlow;
use std::sync::mpsc::sync_channel;

use crate::error::Result;

/// Batches kept ready ahead of the engine.
pub const DEPTH: usize = 3;

/// Makes `make(job)` for every job on a producer thread and hands the results, in order, to
/// `consume`; stops early when `consume` breaks (returning its value) or an error occurs.
pub fn prefetch<J, T, R>(
    jobs: Vec<J>,
    depth: usize,
    make: impl Fn(J) -> Result<T> + Sync,
    mut consume: impl FnMut(T) -> Result<ControlFlow<R>>,
) -> Result<Option<R>>
where
    J: Send,
    T: Send,
{
    let (tx, rx) = sync_channel::<Result<T>>(depth.max(1) - 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for job in jobs {
                let item = make(job);
                let failed = item.is_err();
                // A closed channel means the consumer stopped: nothing more is wanted.
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
            drop(tx);
        });
        let result = (|| {
            for item in rx.iter() {
                if let ControlFlow::Break(r) = consume(item?)? {
                    return Ok(Some(r));
                }
            }
            Ok(None)
        })();
        drop(rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_producer_stays_at_most_depth_items_ahead_and_order_is_kept() {
        let made = AtomicUsize::new(0);
        let (mut consumed, mut most_ahead) = (0usize, 0usize);
        let got = prefetch(
            (0..40).collect(),
            DEPTH,
            |j: usize| {
                made.fetch_add(1, Ordering::SeqCst);
                Ok(j)
            },
            |j| {
                assert_eq!(j, consumed, "out of order");
                std::thread::sleep(std::time::Duration::from_millis(2));
                consumed += 1;
                most_ahead = most_ahead.max(made.load(Ordering::SeqCst) - consumed);
                Ok(ControlFlow::<()>::Continue(()))
            },
        )
        .unwrap();
        assert_eq!((got, consumed), (None, 40));
        // `depth` finished items wait in the channel, one more is being made or handed over.
        assert!(most_ahead <= DEPTH + 1, "{most_ahead} items ahead");
        assert!(
            most_ahead >= DEPTH - 1,
            "no prefetching: {most_ahead} ahead"
        );
    }

    #[test]
    fn a_break_or_an_error_stops_the_producer() {
        let made = AtomicUsize::new(0);
        let r = prefetch(
            (0..1000).collect(),
            2,
            |j: usize| {
                made.fetch_add(1, Ordering::SeqCst);
                Ok(j)
            },
            |j| {
                Ok(if j == 5 {
                    ControlFlow::Break(j)
                } else {
                    ControlFlow::Continue(())
                })
            },
        );
        assert_eq!(r.unwrap(), Some(5));
        assert!(made.load(Ordering::SeqCst) < 20);
        let r: Result<Option<()>> = prefetch(
            (0..10).collect(),
            2,
            |j: usize| match j {
                3 => Err(crate::error::Error::Invalid("row 3 unreadable".into())),
                _ => Ok(j),
            },
            |_| Ok(ControlFlow::Continue(())),
        );
        assert_eq!(r.unwrap_err().to_string(), "row 3 unreadable");
    }
}
