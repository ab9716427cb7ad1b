//! TC3-HMAC-SHA256 request signing, as a pure function.
//!
//! Inputs are everything the signature depends on (credentials, host, timestamp, content type and
//! the exact body bytes); the output is the intermediate strings and the headers to send. There is
//! no clock and no I/O here, so the official SDK's vectors can be reproduced byte for byte, and the
//! simulator verifies requests with the very same functions.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name, as it appears in the string to sign and the Authorization header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The headers the exporter signs (the same pair the official SDKs sign).
pub const SIGNED_HEADERS: &str = "content-type;host";

/// Everything a signature depends on.
#[derive(Clone, Copy)]
pub struct SignInput<'a> {
    /// SecretId of the key pair (not secret, but not logged either).
    pub secret_id: &'a str,
    /// SecretKey of the key pair.
    pub secret_key: &'a str,
    /// Session token of temporary credentials; sent as `X-TC-Token`, never signed.
    pub token: Option<&'a str>,
    /// The `Host` header value, e.g. `cdb.tencentcloudapi.com`.
    pub host: &'a str,
    /// The service of the credential scope, e.g. `cdb` (the first label of the product host; given
    /// explicitly because a proxy or simulator host does not carry it).
    pub service: &'a str,
    /// `X-TC-Action`, e.g. `DescribeTasks`.
    pub action: &'a str,
    /// `X-TC-Version`, e.g. `2017-03-20`.
    pub version: &'a str,
    /// `X-TC-Region`; empty means the header is not sent.
    pub region: &'a str,
    /// `X-TC-Timestamp`, unix seconds.
    pub timestamp: i64,
    /// The exact `Content-Type` header value that is sent.
    pub content_type: &'a str,
    /// The exact body bytes that are sent.
    pub body: &'a [u8],
}

/// The result of signing: the intermediate strings (for tests and debugging) and the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The canonical request.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// The lower-case hex signature.
    pub signature: String,
    /// The full `Authorization` header value.
    pub authorization: String,
    /// The `X-TC-*`, `Content-Type` and `Authorization` headers to send, in a stable order.
    /// `Host` is left to the HTTP client, which derives it from the URL.
    pub headers: Vec<(&'static str, String)>,
}

/// The service name of a product host: its first label (`cdb` for `cdb.ap-shanghai-fsi.…`).
pub fn service_of_host(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The credential-scope date: the UTC calendar date of `timestamp`, `YYYY-MM-DD`.
pub fn utc_date(timestamp: i64) -> String {
    let days = timestamp.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// The canonical request for a POST to `/` with the given signed headers.
///
/// `headers` are `(lower-case name, value)` pairs in the order of `signed_headers`; values are
/// trimmed (and, as the documentation says, lower-cased) here.
pub fn canonical_request(headers: &[(&str, &str)], signed_headers: &str, body: &[u8]) -> String {
    let mut canonical_headers = String::new();
    for (name, value) in headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&value.trim().to_ascii_lowercase());
        canonical_headers.push('\n');
    }
    format!(
        "POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}",
        sha256_hex(body)
    )
}

/// The string to sign for a canonical request.
pub fn string_to_sign(timestamp: i64, credential_scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The hex signature of `string_to_sign`, with the key derived from `secret_key`, date and service.
pub fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()))
}

/// Signs one request.
pub fn sign(input: &SignInput<'_>) -> Signed {
    let date = utc_date(input.timestamp);
    let service = input.service;
    let scope = format!("{date}/{service}/tc3_request");
    let canonical_request = canonical_request(
        &[("content-type", input.content_type), ("host", input.host)],
        SIGNED_HEADERS,
        input.body,
    );
    let string_to_sign = string_to_sign(input.timestamp, &scope, &canonical_request);
    let signature = signature(input.secret_key, &date, service, &string_to_sign);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}",
        input.secret_id
    );
    let mut headers = vec![
        ("Authorization", authorization.clone()),
        ("Content-Type", input.content_type.to_string()),
        ("X-TC-Action", input.action.to_string()),
        ("X-TC-Timestamp", input.timestamp.to_string()),
        ("X-TC-Version", input.version.to_string()),
    ];
    if !input.region.is_empty() {
        headers.push(("X-TC-Region", input.region.to_string()));
    }
    if let Some(token) = input.token {
        headers.push(("X-TC-Token", token.to_string()));
    }
    Signed {
        canonical_request,
        string_to_sign,
        signature,
        authorization,
        headers,
    }
}

/// The parts of a TC3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// SecretId from the credential.
    pub secret_id: &'a str,
    /// Date from the credential scope.
    pub date: &'a str,
    /// Service from the credential scope.
    pub service: &'a str,
    /// Signed header names, `;`-separated.
    pub signed_headers: &'a str,
    /// The hex signature.
    pub signature: &'a str,
}

/// Parses an `Authorization` header; `None` when it is not a well-formed TC3 header.
pub fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(val),
            "SignedHeaders" => signed_headers = Some(val),
            "Signature" => signature = Some(val),
            _ => return None,
        }
    }
    let mut scope = credential?.splitn(4, '/');
    let secret_id = scope.next()?;
    let date = scope.next()?;
    let service = scope.next()?;
    if scope.next()? != "tc3_request" || secret_id.is_empty() {
        return None;
    }
    Some(Authorization {
        secret_id,
        date,
        service,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_date_handles_midnight_and_old_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_704_153_599), "2024-01-01");
        assert_eq!(utc_date(1_704_153_600), "2024-01-02");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    #[test]
    fn authorization_round_trips() {
        let signed = sign(&SignInput {
            secret_id: "AKIDx",
            secret_key: "k",
            token: None,
            host: "cdb.tencentcloudapi.com",
            service: "cdb",
            action: "DescribeTasks",
            version: "2017-03-20",
            region: "ap-guangzhou",
            timestamp: 1_718_000_000,
            content_type: "application/json",
            body: b"{}",
        });
        let auth = parse_authorization(&signed.authorization).unwrap();
        assert_eq!(auth.secret_id, "AKIDx");
        assert_eq!(auth.date, "2024-06-10");
        assert_eq!(auth.service, "cdb");
        assert_eq!(auth.signed_headers, SIGNED_HEADERS);
        assert_eq!(auth.signature, signed.signature);
        assert!(parse_authorization("Bearer abc").is_none());
        assert!(parse_authorization("TC3-HMAC-SHA256 Credential=a/b, Signature=x").is_none());
    }
}
