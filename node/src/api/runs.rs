//! `GET /v1/runs/{id}/log`: a `labmesh run` log of this node. Without `follow`, the lines
//! written so far (JSON lines); with `follow=1`, server-sent events: every line so far, then
//! each new one as the run writes it, then an `end` event after the wrapper's last record.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::runs::logs::{LogFollower, log_path};

/// How often a followed log is read for new lines: quick enough to feel live, rare enough to
/// cost nothing.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
}

pub async fn log(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let path = log_path(&state.store.config().data_dir, &id).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a run id (a UUID, as `labmesh runs list` shows)"),
        )
    })?;
    if !path.is_file() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no log of run {id} on this node (a run's log lives on the node it ran on)"),
        ));
    }
    let follow = q
        .follow
        .as_deref()
        .is_some_and(|f| matches!(f, "1" | "true" | "yes"));
    let mut follower = LogFollower::new(path);
    if !follow {
        let mut body = String::new();
        loop {
            let lines = follower
                .poll()
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if lines.is_empty() {
                break;
            }
            for l in lines {
                body.push_str(&l);
                body.push('\n');
            }
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    struct Follow {
        follower: LogFollower,
        ready: VecDeque<String>,
        done: bool,
        stopping: Option<tokio::sync::watch::Receiver<bool>>,
    }
    let init = Follow {
        follower,
        ready: VecDeque::new(),
        done: false,
        stopping: state.stopping.clone(),
    };
    let stream = futures_util::stream::unfold(init, |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(line)), st));
            }
            if st.done {
                return None;
            }
            if st.follower.ended() {
                st.done = true;
                return Some((Ok(SseEvent::default().event("end").data("")), st));
            }
            if st.stopping.as_ref().is_some_and(|s| *s.borrow()) {
                return None;
            }
            match st.follower.poll() {
                Ok(lines) if !lines.is_empty() => st.ready.extend(lines),
                Ok(_) => tokio::time::sleep(POLL_EVERY).await,
                Err(e) => {
                    st.done = true;
                    return Some((
                        Ok(SseEvent::default().event("error").data(e.to_string())),
                        st,
                    ));
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
