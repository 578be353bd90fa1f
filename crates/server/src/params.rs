//! Query-string parameters, parsed by hand so that repeated parameters (`type=a&type=b`)
//! work, unknown parameters are refused (a typo should not silently read everything), and
//! every error is a problem+json 400.

use axum::http::Uri;
use loom_ledger::{Selector, split_subject};

use crate::problem::ApiError;

/// The decoded `name=value` pairs of a query string.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `uri`'s query; any name not in `allowed` is a 400.
    pub(crate) fn parse(uri: &Uri, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (k, _) in &pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}; this endpoint takes {}",
                    allowed.join(", ")
                )));
            }
        }
        Ok(Params { pairs })
    }

    /// The pairs, for building `Link` URLs.
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The single value of `name`; twice is a 400.
    pub(crate) fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter {name:?} may be given once"
            )));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// Every value of `name`, each split at commas, empty pieces dropped.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A non-negative integer parameter, at most `i64::MAX`: the document says `int64`, and
    /// no position, revision, limit or wait comes near it.
    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.one(name)?
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| i64::try_from(*n).is_ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "query parameter {name:?} must be a non-negative integer up to {}, not {v:?}",
                            i64::MAX
                        ))
                    })
            })
            .transpose()
    }

    pub(crate) fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)? {
            None => Ok(false),
            Some("" | "true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!(
                "query parameter {name:?} must be true or false, not {v:?}"
            ))),
        }
    }

    /// The page size: `limit`, else `default`; never above `max`.
    pub(crate) fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.u64("limit")? {
            None => Ok(default),
            Some(0) => Err(ApiError::BadRequest("limit must be at least 1".into())),
            Some(n) if n as usize > max => Err(ApiError::BadRequest(format!(
                "limit {n} is above the largest page of {max}; page with the Link header, or \
                 ask for Accept: application/x-ndjson"
            ))),
            Some(n) => Ok(n as usize),
        }
    }

    /// The selector of `subject`, `entity`, `type`, `data` and `meta` parameters.
    pub(crate) fn selector(&self) -> Result<Selector, ApiError> {
        let mut selector = Selector {
            entity: self.one("entity")?.map(str::to_owned),
            types: self.all("type"),
            data: self.one("data")?.map(str::to_owned),
            meta: self.one("meta")?.map(str::to_owned),
            ..Selector::default()
        };
        let subjects: Vec<&str> = self
            .pairs
            .iter()
            .filter(|(k, _)| k == "subject")
            .map(|(_, v)| v.as_str())
            .collect();
        for subject in subjects {
            let Some((entity, key)) = split_subject(subject) else {
                return Err(ApiError::BadRequest(format!(
                    "subject {subject:?} is not a stream name (\"{{entity}}/{{key}}\")"
                )));
            };
            match &selector.entity {
                Some(e) if e != entity => {
                    return Err(ApiError::BadRequest(format!(
                        "subject {subject:?} is not of entity {e:?}; all subjects and the \
                         entity parameter must name one entity"
                    )));
                }
                _ => selector.entity = Some(entity.to_owned()),
            }
            selector.keys.push(key.to_owned());
        }
        Ok(selector)
    }
}

/// Builds `path?query` from pairs, replacing the values of `replace`.
pub(crate) fn link(path: &str, params: &Params, replace: &[(&str, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.pairs() {
        if !replace.iter().any(|(r, _)| r == k) {
            out.append_pair(k, v);
        }
    }
    for (k, v) in replace {
        out.append_pair(k, v);
    }
    format!("{path}?{}", out.finish())
}

// The query strings the handlers accept, as the OpenAPI document describes them. The fields
// are never read: handlers read [`Params`] by name, refusing any name outside the matching
// list below, and a test checks that each list and its parameter set name the same
// parameters, so the document cannot drift from what the server takes.

/// Names of [`PageParams`].
pub(crate) const PAGE: &[&str] = &[
    "after",
    "before",
    "limit",
    "backwards",
    "min_position",
    "timeout_ms",
];
/// Names of [`ListParams`].
pub(crate) const LIST: &[&str] = &[
    "after",
    "before",
    "limit",
    "backwards",
    "subject",
    "entity",
    "type",
    "data",
    "meta",
    "min_position",
    "timeout_ms",
];
/// Names of [`SubscribeParams`].
pub(crate) const SUBSCRIBE: &[&str] = &["after", "subject", "entity", "type", "data", "meta"];
/// Names of [`StateParams`].
pub(crate) const STATE: &[&str] = &["at_position", "at_time", "min_position", "timeout_ms"];

/// How a single event is answered: `structured` (CloudEvents JSON, the default) or `binary`
/// (attributes as `ce-*` headers, the data as the body).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum Mode {
    Structured,
    Binary,
}

/// Paging parameters.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Only positions after this (default 0).
    after: Option<u64>,
    /// Only positions before this.
    before: Option<u64>,
    /// Page size (default 100, at most 10000 for JSON; NDJSON takes any).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// Newest first.
    backwards: Option<bool>,
    /// Wait until this node's ledger holds this position (read-your-writes on any node of a
    /// cluster).
    min_position: Option<u64>,
    /// Longest wait for `min_position`, ms (default and cap: the server's max wait).
    timeout_ms: Option<u64>,
}

/// Paging and filter parameters of `GET /v1/events`.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only positions after this (default 0).
    after: Option<u64>,
    /// Only positions before this.
    before: Option<u64>,
    /// Page size (default 100, at most 10000 for JSON; NDJSON takes any).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// Newest first.
    backwards: Option<bool>,
    /// Only this stream (`{entity}/{key}`); repeatable.
    #[param(min_length = 3, pattern = r"^[A-Za-z0-9_.\-]{1,128}/.+$")]
    subject: Option<String>,
    /// Only this entity.
    #[param(min_length = 1)]
    entity: Option<String>,
    /// Only these types: repeat the parameter or separate with commas.
    #[param(rename = "type")]
    r#type: Option<String>,
    /// JSONPath over `data`.
    #[param(min_length = 1)]
    data: Option<String>,
    /// JSONPath over the whole event.
    #[param(min_length = 1)]
    meta: Option<String>,
    /// Wait until this node's ledger holds this position (read-your-writes on any node of a
    /// cluster).
    min_position: Option<u64>,
    /// Longest wait for `min_position`, ms (default and cap: the server's max wait).
    timeout_ms: Option<u64>,
}

/// Selector parameters of `GET /v1/subscribe`.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscribeParams {
    /// Start after this position (default 0: from the beginning).
    after: Option<u64>,
    /// Only this stream (`{entity}/{key}`); repeatable.
    #[param(min_length = 3, pattern = r"^[A-Za-z0-9_.\-]{1,128}/.+$")]
    subject: Option<String>,
    /// Only this entity.
    #[param(min_length = 1)]
    entity: Option<String>,
    /// Only these types (repeat or comma-separate).
    #[param(rename = "type")]
    r#type: Option<String>,
    /// JSONPath over `data`.
    #[param(min_length = 1)]
    data: Option<String>,
    /// JSONPath over the whole event.
    #[param(min_length = 1)]
    meta: Option<String>,
}

/// Which state to read.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StateParams {
    /// The state after every selected event up to this position (replayed).
    at_position: Option<u64>,
    /// The state at this time (RFC 3339): as of the head at that time (replayed).
    #[param(format = DateTime)]
    at_time: Option<String>,
    /// Wait until the projection has folded everything up to this position (read-your-writes).
    min_position: Option<u64>,
    /// Longest wait for `min_position`, ms (default and cap: the server's max wait, 10 s).
    timeout_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use utoipa::IntoParams;

    use super::*;

    fn names<P: IntoParams>() -> Vec<String> {
        P::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn each_documented_parameter_set_is_what_its_handlers_accept() {
        assert_eq!(names::<PageParams>(), PAGE);
        assert_eq!(names::<ListParams>(), LIST);
        assert_eq!(names::<SubscribeParams>(), SUBSCRIBE);
        assert_eq!(names::<StateParams>(), STATE);
    }
}
