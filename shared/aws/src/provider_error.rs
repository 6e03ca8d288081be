//! SDK errors of the message providers (SES v2, SNS) as a
//! [`ProviderError`]. Three kinds prove nothing was sent, and the claim is
//! given back: throttled (retry with backoff), unavailable (retry: no
//! connection could be made, or the account cannot send now), rejected (a
//! 4xx about this message: it will never go, dead-letter it with the
//! reason). Everything else may have happened after the provider took the
//! message (a timeout, a connection lost after the request went out, a 5xx,
//! an unreadable answer): the outcome is unknown, and the message must not
//! simply be sent again (docs/decisions/0032-unknown-send-outcomes.md).
//!
//! The send calls run with the SDK's own retries off ([`no_sdk_retries`]):
//! the SDK retries timeouts and 5xx, which for `SendEmail` and `Publish`
//! (no idempotency token) can send the same message twice.

use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use crm_core::messaging::provider::ProviderError;

/// Too many requests, across SES v2 (restJson names) and SNS (awsQuery codes).
const THROTTLED_CODES: &[&str] = &[
    "TooManyRequestsException",
    "LimitExceededException",
    "Throttling",
    "ThrottlingException",
    "Throttled",
    "ThrottledException",
    "RequestThrottled",
    "KMSThrottling",
    "KMSThrottlingException",
];

/// The message itself is refused: retrying the same message cannot help.
const REJECTED_CODES: &[&str] = &[
    // SES v2
    "MessageRejected",
    "MailFromDomainNotVerifiedException",
    "NotFoundException",
    "BadRequestException",
    // SNS
    "NotFound",
    "InvalidParameter",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "ParameterValueInvalid",
    "EndpointDisabled",
    "EndpointDisabledException",
    "PlatformApplicationDisabled",
    "PlatformApplicationDisabledException",
    "ValidationException",
    "ValidationError",
];

/// Trouble with the account or its credentials, not with the message: retry
/// (and alarm) rather than dead-letter every message meanwhile.
const OPERATIONAL_CODES: &[&str] = &[
    "AccountSuspendedException",
    "SendingPausedException",
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "AuthorizationErrorException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSecurity",
    "InvalidSecurityException",
    "KMSAccessDenied",
    "KMSDisabled",
    "KMSInvalidState",
    "KMSNotFound",
    "KMSOptInRequired",
];

/// The retry configuration of a send call: one attempt. Throttling is
/// retried by the channel (`MessageDelivery`) with backoff; what else fails
/// is either proven unsent (the delivery is retried) or unknown (settled).
pub(crate) fn no_sdk_retries() -> aws_sdk_sesv2::config::retry::RetryConfig {
    aws_sdk_sesv2::config::retry::RetryConfig::disabled()
}

/// Whether a dispatch failure happened while connecting, so the request
/// never went out: a refused or unreachable address, a failed name lookup,
/// a connect timeout (the HTTP client names these `Connect` errors).
fn failed_to_connect(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("(Connect)") || text.starts_with("dns error") {
            return true;
        }
        next = e.source();
    }
    false
}

/// One SDK error of `operation` as a provider error. (`SdkError` is the same
/// type in every AWS SDK crate, so SES and SNS share this.)
pub(crate) fn provider_error<E>(operation: &str, err: &SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            let status = s.raw().status();
            let message = format!(
                "{operation}: {} (HTTP {}): {}",
                if code.is_empty() { "unknown error" } else { code },
                status.as_u16(),
                s.err().message().unwrap_or("no message")
            );
            if status.as_u16() == 429 || THROTTLED_CODES.contains(&code) {
                ProviderError::Throttled(message)
            } else if REJECTED_CODES.contains(&code) {
                ProviderError::Rejected(message)
            } else if OPERATIONAL_CODES.contains(&code) {
                ProviderError::Unavailable(message)
            } else if status.is_client_error() {
                ProviderError::Rejected(message)
            } else {
                // A 5xx (or anything odd): the provider may have taken it.
                ProviderError::OutcomeUnknown(message)
            }
        }
        // The request could not even be built: the same message will fail
        // the same way again.
        SdkError::ConstructionFailure(_) => {
            ProviderError::Rejected(format!("{operation}: {}", DisplayErrorContext(err)))
        }
        // No connection: the request never went out.
        SdkError::DispatchFailure(failure)
            if failure
                .as_connector_error()
                .is_some_and(|c| failed_to_connect(c as &(dyn std::error::Error + 'static))) =>
        {
            ProviderError::Unavailable(format!("{operation}: {}", DisplayErrorContext(err)))
        }
        // Timeouts, connections lost after the request went out, answers
        // that could not be read.
        _ => ProviderError::OutcomeUnknown(format!("{operation}: {}", DisplayErrorContext(err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sesv2::config::http::HttpResponse;
    use aws_sdk_sesv2::error::ConnectorError;
    use aws_sdk_sesv2::error::ErrorMetadata;
    use aws_sdk_sesv2::operation::send_email::SendEmailError;

    fn service_error(status: u16, code: &str) -> SdkError<SendEmailError> {
        let status = status.try_into().expect("a status code");
        let err = SendEmailError::generic(ErrorMetadata::builder().code(code).message("test").build());
        SdkError::service_error(err, HttpResponse::new(status, "".into()))
    }

    fn kind(err: ProviderError) -> &'static str {
        match err {
            ProviderError::Throttled(_) => "throttled",
            ProviderError::Unavailable(_) => "unavailable",
            ProviderError::Rejected(_) => "rejected",
            ProviderError::OutcomeUnknown(_) => "unknown",
        }
    }

    #[test]
    fn service_errors_map_by_code_then_status() {
        let cases = [
            (429, "TooManyRequestsException", "throttled"),
            (400, "LimitExceededException", "throttled"),
            (400, "Throttling", "throttled"),
            (400, "Throttled", "throttled"),
            (429, "Whatever", "throttled"),
            (400, "MessageRejected", "rejected"),
            (400, "MailFromDomainNotVerifiedException", "rejected"),
            (404, "NotFoundException", "rejected"),
            (400, "BadRequestException", "rejected"),
            (404, "NotFound", "rejected"),
            (400, "InvalidParameter", "rejected"),
            (400, "EndpointDisabled", "rejected"),
            (400, "SomethingNew", "rejected"),
            (400, "SendingPausedException", "unavailable"),
            (403, "AccessDeniedException", "unavailable"),
            (400, "AccountSuspendedException", "unavailable"),
            // A 5xx: SES or SNS may have taken the message.
            (500, "InternalFailure", "unknown"),
            (502, "", "unknown"),
            (503, "ServiceUnavailable", "unknown"),
            (504, "GatewayTimeout", "unknown"),
            // Throttling proves nothing was sent, whatever the status.
            (503, "Throttling", "throttled"),
        ];
        for (status, code, expected) in cases {
            let mapped = provider_error("SES SendEmail", &service_error(status, code));
            assert_eq!(kind(mapped.clone()), expected, "{status} {code}: {mapped}");
            assert!(mapped.to_string().contains(code), "{mapped}");
            assert_eq!(mapped.proves_nothing_sent(), expected != "unknown", "{status} {code}");
            assert_eq!(
                mapped.is_retryable(),
                expected == "throttled" || expected == "unavailable",
                "{status} {code}"
            );
        }
    }

    #[test]
    fn timeouts_lost_connections_and_bad_answers_are_unknown_construction_failures_rejected() {
        let timeout: SdkError<SendEmailError> = SdkError::timeout_error("took too long");
        assert_eq!(kind(provider_error("op", &timeout)), "unknown");
        let construction: SdkError<SendEmailError> = SdkError::construction_failure("missing field");
        assert_eq!(kind(provider_error("op", &construction)), "rejected");
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let lost: SdkError<SendEmailError> = SdkError::dispatch_failure(ConnectorError::io(reset.into()));
        assert_eq!(kind(provider_error("op", &lost)), "unknown");
        let read_timeout: SdkError<SendEmailError> =
            SdkError::dispatch_failure(ConnectorError::timeout("read timed out".into()));
        assert_eq!(kind(provider_error("op", &read_timeout)), "unknown");
        let unreadable: SdkError<SendEmailError> =
            SdkError::response_error("not XML", HttpResponse::new(200.try_into().expect("status"), "".into()));
        assert_eq!(kind(provider_error("op", &unreadable)), "unknown");
    }

    #[test]
    fn a_refused_connection_proves_nothing_was_sent() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err: SdkError<SendEmailError> = SdkError::dispatch_failure(ConnectorError::io(refused.into()));
        assert_eq!(kind(provider_error("op", &err)), "unavailable");
        let dns = std::io::Error::other("dns error: failed to lookup address information");
        let err: SdkError<SendEmailError> = SdkError::dispatch_failure(ConnectorError::io(dns.into()));
        assert_eq!(kind(provider_error("op", &err)), "unavailable");
    }
}
