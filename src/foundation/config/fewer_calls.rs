//! Checks of what makes fewer upstream calls: endpoint options and response shapes.

use std::collections::BTreeMap;

use super::{EndpointOptions, ProviderConfig};
use crate::foundation::error::Error;
use crate::foundation::shape::Shape;

/// `at` is the endpoint's own path, `services.S.endpoints.E`; `serving` is how many
/// providers serve it.
pub(super) fn check_endpoint(
    at: &str,
    options: &EndpointOptions,
    serving: usize,
) -> Result<(), Error> {
    if options.hedge_after_ms > 0 && serving < 2 {
        return Err(Error::config(
            format!("{at}.hedge_after_ms"),
            "a hedge goes to a different provider, and only one serves this endpoint",
        ));
    }
    if options.cache_ttl_ms > 0 && options.cache_max_entries == 0 {
        return Err(Error::config(
            format!("{at}.cache_max_entries"),
            "must be at least 1 when cache_ttl_ms is set",
        ));
    }
    Ok(())
}

/// A provider's shapes, each for an endpoint it serves. `at` is the provider's path.
pub(super) fn resolve_shapes(
    at: &str,
    p: &ProviderConfig,
) -> Result<BTreeMap<String, Shape>, Error> {
    let mut shapes = BTreeMap::new();
    for (endpoint, fields) in &p.shape {
        let here = format!("{at}.shape.{endpoint}");
        if !p.endpoints.contains_key(endpoint) {
            return Err(Error::config(
                here,
                format!("the provider does not serve endpoint `{endpoint}` (see its endpoints)"),
            ));
        }
        if fields.is_empty() {
            return Err(Error::config(here, "a shape needs at least one field"));
        }
        let shape = Shape::parse(fields)
            .map_err(|(field, why)| Error::config(format!("{here}.{field}"), why))?;
        shapes.insert(endpoint.clone(), shape);
    }
    Ok(shapes)
}
