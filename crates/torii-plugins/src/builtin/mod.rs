//! The built-in plugins, and the one list that registers them.
//!
//! Adding a plugin: write a type implementing [`crate::PluginFactory`] in its own module and
//! add one `Registration::of::<T>()` line below. Nothing else matches on plugin names.

pub mod basic_auth;
pub mod key_auth;
mod util;

use crate::Registration;

/// Every built-in plugin.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::of::<key_auth::KeyAuth>(),
        Registration::of::<basic_auth::BasicAuth>(),
    ]
}
