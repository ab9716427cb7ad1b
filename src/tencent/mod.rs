//! The Tencent Cloud API and nothing else: signing, wire types, one signed call per action,
//! credentials and endpoints. Nothing here knows about metrics, retries or schedules.

pub mod apiclock;
pub mod apitime;
pub mod client;
pub mod credentials;
pub mod model;
pub mod paging;
pub mod sign;

pub use client::{Client, ClientOptions};

use std::sync::{Mutex, OnceLock};

/// Responses larger than this are rejected (docs/semantics.md#faults).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// API error codes that are worth a label of their own; anything else is folded into its family
/// (the part before the first dot) or `Other`, so the `code` label stays bounded.
const KNOWN_CODES: &[&str] = &[
    "AuthFailure",
    "AuthFailure.InvalidAuthorization",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.MFAFailure",
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.SignatureExpire",
    "AuthFailure.SignatureFailure",
    "AuthFailure.TokenFailure",
    "AuthFailure.UnauthorizedOperation",
    "CdbError",
    "FailedOperation",
    "InternalError",
    "InternalError.CdbError",
    "InternalError.DatabaseAccessError",
    "InternalError.DesError",
    "InternalError.FtpError",
    "InternalError.UndefinedError",
    "InternalError.UnknownError",
    "InvalidAction",
    "InvalidParameter",
    "InvalidParameter.InstanceNotFound",
    "InvalidParameterValue",
    "InvalidParameterValue.DataConvertError",
    "LimitExceeded",
    "MissingParameter",
    "NoSuchVersion",
    "OperationDenied",
    "OperationDenied.UserHasNoStrategy",
    "OperationDenied.WrongStatus",
    "RequestLimitExceeded",
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
    "RequestLimitExceeded.IPLimitExceeded",
    "RequestLimitExceeded.UinLimitExceeded",
    "ResourceNotFound",
    "ResourceUnavailable",
    "ServiceUnavailable",
    "UnauthorizedOperation",
    "UnknownParameter",
    "UnsupportedRegion",
];

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The API answered with `Response.Error`.
    #[error("API error {code}: {message} (RequestId {request_id})")]
    Api {
        /// `Error.Code`
        code: String,
        /// `Error.Message`
        message: String,
        /// `RequestId`
        request_id: String,
    },
    /// `AuthFailure.SignatureExpire`, and the answer's `Date` corrected the clock offset the
    /// request was signed with (docs/semantics.md#clock-skew): signed again, the same request can pass.
    #[error(
        "API error AuthFailure.SignatureExpire; the API's clock is {offset}s from this host's, signing with it from now on"
    )]
    ClockCorrected {
        /// API clock minus local clock, seconds.
        offset: i64,
    },
    /// A non-200 HTTP status (gateway or transport trouble; API errors come with 200).
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// Connection, TLS or protocol failure.
    #[error("transport error: {0}")]
    Transport(String),
    /// The body could not be decoded as a `DescribeTasks` answer.
    #[error("undecodable response: {0}")]
    Decode(String),
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("response larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// No credentials could be obtained.
    #[error("credentials unavailable: {0}")]
    Credentials(String),
    /// A query ran into the page ceiling (a server that never stops paging, or more tasks than
    /// any region has).
    #[error("paging stopped after {0} pages (the ceiling per query)")]
    PagingLimit(u64),
    /// The poll ran past its deadline.
    #[error("the poll ran past its deadline")]
    Deadline,
    /// The poll was stopped (shutdown or reload): not a failure of the API.
    #[error("stopped")]
    Cancelled,
}

impl Error {
    /// Whether retrying the same request can help (docs/semantics.md#faults): throttling, server-side and
    /// transport trouble yes; authentication (`AuthFailure.*`) and parameter errors no.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { code, .. } => {
                let family = code.split('.').next().unwrap_or(code);
                matches!(
                    family,
                    "RequestLimitExceeded"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "ResourceUnavailable"
                )
            }
            Error::HttpStatus(status) => *status >= 500 || *status == 429,
            Error::Timeout
            | Error::Transport(_)
            | Error::Decode(_)
            | Error::ClockCorrected { .. } => true,
            Error::TooLarge
            | Error::Credentials(_)
            | Error::PagingLimit(_)
            | Error::Deadline
            | Error::Cancelled => false,
        }
    }

    /// Whether this is throttling by the API.
    pub fn is_throttling(&self) -> bool {
        matches!(self, Error::Api { code, .. } if code.starts_with("RequestLimitExceeded"))
    }

    /// A bounded value for the `code` label of `..._api_errors_total`.
    pub fn as_label(&self) -> &'static str {
        match self {
            Error::Api { code, .. } => code_label(code),
            Error::ClockCorrected { .. } => "AuthFailure.SignatureExpire",
            Error::HttpStatus(s) => http_status_label(*s),
            Error::Timeout => "Timeout",
            Error::Transport(_) => "Transport",
            Error::Decode(_) => "Decode",
            Error::TooLarge => "TooLarge",
            Error::Credentials(_) => "Credentials",
            Error::PagingLimit(_) => "PagingLimit",
            Error::Deadline => "PollDeadline",
            Error::Cancelled => "Cancelled",
        }
    }
}

/// How many codes outside [`KNOWN_CODES`] get a label of their own before the rest are folded.
const MAX_EXTRA_CODES: usize = 64;

/// The API's error code as a label: known codes as they are; a new code that looks like one
/// (letters, digits, dots) as it is too, up to [`MAX_EXTRA_CODES`] of them per process; anything
/// else its family or `Other`. The set of label values stays bounded whatever a server sends.
fn code_label(code: &str) -> &'static str {
    if let Some(known) = KNOWN_CODES.iter().find(|k| **k == code) {
        return known;
    }
    static EXTRA: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let looks_like_code = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if looks_like_code {
        let mut extra = EXTRA
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(seen) = extra.iter().find(|c| **c == code) {
            return seen;
        }
        if extra.len() < MAX_EXTRA_CODES {
            let leaked: &'static str = Box::leak(code.to_string().into_boxed_str());
            extra.push(leaked);
            return leaked;
        }
    }
    let family = code.split('.').next().unwrap_or_default();
    KNOWN_CODES
        .iter()
        .find(|k| **k == family)
        .copied()
        .unwrap_or("Other")
}

/// `HttpStatus<NNN>` for any status.
fn http_status_label(status: u16) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|s| format!("HttpStatus{s}")).collect());
    labels
        .get(usize::from(status))
        .map_or("HttpStatusOther", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> Error {
        Error::Api {
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
        }
    }

    #[test]
    fn retry_policy_follows_the_api_notes() {
        for code in [
            "RequestLimitExceeded",
            "RequestLimitExceeded.UinLimitExceeded",
            "RequestLimitExceeded.IPLimitExceeded",
            "InternalError",
            "InternalError.DesError",
            "ServiceUnavailable",
        ] {
            assert!(api(code).is_retryable(), "{code}");
        }
        for code in [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SignatureExpire",
            "AuthFailure.TokenFailure",
            "AuthFailure.SecretIdNotFound",
            "InvalidParameter",
            "InvalidParameter.InstanceNotFound",
            "InvalidAction",
            "UnauthorizedOperation",
        ] {
            assert!(!api(code).is_retryable(), "{code}");
        }
        assert!(
            Error::ClockCorrected { offset: 900 }.is_retryable(),
            "once: signed again with the corrected clock"
        );
        assert_eq!(
            Error::ClockCorrected { offset: 900 }.as_label(),
            "AuthFailure.SignatureExpire"
        );
        assert!(Error::HttpStatus(502).is_retryable());
        assert!(!Error::HttpStatus(404).is_retryable());
        assert!(Error::Timeout.is_retryable());
        assert!(!Error::TooLarge.is_retryable());
        assert!(api("RequestLimitExceeded.UinLimitExceeded").is_throttling());
        assert!(!api("InternalError").is_throttling());
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            api("InternalError.DesError").as_label(),
            "InternalError.DesError"
        );
        assert_eq!(
            api("InternalError.BrandNew").as_label(),
            "InternalError.BrandNew"
        );
        assert_eq!(api("InternalError.<script>").as_label(), "InternalError");
        assert_eq!(api("weird code").as_label(), "Other");
        for i in 0..200 {
            api(&format!("FailedOperation.Flood{i}")).as_label();
        }
        assert_eq!(
            api("FailedOperation.Flood199").as_label(),
            "FailedOperation"
        );
        assert_eq!(Error::HttpStatus(502).as_label(), "HttpStatus502");
        assert_eq!(Error::HttpStatus(599).as_label(), "HttpStatus599");
        assert_eq!(Error::HttpStatus(700).as_label(), "HttpStatusOther");
        assert_eq!(Error::Decode("x".into()).as_label(), "Decode");
    }
}
