//! The `[dashboard]` table.

use serde::{Deserialize, Serialize};

use crate::foundation::secrets;

/// The `[dashboard]` table. `Debug` and `Serialize` show the token as `[redacted]`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Enables operator actions (force a circuit open or closed, switch a strategy) for
    /// requests that carry `Authorization: Bearer <token>`. None (the default) turns them off.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "secrets::redacted_token"
    )]
    pub token: Option<String>,
    /// Lets `serve_dashboard` bind an address other than loopback. Defaults to false.
    pub allow_remote: bool,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("token", &self.token.as_ref().map(|_| secrets::REDACTED))
            .field("allow_remote", &self.allow_remote)
            .finish()
    }
}
