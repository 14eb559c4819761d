//! Checks of what makes fewer upstream calls: endpoint options and response shapes.

use std::collections::BTreeMap;

use super::{EndpointOptions, ProviderConfig, ResolvedProvider};
use crate::foundation::error::Error;
use crate::foundation::shape::{check_pointer, Shape};
use crate::foundation::template::Template;

/// A provider's `batch` for one endpoint, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResolvedBatch {
    pub path: Template,
    pub param: String,
    pub query: String,
    pub join: String,
    /// The item pointer, `{param}` still in it.
    pub item: String,
}
/// `at` is the endpoint's own path, `services.S.endpoints.E`; `providers` are the
/// service's.
pub(super) fn check_endpoint(
    at: &str,
    name: &str,
    options: &EndpointOptions,
    providers: &[ResolvedProvider],
) -> Result<(), Error> {
    let serving = match name.starts_with('/') {
        true => providers.len(),
        false => providers
            .iter()
            .filter(|p| p.endpoints.contains_key(name))
            .count(),
    };
    if serving == 0 {
        return Err(Error::config(
            at,
            format!("no provider of the service serves endpoint `{name}`"),
        ));
    }
    if options.batch_window_ms > 0 {
        if options.batch_max == 0 {
            return Err(Error::config(
                format!("{at}.batch_max"),
                "must be at least 1",
            ));
        }
        let mut batches = providers.iter().filter_map(|p| p.batches.get(name));
        let Some(first) = batches.next() else {
            return Err(Error::config(
                format!("{at}.batch_window_ms"),
                format!("no provider of the service declares a batch for endpoint `{name}`"),
            ));
        };
        if let Some(other) = batches.find(|b| b.param != first.param) {
            return Err(Error::config(
                format!("{at}.batch_window_ms"),
                format!(
                    "the providers' batches name different items (`{}` and `{}`); one request \
                     parameter must name the item for all",
                    first.param, other.param
                ),
            ));
        }
    }
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

/// A provider's batches, each for an endpoint it serves. `at` is the provider's path.
pub(super) fn resolve_batches(
    at: &str,
    p: &ProviderConfig,
) -> Result<BTreeMap<String, ResolvedBatch>, Error> {
    let mut batches = BTreeMap::new();
    for (endpoint, b) in &p.batch {
        let here = format!("{at}.batch.{endpoint}");
        if !p.endpoints.contains_key(endpoint) {
            return Err(Error::config(
                here,
                format!("the provider does not serve endpoint `{endpoint}` (see its endpoints)"),
            ));
        }
        let path = Template::parse(&b.path)
            .map_err(|why| Error::config(format!("{here}.path"), format!("{:?} {why}", b.path)))?;
        for (key, value) in [("param", &b.param), ("query", &b.query), ("join", &b.join)] {
            if value.is_empty() {
                return Err(Error::config(format!("{here}.{key}"), "must not be empty"));
            }
        }
        let placeholder = format!("{{{}}}", b.param);
        if !b.item.contains(&placeholder) {
            return Err(Error::config(
                format!("{here}.item"),
                format!(
                    "{:?} does not name its param: it needs {placeholder} where the item goes",
                    b.item
                ),
            ));
        }
        if let Err(why) = check_pointer(&b.item.replace(&placeholder, "x")) {
            return Err(Error::config(
                format!("{here}.item"),
                format!("{:?} is not a JSON pointer: {why}", b.item),
            ));
        }
        if path.params().any(|used| used == b.param) {
            return Err(Error::config(
                format!("{here}.path"),
                format!("the items go in the query `{}`, not the path", b.query),
            ));
        }
        batches.insert(
            endpoint.clone(),
            ResolvedBatch {
                path,
                param: b.param.clone(),
                query: b.query.clone(),
                join: b.join.clone(),
                item: b.item.clone(),
            },
        );
    }
    Ok(batches)
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
