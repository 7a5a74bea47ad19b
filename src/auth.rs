//! Authentication and authorization: HS256 JWTs, roles, room scoping and masking.
//!
//! Invariants:
//! - Only `alg: HS256` is accepted; the signature is checked in constant time before the claims
//!   are read; an expired token is refused. Every failure is the same 401 to the caller.
//! - What a role may do is decided here, in [`may_read_cases`], [`may_write`] and [`may_take_step`];
//!   handlers ask, they do not decide.
//! - The signing secret comes from configuration or from a file in the data folder created on
//!   first start, so the embedded default is never unsigned and `tiaojie token` signs with the
//!   same secret as the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::path::Path;
use tiaojie_domain::{CaseFile, Step};

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and files cases in its rooms; records steps where assigned.
    Mediator,
    /// Everything on cases of its rooms.
    RoomAdmin,
    /// Reads everything, writes nothing.
    Auditor,
    /// Reads rooms and statistics only.
    Dashboard,
    /// Everything.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Mediator => "mediator",
            Role::RoomAdmin => "room_admin",
            Role::Auditor => "auditor",
            Role::Dashboard => "dashboard",
            Role::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Mediator,
            Role::RoomAdmin,
            Role::Auditor,
            Role::Dashboard,
            Role::Admin,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The claims of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The person's id, e.g. `m-0001`.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// The rooms of a mediator or room admin.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The person's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who is calling, from a verified token.
pub type Principal = Claims;

/// Why a token was refused (all answered 401; the reason is logged, not echoed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url parts, or not JSON.
    #[error("malformed token")]
    Malformed,
    /// Not HS256.
    #[error("unsupported algorithm")]
    Algorithm,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// Past `exp`.
    #[error("expired token")]
    Expired,
}

/// The HMAC key tokens are signed with.
pub struct JwtKey(SecretString);

impl JwtKey {
    /// A key from a configured secret.
    pub fn new(secret: SecretString) -> JwtKey {
        JwtKey(secret)
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length")
    }

    /// Signs claims as an HS256 JWT.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Verifies a token and returns its claims. `now` is seconds since the Unix epoch.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed)?;
        let parsed: Header =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        if parsed.alg != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::Signature)?;
        let claims_json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&claims_json).map_err(|_| AuthError::Malformed)?;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// The secret from configuration, or else the one kept in `data_dir/jwt-secret`, created with
/// 256 random bits on first use (readable by its owner only).
pub fn load_or_create_secret(
    configured: Option<SecretString>,
    data_dir: &Path,
) -> Result<SecretString, String> {
    if let Some(secret) = configured {
        if secret.expose_secret().len() < 16 {
            return Err("TIAOJIE_JWT_SECRET must be at least 16 characters".into());
        }
        return Ok(secret);
    }
    let path = data_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if existing.len() >= 16 {
            return Ok(SecretString::from(existing));
        }
        return Err(format!(
            "{} is too short to be a signing secret",
            path.display()
        ));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| format!("no randomness for the signing secret: {e}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &secret)?;
    // Another process may have created it first: whatever is on disk now is the secret.
    let stored = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(SecretString::from(stored.trim().to_string()))
}

fn write_private(path: &Path, secret: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => file
            .write_all(secret.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// Whether the caller's rooms include `room` (admins and auditors see every room).
pub fn in_scope(p: &Principal, room: &str) -> bool {
    match p.role {
        Role::Admin | Role::Auditor => true,
        Role::Mediator | Role::RoomAdmin => p.rooms.iter().any(|r| r == room),
        Role::Dashboard => false,
    }
}

/// Whether the role reads cases and their histories at all (dashboards do not).
pub fn may_read_cases(p: &Principal) -> bool {
    !matches!(p.role, Role::Dashboard)
}

/// Whether the role writes at all (auditors and dashboards do not).
pub fn may_write(p: &Principal) -> bool {
    matches!(p.role, Role::Mediator | Role::RoomAdmin | Role::Admin)
}

/// Whether the caller may take `step` on a case in its scope: room admins and admins may take
/// any; a mediator may accept, decline and add notes on any case of its rooms, and record the
/// mediation's own steps only where assigned; assigning, recusing, transferring and closing are
/// the room admin's.
pub fn may_take_step(p: &Principal, step: Step, case: &CaseFile) -> bool {
    match p.role {
        Role::Admin | Role::RoomAdmin => true,
        Role::Auditor | Role::Dashboard => false,
        Role::Mediator => match step {
            Step::Accept | Step::Decline | Step::AddNote => true,
            Step::RecordSession
            | Step::Resolve
            | Step::Terminate
            | Step::RecordJudicialConfirmation
            | Step::RecordFollowUp => case.mediators.iter().any(|m| m.mediator_id == p.sub),
            Step::AssignMediator | Step::RecuseMediator | Step::Transfer | Step::Close => false,
        },
    }
}

/// Whether the caller sees personal fields unmasked: the case's own room staff and admins.
pub fn sees_personal_data(p: &Principal, case_room: &str) -> bool {
    match p.role {
        Role::Admin => true,
        Role::Mediator | Role::RoomAdmin => p.rooms.iter().any(|r| r == case_room),
        Role::Auditor | Role::Dashboard => false,
    }
}

/// Parses a lifetime such as `8h`, `30m`, `7d` or `3600s` into seconds.
pub fn parse_ttl(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("invalid lifetime {s:?}; use e.g. 8h, 30m, 7d"))?;
    let factor = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid lifetime {s:?}; use e.g. 8h, 30m, 7d")),
    };
    if n <= 0 {
        return Err("the lifetime must be positive".into());
    }
    n.checked_mul(factor)
        .ok_or_else(|| "the lifetime is too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> JwtKey {
        JwtKey::new(SecretString::from(
            "a-test-secret-of-enough-length".to_string(),
        ))
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "m-0001".into(),
            role: Role::Mediator,
            rooms: vec!["R01".into()],
            exp,
            iat: None,
            name: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let token = key().sign(&claims(2_000));
        assert_eq!(key().verify(&token, 1_000).unwrap().sub, "m-0001");
        assert_eq!(key().verify(&token, 2_000).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn another_secret_or_alg_none_is_refused() {
        let other = JwtKey::new(SecretString::from(
            "another-secret-of-enough-length".to_string(),
        ));
        let token = other.sign(&claims(2_000));
        assert_eq!(
            key().verify(&token, 1_000).unwrap_err(),
            AuthError::Signature
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = token.split('.').nth(1).unwrap();
        assert_eq!(
            key()
                .verify(&format!("{header}.{payload}."), 1_000)
                .unwrap_err(),
            AuthError::Algorithm
        );
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("8h").unwrap(), 28_800);
        assert_eq!(parse_ttl("30m").unwrap(), 1_800);
        assert!(parse_ttl("8x").is_err());
        assert!(parse_ttl("0h").is_err());
    }
}
