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
