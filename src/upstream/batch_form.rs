//! A provider's batch form of an endpoint: the one call that asks for many items, and
//! each item's part of its answer.

use serde_json::Value;

use crate::foundation::config::ResolvedBatch;
use crate::foundation::shape::Shape;
use crate::foundation::template::{append_unused, encode_component};
use crate::foundation::text::Text;

/// The path and query of the batch call for `items` (distinct names), with the first
/// request's other parameters filling the path or following in the query.
pub(crate) fn target(batch: &ResolvedBatch, params: &[(Text, Text)], items: &[&str]) -> String {
    let others: Vec<(Text, Text)> = params
        .iter()
        .filter(|(k, _)| *k != batch.param)
        .cloned()
        .collect();
    let mut out = String::with_capacity(64 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    let used = batch.path.render(&others, &mut out);
    let mut sep = if out.contains('?') { '&' } else { '?' };
    append_unused(&others, used, &mut sep, &mut out);
    out.push(sep);
    encode_component(&batch.query, &mut out);
    out.push('=');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            encode_component(&batch.join, &mut out);
        }
        encode_component(item, &mut out);
    }
    out
}

/// One item's part of a batch answer.
#[derive(Debug)]
pub(crate) struct Item {
    pub body: Vec<u8>,
    /// The provider's own, when a shape made `body`.
    pub raw: Option<Vec<u8>>,
}

/// Each item's body in a 2xx batch answer, in the order of `items`: its JSON value at
/// the item pointer (shaped when the provider has a shape), `None` where the answer has
/// none. Fails when the answer is not JSON.
pub(crate) fn split(
    batch: &ResolvedBatch,
    shape: Option<&Shape>,
    body: &[u8],
    items: &[&str],
) -> Result<Vec<Option<Item>>, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("the batch answer is not JSON ({e})"))?;
    let placeholder = format!("{{{}}}", batch.param);
    Ok(items
        .iter()
        .map(|item| {
            // RFC 6901: `~` and `/` in a name are escaped in a pointer.
            let token = item.replace('~', "~0").replace('/', "~1");
            let value = answer.pointer(&batch.item.replace(&placeholder, &token))?;
            let raw = serde_json::to_vec(value).ok()?;
            Some(match shape {
                Some(shape) => Item {
                    body: serde_json::to_vec(&shape.apply_value(value)).ok()?,
                    raw: Some(raw),
                },
                None => Item {
                    body: raw,
                    raw: None,
                },
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::template::Template;

    fn batch(item: &str) -> ResolvedBatch {
        ResolvedBatch {
            path: Template::parse("/v2/{market}/quotes").unwrap(),
            param: "symbol".into(),
            query: "symbols".into(),
            join: ",".into(),
            item: item.into(),
        }
    }

    #[test]
    fn the_call_lists_the_items_and_keeps_the_other_parameters() {
        let params = vec![
            (Text::from("market"), Text::from("us")),
            (Text::from("symbol"), Text::from("AAPL")),
            (Text::from("fields"), Text::from("p t")),
        ];
        assert_eq!(
            target(
                &batch("/results/{symbol}"),
                &params,
                &["AAPL", "BRK/B", "MSFT"]
            ),
            "/v2/us/quotes?fields=p%20t&symbols=AAPL%2CBRK%2FB%2CMSFT"
        );
    }

    #[test]
    fn each_item_gets_its_own_value_and_a_missing_one_none() {
        let body = br#"{"results":{"AAPL":{"p":1},"BRK/B":{"p":2}}}"#;
        let got = split(
            &batch("/results/{symbol}"),
            None,
            body,
            &["AAPL", "BRK/B", "ZZZ"],
        )
        .unwrap();
        assert_eq!(got[0].as_ref().unwrap().body, br#"{"p":1}"#);
        assert_eq!(got[1].as_ref().unwrap().body, br#"{"p":2}"#);
        assert!(got[2].is_none());
        assert!(split(&batch("/r/{symbol}"), None, b"<html>", &["A"]).is_err());
    }
}
