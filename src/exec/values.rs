//! A job's values as its process receives them: `!retval` replaced by the pinned build's
//! return value, `!secret` by the secret, then each value as one string.

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::config::{JobId, Value};

/// The value with every reference resolved. A `!retval` of a job without a return value is
/// `null`.
pub fn resolve(
    value: &Value,
    retvals: &HashMap<JobId, Json>,
    secrets: &IndexMap<String, String>,
) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::List(items) => {
            Json::Array(items.iter().map(|v| resolve(v, retvals, secrets)).collect())
        }
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.to_owned(), resolve(v, retvals, secrets)))
                .collect(),
        ),
        Value::Retval(job) => retvals.get(job).cloned().unwrap_or(Json::Null),
        Value::Secret(name) => Json::String(secrets.get(name).cloned().unwrap_or_default()),
    }
}

/// How a value reaches a process as one string: a string as it is, `null` as nothing,
/// anything else as JSON.
pub fn to_arg(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_resolve_and_values_become_strings() {
        let crawl = JobId::parse("crawl").unwrap();
        let retvals = HashMap::from([(crawl.clone(), json!({"dir": "/data"}))]);
        let secrets = IndexMap::from([("token".to_owned(), "s3cret".to_owned())]);
        let value = Value::List(vec![
            Value::Retval(crawl),
            Value::Secret("token".into()),
            Value::Int(3),
            Value::Null,
        ]);
        let resolved = resolve(&value, &retvals, &secrets);
        assert_eq!(resolved, json!([{"dir": "/data"}, "s3cret", 3, null]));
        let args: Vec<String> = resolved.as_array().unwrap().iter().map(to_arg).collect();
        assert_eq!(args, [r#"{"dir":"/data"}"#, "s3cret", "3", ""]);
    }
}
