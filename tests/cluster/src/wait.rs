//! Polling until the cluster reaches a state, with the last observed state in the error.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Calls `check` every `every` until it returns `Ok`, or fails after `timeout` with the last
/// `Err` it returned (a description of what was seen instead), so a timeout says why.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, every: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    until_alive(what, timeout, every, || Ok(()), check).await
}

/// Like [`until`], but before each check calls `alive`, and gives up at once with its error:
/// waiting for a process that has died only delays the message that says why.
pub async fn until_alive<T, A, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    alive: A,
    mut check: F,
) -> Result<T>
where
    A: Fn() -> Result<()>,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        alive()?;
        match check().await {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => {
                return Err(Error::Timeout {
                    what: format!("{what} (last seen: {seen})"),
                    secs: timeout.as_secs(),
                });
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_check_passes() {
        let mut calls = 0;
        let got = until(
            "three calls",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n >= 3 {
                        Ok(n)
                    } else {
                        Err(format!("{n} calls"))
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_state() {
        let err = until(
            "never",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { Err::<(), _>("still waiting".to_string()) },
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("never") && text.contains("still waiting"),
            "{text}"
        );
    }
}
