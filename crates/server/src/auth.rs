//! Bearer-token authentication with three roles: `admin` ⊇ `writer` ⊇ `reader`.
//!
//! Handlers state the role they need by taking an extractor ([`Reader`], [`Writer`],
//! [`Admin`]). With no tokens configured every request is allowed (the server refuses to
//! start that way unless it listens on loopback only, see [`crate::check_listen`]).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::AppState;
use crate::problem::ApiError;

/// What a token may do. Ordered: each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads, queries, subscriptions, metrics.
    Reader,
    /// Everything a reader does, plus appends.
    Writer,
    /// Everything, including the registry.
    Admin,
}

impl Role {
    /// The role's name as written in `ROLE:TOKEN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "{other:?} is not a role: use \"admin\", \"writer\" or \"reader\""
            )),
        }
    }
}

/// A configured token and its role.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// What the token may do.
    pub role: Role,
    /// The secret clients send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for Token {
    type Err = String;
    /// Parses `ROLE:TOKEN`, e.g. `writer:s3cret`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (role, secret) = s
            .split_once(':')
            .ok_or_else(|| "a token is written ROLE:TOKEN, e.g. writer:s3cret".to_owned())?;
        let role = role.trim().parse()?;
        if secret.is_empty() || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a token secret must be non-empty, without spaces".into());
        }
        Ok(Token {
            role,
            secret: secret.to_owned(),
        })
    }
}

/// The token table.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    /// SHA-256 of each secret, with its role. A presented token is hashed and compared with
    /// every entry in constant time, so the answer's timing says nothing about the secrets.
    by_digest: Vec<([u8; 32], Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.by_digest.len())
            .finish()
    }
}

impl Tokens {
    pub(crate) fn new(tokens: &[Token]) -> Tokens {
        let mut by_secret: HashMap<&str, Role> = HashMap::new();
        for t in tokens {
            // The same secret listed twice keeps its highest role.
            let role = by_secret.entry(t.secret.as_str()).or_insert(t.role);
            *role = (*role).max(t.role);
        }
        let by_digest = by_secret
            .into_iter()
            .map(|(secret, role)| (digest(secret), role))
            .collect();
        Tokens { by_digest }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The role of a presented secret: every entry is compared, whatever matches.
    fn role_of(&self, secret: &str) -> Option<Role> {
        let presented = digest(secret);
        let mut found = None;
        for (d, role) in &self.by_digest {
            if bool::from(d.ct_eq(&presented)) {
                found = Some(*role);
            }
        }
        found
    }

    /// The role of the request's token: every role on an open server; a 401 without a valid
    /// token otherwise.
    fn role(&self, parts: &Parts) -> Result<Role, ApiError> {
        if self.is_open() {
            return Ok(Role::Admin);
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "this server requires a token: send \"Authorization: Bearer <token>\"".into(),
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be \"Bearer <token>\"".into())
            })?;
        self.role_of(secret)
            .ok_or_else(|| ApiError::Unauthorized("the token is not valid".into()))
    }

    /// Checks the request's token against the role `needed`.
    fn check(&self, parts: &Parts, needed: Role) -> Result<(), ApiError> {
        let role = self.role(parts)?;
        if role < needed {
            return Err(ApiError::Forbidden(format!(
                "this needs the {needed} role; the token has the {role} role"
            )));
        }
        Ok(())
    }
}

/// The role a request's token has (every role on an open server; none without a token), for
/// `GET /v1/whoami`. An unknown token is still a 401.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// What the token may do; `None` when the request has no token (and the server wants one).
    pub role: Option<Role>,
    /// Whether the server takes requests without a token.
    pub open: bool,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let tokens = &state.inner.tokens;
        let role = if tokens.is_open() || parts.headers.contains_key(header::AUTHORIZATION) {
            Some(tokens.role(parts)?)
        } else {
            None
        };
        Ok(Caller {
            role,
            open: tokens.is_open(),
        })
    }
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                state.inner.tokens.check(parts, $role)?;
                Ok($name)
            }
        }
    };
}

role_extractor!(
    Reader,
    Role::Reader,
    "Proof that the request may read (any valid token, or an open server)."
);
role_extractor!(
    Writer,
    Role::Writer,
    "Proof that the request may append (a writer or admin token, or an open server)."
);
role_extractor!(
    Admin,
    Role::Admin,
    "Proof that the request may administer (an admin token, or an open server)."
);

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
