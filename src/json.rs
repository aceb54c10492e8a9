//! Reading JSON strictly (nothing may follow the value) with errors that
//! name the offending field: shared by request bodies and payment
//! notifications.

use std::fmt;

use serde::de::DeserializeOwned;

/// Why bytes did not read as the expected JSON.
#[derive(Debug)]
pub enum JsonProblem {
    /// Not JSON at all (or cut short).
    Syntax(serde_json::Error),
    /// JSON of the wrong shape; `path` names the field (`.`: the whole value).
    Data {
        path: String,
        error: serde_json::Error,
    },
}

impl fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(error) => write!(f, "not valid JSON: {error}"),
            Self::Data { path, error } if path == "." => write!(f, "{error}"),
            Self::Data { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

/// Reads `bytes` as one `T`, and nothing after it.
///
/// Read once without tracking where the reader is, which allocates the
/// name of every key read; only what fails is read again to name the
/// field (the same bytes fail the same way).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonProblem> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| (err.path().to_string(), err.into_inner()))
        .and_then(|value| {
            // Trailing characters after the JSON value.
            deserializer
                .end()
                .map(|()| value)
                .map_err(|err| (".".to_owned(), err))
        });
    parsed.map_err(|(path, error)| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => JsonProblem::Data { path, error },
            Category::Syntax | Category::Eof | Category::Io => JsonProblem::Syntax(error),
        }
    })
}
