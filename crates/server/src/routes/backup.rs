//! `GET /v1/backup`: a consistent copy of the node's database, streamed (see
//! `Ledger::backup_to`). The copy is written next to the database first, so the data
//! directory needs room for one more copy while it runs; the file is unlinked as soon as it is
//! open, so nothing is left behind if the client goes away.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tokio::io::AsyncReadExt;

use crate::AppState;
use crate::auth::Admin;
use crate::params::Params;
use crate::problem::ApiError;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/backup", get(backup_get))
}

/// A backup of this node's database: a redb file that is the ledger at one commit (events,
/// registry, modules, definitions, projection states). Restore it with `loom restore`.
#[utoipa::path(
    get, path = "/v1/backup", tag = "ops",
    responses(
        (status = 200, description = "The database file",
            content((String = "application/octet-stream")),
            headers(
                ("loom-head" = u64, description = "The last position in the backup"),
                ("loom-log-sequence" = u64, description = "The cluster log sequence it has applied (0: a single node)"),
            )),
        (status = 503, description = "Storage unavailable (e.g. the disk is full)", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn backup_get(
    State(state): State<AppState>,
    _: Admin,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let (info, file) = state
        .blocking(|ledger| {
            let dir = ledger.path().parent().unwrap_or(std::path::Path::new("."));
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = dir.join(format!("backup-{nanos}.redb.partial"));
            let info = ledger.backup_to(&path).map_err(ApiError::storage)?;
            let file = std::fs::File::open(&path);
            // Unlinked at once: the open file stays readable until the answer is sent.
            let _ = std::fs::remove_file(&path);
            let file = file.map_err(|e| ApiError::storage(e.into()))?;
            Ok((info, file))
        })
        .await?;
    let file = tokio::fs::File::from_std(file);
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.bytes));
    headers.insert("loom-head", HeaderValue::from(info.head));
    headers.insert("loom-log-sequence", HeaderValue::from(info.log_sequence));
    Ok(response)
}
