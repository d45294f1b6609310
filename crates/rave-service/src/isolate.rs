//! One bad item never fails the others.
//!
//! A batch statement fails as a whole when one of its values is refused.
//! [`isolate`] runs the batch; when it fails for a reason of its content
//! (the caller's `is_content` says which errors are), it splits the batch in
//! halves and runs each, down to the single items at fault, which are set
//! aside with their error. With `k` bad items among `n`, that is at most
//! `1 + 2·k·⌈log2 n⌉` runs. Any other error (the database is down) is
//! returned as it is: the caller retries the whole batch later.

use futures_util::future::BoxFuture;

/// What [`isolate`] did.
#[derive(Debug)]
pub struct Isolated<T> {
    /// The merged result of every run that succeeded (`None`: none did).
    pub done: Option<T>,
    /// The items that failed alone: their index in the batch, and the error.
    pub set_aside: Vec<(usize, anyhow::Error)>,
    /// How many times the batch (or a part of it) was run.
    pub runs: usize,
}

/// A batch runner: a slice of the items in, one result for all of them out.
/// It borrows the items, so no run copies them.
pub type Run<'f, I, T> =
    dyn for<'a> Fn(&'a [I]) -> BoxFuture<'a, anyhow::Result<T>> + Send + Sync + 'f;

/// Gives a closure the signature of a [`Run`] (closures do not infer a
/// signature that holds for every borrow on their own).
pub fn runner<I, T, F>(f: F) -> F
where
    F: for<'a> Fn(&'a [I]) -> BoxFuture<'a, anyhow::Result<T>> + Send + Sync,
{
    f
}

pub async fn isolate<I, T>(
    items: &[I],
    run: &Run<'_, I, T>,
    merge: fn(T, T) -> T,
    is_content: fn(&anyhow::Error) -> bool,
) -> anyhow::Result<Isolated<T>>
where
    I: Sync,
    T: Send,
{
    step(items, 0, run, merge, is_content).await
}

/// Runs `items`, which start at `offset` in the whole batch.
fn step<'r, I, T>(
    items: &'r [I],
    offset: usize,
    run: &'r Run<'_, I, T>,
    merge: fn(T, T) -> T,
    is_content: fn(&anyhow::Error) -> bool,
) -> BoxFuture<'r, anyhow::Result<Isolated<T>>>
where
    I: Sync,
    T: Send + 'r,
{
    Box::pin(async move {
        match run(items).await {
            Ok(done) => Ok(Isolated {
                done: Some(done),
                set_aside: Vec::new(),
                runs: 1,
            }),
            Err(e) if is_content(&e) && items.len() <= 1 => Ok(Isolated {
                done: None,
                set_aside: if items.is_empty() {
                    Vec::new()
                } else {
                    vec![(offset, e)]
                },
                runs: 1,
            }),
            Err(e) if is_content(&e) => {
                let mid = items.len() / 2;
                let (left, right) = items.split_at(mid);
                let left = step(left, offset, run, merge, is_content).await?;
                let right = step(right, offset + mid, run, merge, is_content).await?;
                let done = match (left.done, right.done) {
                    (Some(a), Some(b)) => Some(merge(a, b)),
                    (a, b) => a.or(b),
                };
                let mut set_aside = left.set_aside;
                set_aside.extend(right.set_aside);
                Ok(Isolated {
                    done,
                    set_aside,
                    runs: 1 + left.runs + right.runs,
                })
            }
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn content(e: &anyhow::Error) -> bool {
        e.to_string().starts_with("refused")
    }

    /// A batch of numbers that fails whole when it holds a bad one.
    fn runner(
        bad: &'static [u32],
        calls: &'static AtomicUsize,
    ) -> Box<Run<'static, u32, Vec<u32>>> {
        Box::new(move |items: &[u32]| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match items.iter().find(|i| bad.contains(i)) {
                    Some(i) => anyhow::bail!("refused: {i}"),
                    None => Ok(items.to_vec()),
                }
            })
        })
    }

    fn concat(mut a: Vec<u32>, b: Vec<u32>) -> Vec<u32> {
        a.extend(b);
        a
    }

    #[tokio::test]
    async fn the_good_items_commit_and_each_bad_one_is_set_aside_with_its_error() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let run = runner(&[7, 300], &CALLS);
        let items: Vec<u32> = (0..1000).collect();
        let out = isolate(&items, &*run, concat, content).await.unwrap();
        let done = out.done.unwrap();
        assert_eq!(done.len(), 998);
        assert!(!done.contains(&7) && !done.contains(&300));
        let aside: Vec<(u32, String)> = out
            .set_aside
            .iter()
            .map(|(n, e)| (items[*n], e.to_string()))
            .collect();
        assert_eq!(
            aside,
            [
                (7, "refused: 7".to_owned()),
                (300, "refused: 300".to_owned())
            ]
        );
        // Bounded: 1 + 2·k·⌈log2 n⌉ = 1 + 2·2·10.
        assert_eq!(out.runs, CALLS.load(Ordering::SeqCst));
        assert!(out.runs <= 41, "{} runs", out.runs);
    }

    #[tokio::test]
    async fn a_batch_without_a_bad_item_runs_once() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let run = runner(&[], &CALLS);
        let out = isolate(&[1, 2, 3], &*run, concat, content).await.unwrap();
        assert_eq!(out.done.unwrap(), [1, 2, 3]);
        assert_eq!(out.runs, 1);
    }

    #[tokio::test]
    async fn an_outage_is_not_split_but_returned_for_a_later_retry() {
        let run: Box<Run<'static, u32, Vec<u32>>> =
            Box::new(|_: &[u32]| Box::pin(async { anyhow::bail!("connection refused") }));
        let err = isolate(&[1, 2, 3], &*run, concat, content)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
    }
}
