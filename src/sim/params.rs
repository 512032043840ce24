//! Reading JSON-RPC `params`: strict protocol-v1 typing or the baseline's loose coercion.
//!
//! Strict: only documented keys (`unknown <method> param: <key>`), no explicit nulls, integers must be
//! JSON integers, booleans JSON booleans, string arrays arrays of strings, and a key and its alias
//! never together. Baseline: unknown keys are ignored, numbers accept numeric strings, booleans accept
//! numbers and `"true"`/`"false"`, string arrays accept a comma-separated string, and a value that
//! cannot be coerced counts as absent.

use serde_json::{Map, Value};

use crate::sim::Dialect;

/// A `-32602 Invalid params` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl ParamError {
    fn new(detail: impl Into<String>) -> Self {
        ParamError(detail.into())
    }
}

/// The `params` object of one request, read according to the dialect.
#[derive(Debug, Clone)]
pub struct Params {
    method: String,
    map: Map<String, Value>,
    dialect: Dialect,
}

impl Params {
    /// Strict: `params` must be omitted or an object. Baseline: anything else counts as `{}`.
    pub fn new(method: &str, params: Option<Value>, dialect: Dialect) -> Result<Self, ParamError> {
        let map = match params {
            None => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) if dialect == Dialect::Baseline => Map::new(),
            Some(_) => return Err(ParamError::new("params must be an object")),
        };
        Ok(Params {
            method: method.to_string(),
            map,
            dialect,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn strict(&self) -> bool {
        self.dialect.is_strict()
    }

    /// Strict only: reject any key outside `allowed`.
    pub fn allow(&self, allowed: &[&str]) -> Result<(), ParamError> {
        if !self.strict() {
            return Ok(());
        }
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(ParamError(format!("unknown {} param: {key}", self.method))),
            None => Ok(()),
        }
    }

    /// The value under the first present name of `names` (a key and its aliases).
    ///
    /// Strict: two present names → `use only one of a, b`; an explicit null → `<k> must not be null`.
    /// Baseline: null counts as absent.
    fn lookup<'a>(&'a self, names: &[&'a str]) -> Result<Option<(&'a str, &'a Value)>, ParamError> {
        let present: Vec<(&str, &Value)> = names
            .iter()
            .filter_map(|n| self.map.get(*n).map(|v| (*n, v)))
            .collect();
        match present.as_slice() {
            [] => Ok(None),
            [(name, Value::Null)] => {
                if self.strict() {
                    Err(ParamError(format!("{name} must not be null")))
                } else {
                    Ok(None)
                }
            }
            [one] => Ok(Some(*one)),
            [(a, _), (b, _), ..] => {
                if self.strict() {
                    Err(ParamError(format!("use only one of {a}, {b}")))
                } else {
                    Ok(present.iter().copied().find(|(_, v)| !v.is_null()))
                }
            }
        }
    }

    /// True when any of `names` is present (even as null).
    pub fn has(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.map.contains_key(*n))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ParamError> {
        self.int_any(&[key])
    }

    /// An integer under `names[0]` or one of its aliases.
    pub fn int_any(&self, names: &[&str]) -> Result<Option<i64>, ParamError> {
        let Some((name, value)) = self.lookup(names)? else {
            return Ok(None);
        };
        if self.strict() {
            return match value.as_i64() {
                Some(n) if !value.is_boolean() => Ok(Some(n)),
                _ => Err(ParamError(format!("{name} must be an integer"))),
            };
        }
        Ok(match value {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| f.trunc() as i64)
                })
            }
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        })
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ParamError> {
        self.bool_any(&[key])
    }

    pub fn bool_any(&self, names: &[&str]) -> Result<Option<bool>, ParamError> {
        let Some((name, value)) = self.lookup(names)? else {
            return Ok(None);
        };
        if self.strict() {
            return value
                .as_bool()
                .map(Some)
                .ok_or_else(|| ParamError(format!("{name} must be a boolean")));
        }
        Ok(match value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => n.as_f64().map(|f| f != 0.0),
            Value::String(s) => match s.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        })
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, ParamError> {
        self.string_any(&[key])
    }

    pub fn string_any(&self, names: &[&str]) -> Result<Option<String>, ParamError> {
        let Some((name, value)) = self.lookup(names)? else {
            return Ok(None);
        };
        match value {
            Value::String(s) => Ok(Some(s.clone())),
            _ if self.strict() => Err(ParamError(format!("{name} must be a string"))),
            _ => Ok(None),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ParamError> {
        let Some((name, value)) = self.lookup(&[key])? else {
            return Ok(None);
        };
        let not_strings = || ParamError(format!("{name} must be an array of strings"));
        match value {
            Value::Array(items) if self.strict() => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(not_strings))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ if self.strict() => Err(not_strings()),
            Value::Array(items) => Ok(Some(
                items
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            )),
            Value::String(s) => Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
            _ => Ok(None),
        }
    }

    /// The raw value of a key, for parameters that are only checked for shape.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strict(v: Value) -> Params {
        Params::new("messages.history", Some(v), Dialect::Strict).unwrap()
    }

    fn baseline(v: Value) -> Params {
        Params::new("messages.history", Some(v), Dialect::Baseline).unwrap()
    }

    fn err(detail: &str) -> ParamError {
        ParamError(detail.to_string())
    }

    #[test]
    fn rejects_unknown_keys_only_in_strict_mode() {
        let p = strict(json!({"chat_id": 1, "chatId": 1}));
        assert_eq!(
            p.allow(&["chat_id"]),
            Err(err("unknown messages.history param: chatId"))
        );
        assert_eq!(baseline(json!({"chatId": 1})).allow(&["chat_id"]), Ok(()));
    }

    #[test]
    fn types_strictly_in_strict_mode() {
        let p = strict(json!({"a": "1", "b": 1.0, "c": true, "d": 1, "e": ["x", 2], "f": null}));
        assert_eq!(p.int("a"), Err(err("a must be an integer")));
        assert_eq!(p.int("b"), Err(err("b must be an integer")));
        assert_eq!(p.int("c"), Err(err("c must be an integer")));
        assert_eq!(p.int("d"), Ok(Some(1)));
        assert_eq!(p.bool("d"), Err(err("d must be a boolean")));
        assert_eq!(p.strings("e"), Err(err("e must be an array of strings")));
        assert_eq!(p.int("f"), Err(err("f must not be null")));
        assert_eq!(p.int("missing"), Ok(None));
    }

    #[test]
    fn coerces_loosely_in_baseline_mode() {
        let p = baseline(
            json!({"a": "12", "b": 3.9, "c": "true", "d": 0, "e": "x, y,,z", "f": null, "g": "nope"}),
        );
        assert_eq!(p.int("a"), Ok(Some(12)));
        assert_eq!(p.int("b"), Ok(Some(3)));
        assert_eq!(p.bool("c"), Ok(Some(true)));
        assert_eq!(p.bool("d"), Ok(Some(false)));
        assert_eq!(p.strings("e"), Ok(Some(vec!["x".into(), "y".into(), "z".into()])));
        assert_eq!(p.int("f"), Ok(None));
        assert_eq!(p.int("g"), Ok(None));
        assert_eq!(p.string("a"), Ok(Some("12".into())));
        assert_eq!(p.string("b"), Ok(None));
    }

    #[test]
    fn refuses_a_key_together_with_its_alias() {
        let p = strict(json!({"debounce_ms": 1, "debounceMs": 2}));
        assert_eq!(
            p.int_any(&["debounce_ms", "debounceMs"]),
            Err(err("use only one of debounce_ms, debounceMs"))
        );
        let p = strict(json!({"debounceMs": 2}));
        assert_eq!(p.int_any(&["debounce_ms", "debounceMs"]), Ok(Some(2)));
    }

    #[test]
    fn requires_object_params_only_in_strict_mode() {
        assert_eq!(
            Params::new("x", Some(json!([1])), Dialect::Strict).unwrap_err(),
            err("params must be an object")
        );
        assert!(Params::new("x", Some(json!("s")), Dialect::Baseline).is_ok());
        assert!(Params::new("x", None, Dialect::Strict).is_ok());
    }
}
