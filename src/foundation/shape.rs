//! One response shape whatever the provider: a provider's JSON answer becomes an object
//! of named values, each read at a JSON pointer (RFC 6901) into that answer.

use serde_json::{Map, Value};

/// Fields and where each is read in one provider's answer for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    fields: Vec<(String, String)>,
}

impl Shape {
    /// Checks every pointer; the error names the first field whose pointer is not one.
    pub fn parse<'a>(
        fields: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Shape, (String, String)> {
        let mut out = Vec::new();
        for (name, pointer) in fields {
            if let Err(why) = check_pointer(pointer) {
                return Err((
                    name.clone(),
                    format!("{pointer:?} is not a JSON pointer: {why}"),
                ));
            }
            out.push((name.clone(), pointer.clone()));
        }
        Ok(Shape { fields: out })
    }

    /// The shaped body: a JSON object with one member per field, `null` where the
    /// answer has nothing at that pointer. Fails when the answer is not JSON.
    pub fn apply(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let answer: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the answer is not JSON, which its shape needs ({e})"))?;
        serde_json::to_vec(&self.apply_value(&answer)).map_err(|e| e.to_string())
    }

    /// The shaped object of an answer already parsed.
    pub fn apply_value(&self, answer: &Value) -> Value {
        let mut shaped = Map::with_capacity(self.fields.len());
        for (name, pointer) in &self.fields {
            let value = answer.pointer(pointer).cloned().unwrap_or(Value::Null);
            shaped.insert(name.clone(), value);
        }
        Value::Object(shaped)
    }
}

/// RFC 6901: empty (the whole document), or `/`-separated tokens where `~` only begins
/// `~0` or `~1`.
pub(crate) fn check_pointer(pointer: &str) -> Result<(), &'static str> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err("it must be empty or start with /");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("~ must be followed by 0 or 1");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(fields: &[(&str, &str)]) -> Result<Shape, (String, String)> {
        let owned: Vec<(String, String)> = fields
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Shape::parse(owned.iter().map(|(a, b)| (a, b)))
    }

    #[test]
    fn fields_are_read_at_their_pointers_and_missing_ones_are_null() {
        let s = shape(&[
            ("price", "/results/0/p"),
            ("odd", "/a~1b"),
            ("gone", "/x/y"),
        ])
        .unwrap();
        let body = br#"{"results":[{"p":12.5,"t":1}],"a/b":"slash"}"#;
        let shaped: Value = serde_json::from_slice(&s.apply(body).unwrap()).unwrap();
        assert_eq!(
            shaped,
            serde_json::json!({"price": 12.5, "odd": "slash", "gone": null})
        );
    }

    #[test]
    fn an_answer_that_is_not_json_is_refused() {
        let s = shape(&[("price", "/p")]).unwrap();
        assert!(s.apply(b"<html>").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn pointers_are_checked() {
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/a/~0/~1").is_ok());
        let (field, why) = shape(&[("ok", "/a"), ("bad", "results/0")]).unwrap_err();
        assert_eq!(field, "bad");
        assert!(why.contains("start with /"), "{why}");
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }
}
