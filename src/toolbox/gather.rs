//! `gather` and `gather_all`: run futures concurrently, results in the order given.

use std::convert::Infallible;
use std::future::Future;

use super::children::ChildFutures;

/// Runs `futures` concurrently and gives all their results in the order given (asyncio's
/// `asyncio.gather`), or the first error, as soon as it happens.
///
/// The futures are polled in place by the caller (they may borrow, and need not be tasks),
/// each only when its own waker fired. On the first error the others are dropped, which
/// cancels them; to let them finish instead, as asyncio does, pass [`Task`](crate::Task)s
/// (dropping a task's handle does not stop it) or use [`gather_all`]. No futures: `Ok(vec![])`.
///
/// ```
/// use ringloop::{gather, sleep};
///
/// ringloop::run(async {
///     let slow_first = [0.02, 0.0, 0.01].map(|delay| async move {
///         sleep(delay).await?;
///         Ok::<_, ringloop::Error>(delay)
///     });
///     assert_eq!(gather(slow_first).await.unwrap(), [0.02, 0.0, 0.01]);
/// })
/// .unwrap();
/// ```
pub async fn gather<I, F, T, E>(futures: I) -> Result<Vec<T>, E>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
{
    collect_in_order(futures, |result| result).await
}

/// Runs `futures` concurrently and gives every output in the order given, errors included
/// (asyncio's `gather(..., return_exceptions=True)`): with futures of `Result`s, one `Result`
/// per future. Nothing is cancelled; it completes when the last future does.
///
/// ```
/// use ringloop::{gather_all, ArgumentKind, Error};
///
/// ringloop::run(async {
///     let outcomes = gather_all([
///         Box::pin(async { Ok(1) }) as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
///         Box::pin(async { Err(Error::invalid_argument(ArgumentKind::Other, "two")) }),
///     ])
///     .await;
///     assert!(matches!(outcomes[..], [Ok(1), Err(Error::InvalidArgument { .. })]));
/// })
/// .unwrap();
/// ```
pub async fn gather_all<I, F>(futures: I) -> Vec<F::Output>
where
    I: IntoIterator<Item = F>,
    F: Future,
{
    match collect_in_order(futures, Ok::<_, Infallible>).await {
        Ok(outputs) => outputs,
        Err(never) => match never {},
    }
}

/// Drives `futures` to completion, passing each output through `keep` and collecting what it
/// keeps in the order given; the first `Err` it returns ends the wait (the rest are dropped).
async fn collect_in_order<I, F, T, E>(
    futures: I,
    mut keep: impl FnMut(F::Output) -> Result<T, E>,
) -> Result<Vec<T>, E>
where
    I: IntoIterator<Item = F>,
    F: Future,
{
    let mut children = ChildFutures::new(futures);
    let mut outputs: Vec<Option<T>> = (0..children.len()).map(|_| None).collect();
    while let Some((index, output)) = std::future::poll_fn(|cx| children.poll_next(cx)).await {
        outputs[index] = Some(keep(output)?);
    }
    // Every child delivered exactly one output, so nothing is skipped here.
    Ok(outputs.into_iter().flatten().collect())
}
