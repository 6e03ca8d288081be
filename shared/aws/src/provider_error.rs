//! SDK errors of the message providers (SES v2, SNS) as a
//! [`ProviderError`]: throttled (retry with backoff), unavailable (retry), or
//! rejected (this message will never go: dead-letter it with the reason).

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
            } else if OPERATIONAL_CODES.contains(&code) || status.is_server_error() {
                ProviderError::Unavailable(message)
            } else if status.is_client_error() {
                ProviderError::Rejected(message)
            } else {
                ProviderError::Unavailable(message)
            }
        }
        // The request could not even be built: the same message will fail
        // the same way again.
        SdkError::ConstructionFailure(_) => {
            ProviderError::Rejected(format!("{operation}: {}", DisplayErrorContext(err)))
        }
        // Timeouts, connection failures, unreadable responses.
        _ => ProviderError::Unavailable(format!("{operation}: {}", DisplayErrorContext(err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sesv2::config::http::HttpResponse;
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
            (500, "InternalFailure", "unavailable"),
            (503, "ServiceUnavailable", "unavailable"),
        ];
        for (status, code, expected) in cases {
            let mapped = provider_error("SES SendEmail", &service_error(status, code));
            assert_eq!(kind(mapped.clone()), expected, "{status} {code}: {mapped}");
            assert!(mapped.to_string().contains(code), "{mapped}");
        }
    }

    #[test]
    fn timeouts_and_construction_failures() {
        let timeout: SdkError<SendEmailError> = SdkError::timeout_error("took too long");
        assert_eq!(kind(provider_error("op", &timeout)), "unavailable");
        let construction: SdkError<SendEmailError> = SdkError::construction_failure("missing field");
        assert_eq!(kind(provider_error("op", &construction)), "rejected");
    }
}
