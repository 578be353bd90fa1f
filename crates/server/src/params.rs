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

    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.one(name)?
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "query parameter {name:?} must be a non-negative integer, not {v:?}"
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
