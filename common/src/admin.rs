//! `[admin]`: the bearer token that guards state-changing admin endpoints
//! (`POST /admin/v1/reload` of serving and the updater). Events are the only
//! state anyone may change without it.
//!
//! The token comes from the environment (`RECSYS__ADMIN__TOKEN`) or a file
//! (`token_file`, e.g. a Docker or Kubernetes secret), never from the
//! repository: the shipped `configs/recsys.toml` leaves it empty, which turns
//! the admin endpoints off (403). It is compared in constant time and never
//! printed: [`Secret`]'s `Debug` and `Display` show `[redacted]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A string that does not print itself.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself: only for the comparison and the file loader.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "[redacted]" })
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// The bearer token (set it with `RECSYS__ADMIN__TOKEN`); empty = admin
    /// endpoints off unless `token_file` names one.
    pub token: Secret,
    /// A file holding the token (trailing newline ignored); used when `token` is empty.
    pub token_file: Option<PathBuf>,
}

/// Shortest token accepted: a guessable admin token is worse than none.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminConfig {
    /// The token in force (`None` = admin endpoints off), read from the file
    /// when one is named; errors name the key and never show the token.
    pub fn resolve(&self) -> Result<AdminAuth, String> {
        let token = if !self.token.is_empty() {
            self.token.clone()
        } else if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("admin.token_file {}: {e}", f.display()))?;
            Secret(text.trim_end_matches(['\n', '\r']).to_owned())
        } else {
            return Ok(AdminAuth { digest: None });
        };
        if token.0.chars().count() < MIN_TOKEN_LEN {
            return Err(format!("admin.token must have at least {MIN_TOKEN_LEN} characters"));
        }
        if token.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("admin.token must not contain whitespace or control characters".into());
        }
        Ok(AdminAuth { digest: Some(Sha256::digest(token.0.as_bytes()).into()) })
    }
}

/// Checks `Authorization` headers against the configured token. Only the
/// token's SHA-256 is kept; comparing digests with a constant-time fold makes
/// the time taken independent of where (and whether) the guess differs, and
/// of its length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminAuth {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth").field("enabled", &self.digest.is_some()).finish()
    }
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token is configured: the endpoints are off (403).
    #[error(
        "admin endpoints are disabled: no admin token is configured (set RECSYS__ADMIN__TOKEN or admin.token_file)"
    )]
    Disabled,
    /// No `Authorization: Bearer …` header (401).
    #[error("missing bearer token: send Authorization: Bearer <admin token>")]
    Missing,
    /// A token that is not the configured one (401).
    #[error("invalid bearer token")]
    Invalid,
}

impl AdminAuth {
    /// Admin endpoints off.
    pub fn disabled() -> AdminAuth {
        AdminAuth { digest: None }
    }

    pub fn enabled(&self) -> bool {
        self.digest.is_some()
    }

    /// Checks the value of an `Authorization` header.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let Some(want) = &self.digest else { return Err(AuthError::Disabled) };
        let header = authorization.ok_or(AuthError::Missing)?;
        let token =
            header.strip_prefix(b"Bearer ").or_else(|| header.strip_prefix(b"bearer ")).ok_or(AuthError::Missing)?;
        let got: [u8; 32] = Sha256::digest(token).into();
        let diff = want.iter().zip(got.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-admin-token-0123";

    fn auth() -> AdminAuth {
        AdminConfig { token: Secret::new(TOKEN), token_file: None }.resolve().unwrap()
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let a = auth();
        assert_eq!(a.check(Some(format!("Bearer {TOKEN}").as_bytes())), Ok(()));
        assert_eq!(a.check(None), Err(AuthError::Missing));
        assert_eq!(a.check(Some(TOKEN.as_bytes())), Err(AuthError::Missing), "the scheme is required");
        assert_eq!(a.check(Some(b"Basic dXNlcjpwYXNz")), Err(AuthError::Missing));
        for wrong in [&TOKEN[..TOKEN.len() - 1], "", "s3cret-admin-token-0124", &format!("{TOKEN} ")] {
            assert_eq!(a.check(Some(format!("Bearer {wrong}").as_bytes())), Err(AuthError::Invalid), "{wrong:?}");
        }
    }

    #[test]
    fn no_token_disables_and_weak_tokens_are_refused() {
        let off = AdminConfig::default().resolve().unwrap();
        assert!(!off.enabled());
        assert_eq!(off.check(Some(b"Bearer anything-at-all-here")), Err(AuthError::Disabled));
        let short = AdminConfig { token: Secret::new("short"), token_file: None }.resolve().unwrap_err();
        assert!(short.contains("admin.token") && !short.contains("short"), "{short}");
        let spaced = AdminConfig { token: Secret::new("a token with spaces"), token_file: None };
        assert!(spaced.resolve().is_err());
    }

    #[test]
    fn the_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
        let a = AdminConfig { token: Secret::default(), token_file: Some(f.clone()) }.resolve().unwrap();
        assert_eq!(a.check(Some(format!("Bearer {TOKEN}").as_bytes())), Ok(()));
        let missing = AdminConfig { token: Secret::default(), token_file: Some(dir.path().join("none")) };
        assert!(missing.resolve().unwrap_err().contains("admin.token_file"));
    }

    #[test]
    fn the_token_never_prints() {
        let c = AdminConfig { token: Secret::new(TOKEN), token_file: None };
        for shown in [format!("{c:?}"), format!("{}", c.token), format!("{:?}", c.resolve().unwrap())] {
            assert!(!shown.contains(TOKEN), "{shown}");
        }
    }
}
