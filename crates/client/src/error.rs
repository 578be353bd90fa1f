//! What can go wrong talking to Loom: the transport, the server's refusals (RFC 9457 problem
//! details), and answers the client cannot read.

use serde_json::{Map, Value};

/// The prefix of every Loom problem type (`urn:loom:problem:identity-conflict`, …).
pub const PROBLEM_PREFIX: &str = "urn:loom:problem:";

/// An error of any client call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request did not reach the server, or its answer broke off.
    #[error("could not reach {url}: {source}")]
    Transport {
        /// The URL of the request.
        url: String,
        /// What the HTTP stack reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the request and said why.
    #[error("{0}")]
    Problem(Box<Problem>),
    /// The server's answer is not what this client expects (a different server, or a proxy in
    /// between).
    #[error("reading the answer of {url}: {message}")]
    Decode {
        /// The URL of the request.
        url: String,
        /// What was wrong with the answer.
        message: String,
    },
    /// An event could not be written or read as a CloudEvent.
    #[error("CloudEvents: {0}")]
    CloudEvents(#[from] cloudevents::message::Error),
    /// An argument can never make a valid request (say, a token that is not a header value).
    #[error("{0}")]
    Invalid(String),
    /// A subscription's server ended it with an error message.
    #[error("the server ended the subscription: {0}")]
    Subscription(String),
}

impl Error {
    /// The problem details, when the server refused the request.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Problem(p) => Some(p),
            _ => None,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        self.problem().map(|p| p.status)
    }

    /// Whether the server refused with this Loom problem type (`"identity-conflict"`,
    /// `"revision-conflict"`, `"command-rejected"`, …; see docs/http.md).
    pub fn is(&self, kind: &str) -> bool {
        self.problem().is_some_and(|p| p.is(kind))
    }

    /// A decider's refusal of a command: its message.
    pub fn rejection(&self) -> Option<&str> {
        self.problem()
            .filter(|p| p.is("command-rejected"))
            .map(|p| p.detail.as_str())
    }
}

/// A refusal as the server described it (`application/problem+json`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The problem type, a URI (`urn:loom:problem:…`; `about:blank` when the answer was not a
    /// problem document).
    pub kind: String,
    /// The status's short title.
    pub title: String,
    /// What was wrong, for people.
    pub detail: String,
    /// The problem's other members (`stream`, `expected`, `actual`, `index`, …).
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// Reads an error answer: a problem document, or any other body (its text becomes the
    /// detail).
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Problem {
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .to_owned();
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
            return Problem {
                status,
                kind: "about:blank".into(),
                title: reason,
                detail: String::from_utf8_lossy(body).trim().to_owned(),
                extensions: Map::new(),
            };
        };
        let mut take = |k: &str| match map.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let kind = take("type").unwrap_or_else(|| "about:blank".into());
        let title = take("title").unwrap_or(reason);
        let detail = take("detail").unwrap_or_default();
        map.remove("status");
        Problem {
            status,
            kind,
            title,
            detail,
            extensions: map,
        }
    }

    /// Whether this is the Loom problem type `kind` (`"identity-conflict"`, …).
    pub fn is(&self, kind: &str) -> bool {
        self.kind
            .strip_prefix(PROBLEM_PREFIX)
            .is_some_and(|k| k == kind)
    }

    /// One member of the problem beyond the standard ones.
    pub fn get(&self, member: &str) -> Option<&Value> {
        self.extensions.get(member)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let detail = if self.detail.is_empty() {
            "(no details)"
        } else {
            &self.detail
        };
        write!(f, "the server answered {} {reason}: {detail}", self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_problem_document() {
        let p = Problem::from_answer(
            409,
            br#"{"type":"urn:loom:problem:revision-conflict","title":"Conflict","status":409,
                "detail":"stream cart/1 is at revision 2, expected 1","stream":"cart/1"}"#,
        );
        assert!(p.is("revision-conflict"));
        assert!(!p.is("identity-conflict"));
        assert_eq!(p.get("stream"), Some(&Value::from("cart/1")));
        assert!(!p.extensions.contains_key("status"));
        assert_eq!(
            p.to_string(),
            "the server answered 409 Conflict: stream cart/1 is at revision 2, expected 1"
        );
    }

    #[test]
    fn reads_any_other_body_as_the_detail() {
        let p = Problem::from_answer(502, b"bad gateway\n");
        assert_eq!(p.kind, "about:blank");
        assert_eq!(p.detail, "bad gateway");
        assert_eq!(
            Problem::from_answer(500, b"").to_string(),
            "the server answered 500 Internal Server Error: (no details)"
        );
    }
}
