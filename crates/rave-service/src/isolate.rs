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
pub struct Isolated<I, T> {
    /// The merged result of every run that succeeded (`None`: none did).
    pub done: Option<T>,
    /// The items that failed alone, with their errors.
    pub set_aside: Vec<(I, anyhow::Error)>,
    /// How many times the batch (or a part of it) was run.
    pub runs: usize,
}

/// A batch runner: the items in, one result for all of them out.
pub type Run<'f, I, T> = dyn Fn(Vec<I>) -> BoxFuture<'f, anyhow::Result<T>> + Send + Sync + 'f;

pub async fn isolate<'r, 'f: 'r, I, T>(
    items: Vec<I>,
    run: &'r Run<'f, I, T>,
    merge: fn(T, T) -> T,
    is_content: fn(&anyhow::Error) -> bool,
) -> anyhow::Result<Isolated<I, T>>
where
    I: Clone + Send + 'r,
    T: Send + 'r,
{
    step(items, run, merge, is_content).await
}

fn step<'r, 'f: 'r, I, T>(
    mut items: Vec<I>,
    run: &'r Run<'f, I, T>,
    merge: fn(T, T) -> T,
    is_content: fn(&anyhow::Error) -> bool,
) -> BoxFuture<'r, anyhow::Result<Isolated<I, T>>>
where
    I: Clone + Send + 'r,
    T: Send + 'r,
{
    Box::pin(async move {
        match run(items.clone()).await {
            Ok(done) => Ok(Isolated {
                done: Some(done),
                set_aside: Vec::new(),
                runs: 1,
            }),
            Err(e) if is_content(&e) && items.len() <= 1 => Ok(Isolated {
                done: None,
                set_aside: items
                    .into_iter()
                    .next()
                    .map(|i| (i, e))
                    .into_iter()
                    .collect(),
                runs: 1,
            }),
            Err(e) if is_content(&e) => {
                let right = items.split_off(items.len() / 2);
                let left = step(items, run, merge, is_content).await?;
                let right = step(right, run, merge, is_content).await?;
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
        Box::new(move |items: Vec<u32>| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match items.iter().find(|i| bad.contains(i)) {
                    Some(i) => anyhow::bail!("refused: {i}"),
                    None => Ok(items),
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
        let out = isolate((0..1000).collect(), &*run, concat, content)
            .await
            .unwrap();
        let done = out.done.unwrap();
        assert_eq!(done.len(), 998);
        assert!(!done.contains(&7) && !done.contains(&300));
        let aside: Vec<(u32, String)> = out
            .set_aside
            .iter()
            .map(|(i, e)| (*i, e.to_string()))
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
        let out = isolate(vec![1, 2, 3], &*run, concat, content)
            .await
            .unwrap();
        assert_eq!(out.done.unwrap(), [1, 2, 3]);
        assert_eq!(out.runs, 1);
    }

    #[tokio::test]
    async fn an_outage_is_not_split_but_returned_for_a_later_retry() {
        let run: Box<Run<'static, u32, Vec<u32>>> =
            Box::new(|_| Box::pin(async { anyhow::bail!("connection refused") }));
        let err = isolate(vec![1, 2, 3], &*run, concat, content)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
    }
}
