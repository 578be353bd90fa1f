//! Request bodies and their media types: read up to a limit, JSON required where it is.

use crate::*;

/// Reads a request body up to the configured limit (413 beyond it).
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    read_body_limited(state.inner.config.max_body_bytes, headers, body).await
}

/// Reads a request body up to `limit` bytes (413 beyond it).
pub(crate) async fn read_body_limited(
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge { limit };
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("the request body could not be read: {e}"))
    })
}

/// A media type: its essence (`type/subtype`, lower case) and its parameters.
pub(crate) type MediaType = (String, Vec<(String, String)>);

/// The media type of the `Content-Type` header, if any.
pub(crate) fn media_type(headers: &HeaderMap) -> Result<Option<MediaType>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("the Content-Type header is not ASCII".into()))?;
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect();
    Ok(Some((essence, params)))
}

/// Requires a JSON body (`application/json` or any `+json` type) in UTF-8.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(headers)? {
        Some((essence, params))
            if (essence == "application/json" || essence.ends_with("+json"))
                && charset_is_utf8(&params) =>
        {
            Ok(())
        }
        Some((essence, _)) => Err(ApiError::UnsupportedMediaType(format!(
            "this endpoint takes application/json in UTF-8, not {essence}"
        ))),
        None => Err(ApiError::UnsupportedMediaType(
            "this endpoint takes application/json; set the Content-Type header".into(),
        )),
    }
}

pub(crate) fn charset_is_utf8(params: &[(String, String)]) -> bool {
    params
        .iter()
        .filter(|(k, _)| k == "charset")
        .all(|(_, v)| v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8"))
}
