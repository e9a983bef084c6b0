//! The built-in plugins, and the one list that registers them.
//!
//! Adding a plugin: write a type implementing [`crate::PluginFactory`] in its own module and
//! add one `Registration::of::<T>()` line below. Nothing else matches on plugin names.

pub mod acl;
pub mod basic_auth;
pub mod bot_detection;
pub mod cache;
pub mod changes;
pub mod concurrency_limit;
pub mod cors;
pub mod fault_injection;
pub mod forward_auth;
pub mod introspection;
pub mod ip_restriction;
pub mod jq;
pub mod json_ops;
pub mod jwt;
pub mod key_auth;
pub mod mirror;
pub mod mtls_auth;
pub mod quota;
pub mod rate_limit;
pub mod request_headers;
pub mod request_size_limit;
pub mod request_transform;
pub mod response_transform;
mod util;
pub mod validation;

use crate::Registration;

/// Every built-in plugin.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::of::<key_auth::KeyAuth>(),
        Registration::of::<basic_auth::BasicAuth>(),
        Registration::of::<mtls_auth::MtlsAuth>(),
        Registration::of::<jwt::Jwt>(),
        Registration::of::<introspection::Introspection>(),
        Registration::of::<forward_auth::ForwardAuth>(),
        Registration::of::<ip_restriction::IpRestriction>(),
        Registration::of::<bot_detection::BotDetection>(),
        Registration::of::<cors::Cors>(),
        Registration::of::<request_size_limit::RequestSizeLimit>(),
        Registration::of::<acl::Acl>(),
        Registration::of::<request_headers::RequestHeaders>(),
        Registration::of::<validation::RequestValidation>(),
        Registration::of::<request_transform::RequestTransform>(),
        Registration::of::<response_transform::ResponseTransform>(),
        Registration::of::<mirror::Mirror>(),
        Registration::of::<quota::Quota>(),
        Registration::of::<rate_limit::RateLimit>(),
        Registration::of::<concurrency_limit::ConcurrencyLimit>(),
        Registration::of::<fault_injection::FaultInjection>(),
        Registration::of::<cache::Cache>(),
    ]
}
