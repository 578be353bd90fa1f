//! `min_position` on event reads: wait until this node's ledger holds a position before
//! answering. On a single node every acknowledged position is there already; on a follower of
//! a cluster it is read-your-writes for a client that appended through another node.

use std::time::{Duration, Instant};

use crate::AppState;
use crate::params::Params;
use crate::problem::ApiError;

/// The wait a `min_position` read may take: `timeout_ms`, capped by `max_wait` and kept
/// below the request timeout so that the answer is a 504 problem, not a cut connection.
pub(crate) fn wait_limit(state: &AppState, timeout_ms: Option<u64>) -> Duration {
    let config = state.config();
    let cap = config.max_wait.min(
        config
            .request_timeout
            .saturating_sub(Duration::from_millis(250)),
    );
    timeout_ms.map_or(cap, |ms| Duration::from_millis(ms).min(cap))
}

/// Waits (holding no thread) until the ledger's head reaches the `min_position` parameter, if
/// given, within `timeout_ms`; a 504 names how far it got. At most `Config::max_waits`
/// requests wait at a time; more are a 503.
pub(crate) async fn head_reaches(state: &AppState, params: &Params) -> Result<(), ApiError> {
    let min_position = params.u64("min_position")?;
    let timeout_ms = params.u64("timeout_ms")?;
    let Some(position) = min_position else {
        if timeout_ms.is_some() {
            return Err(ApiError::BadRequest(
                "timeout_ms bounds the wait of min_position; give min_position too".into(),
            ));
        }
        return Ok(());
    };
    let ledger = state.ledger();
    if ledger.head() >= position {
        return Ok(());
    }
    let _permit = state.inner.waits.try_acquire().map_err(|_| {
        ApiError::Unavailable(format!(
            "{} requests are waiting already; retry shortly",
            state.inner.config.max_waits
        ))
    })?;
    let wait = wait_limit(state, timeout_ms);
    let started = Instant::now();
    match tokio::time::timeout(wait, ledger.wait_for_async(position)).await {
        Ok(_) => Ok(()),
        Err(_) => {
            let reached = ledger.head();
            Err(ApiError::WaitTimeout {
                message: format!(
                    "this node's ledger reached position {reached}, not {position}, within {} \
                     ms; retry, or ask with a longer timeout_ms (the server caps it)",
                    started.elapsed().as_millis()
                ),
                wanted: position,
                reached,
            })
        }
    }
}
