//! Blocking work (sled, synchronous librdkafka calls) kept off the async
//! runtime (STYLE rule 8).

use crate::{LogError, Result};

/// Runs `work` on tokio's blocking pool. A panic inside is a bug and is
/// re-raised; a cancelled task means the runtime is shutting down.
pub(crate) async fn run_blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(LogError::Closed),
        },
    }
}

/// Runs `work` on a thread of its own, for a call that may wait without
/// end (librdkafka's synchronous commit waits for a group coordinator that
/// may never come back). Unlike [`run_blocking`], the runtime does not wait
/// for that thread when it shuts down, so such a call can never hold a
/// process stopping; the caller bounds its own wait with a timeout.
pub(crate) async fn run_detached<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("baton-kafka-commit".to_owned())
        .spawn(move || {
            let _ = answer.send(work());
        })
        .map_err(|_| LogError::Closed)?;
    answered.await.unwrap_or(Err(LogError::Closed))
}
