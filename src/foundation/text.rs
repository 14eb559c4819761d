//! A request's short strings, kept inline: a service name, an endpoint or a parameter
//! of up to 24 bytes costs no allocation, and a longer `String` is moved, not copied.

use compact_str::CompactString;
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

/// Text a [`Request`](crate::Request) keeps: anything a `String` can be made from
/// converts into it (`&str`, `String`, `&String`, `Box<str>`, `Cow<str>`, `char`).
/// Read it as a `&str`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(CompactString);

impl Text {
    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.0.as_str() == other.as_str()
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(CompactString::from(text))
    }
}

impl From<&mut str> for Text {
    fn from(text: &mut str) -> Self {
        Text(CompactString::from(&*text))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(CompactString::from(text))
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Self {
        Text(CompactString::from(text.as_str()))
    }
}

impl From<Box<str>> for Text {
    fn from(text: Box<str>) -> Self {
        Text(CompactString::from(text))
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(text: Cow<'_, str>) -> Self {
        Text(CompactString::from(text))
    }
}

impl From<char> for Text {
    fn from(c: char) -> Self {
        Text(CompactString::from(&*c.encode_utf8(&mut [0; 4])))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0.into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_from_what_a_string_converts_from_and_reads_back() {
        let long = "a parameter value well past twenty-four bytes".to_string();
        let all: [Text; 7] = [
            "quote".into(),
            String::from("quote").into(),
            (&String::from("quote")).into(),
            Box::<str>::from("quote").into(),
            Cow::Borrowed("quote").into(),
            'q'.into(),
            long.clone().into(),
        ];
        for t in &all[..5] {
            assert_eq!(t, "quote");
        }
        assert_eq!(all[5].as_str(), "q");
        assert_eq!(&*all[6], long.as_str());
        assert_eq!(format!("{:?}", all[0]), "\"quote\"");
        assert_eq!(String::from(all[6].clone()), long);
    }
}
