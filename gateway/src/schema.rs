//! JSON Schema validation that speaks in [`Problem`]s: each violation becomes a message a person
//! can act on (the unknown key and the keys allowed there, the values an enum takes, …).

use std::path::Path;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::problem::Problem;

pub struct Schema {
    validator: Validator,
    root: Value,
}

impl Schema {
    /// Compiles a schema shipped inside the binary; a broken one is a bug caught by the tests.
    pub fn compile(text: &str) -> Schema {
        let root: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("built-in schema is not JSON: {e}"));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("built-in schema does not compile: {e}"));
        Schema { validator, root }
    }

    /// Every violation in `instance`, as problems in `file` under `base` (a JSON pointer to
    /// where `instance` sits in the file).
    pub fn check(&self, instance: &Value, file: &Path, base: &str) -> Vec<Problem> {
        let mut problems: Vec<Problem> =
            self.validator.iter_errors(instance).map(|error| self.problem(&error, file, base)).collect();
        problems.dedup_by(|a, b| a.pointer == b.pointer && a.message == b.message);
        problems
    }

    fn problem(&self, error: &ValidationError<'_>, file: &Path, base: &str) -> Problem {
        let pointer = format!("{base}{}", error.instance_path().as_str());
        let schema_path = error.schema_path().as_str().to_string();
        let (message, hint) = match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = self.allowed_keys(&schema_path);
                let hint = match unexpected.first().and_then(|k| closest(k, &allowed)) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None if allowed.is_empty() => "remove it".to_string(),
                    None => format!("keys allowed here: {}", allowed.join(", ")),
                };
                let keys: Vec<String> = unexpected.iter().map(|k| format!("`{k}`")).collect();
                let noun = if keys.len() == 1 { "unknown key" } else { "unknown keys" };
                (format!("{noun} {}", keys.join(", ")), Some(hint))
            }
            ValidationErrorKind::Required { property } => {
                (format!("missing required key `{}`", property.as_str().unwrap_or_default()), None)
            }
            ValidationErrorKind::Enum { options } => {
                let options: Vec<String> =
                    options.as_array().map(|a| a.iter().map(short).collect()).unwrap_or_default();
                (
                    format!("{} is not an allowed value", short(error.instance())),
                    Some(format!("use one of: {}", options.join(", "))),
                )
            }
            ValidationErrorKind::Constant { expected_value } => (
                format!("{} is not allowed here", short(error.instance())),
                Some(format!("the only value allowed is {}", short(expected_value))),
            ),
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => {
                        let names: Vec<String> = (*ts).into_iter().map(|t| t.to_string()).collect();
                        names.join(" or ")
                    }
                };
                (format!("expected {expected}, found {}", kind_of(error.instance())), None)
            }
            ValidationErrorKind::Pattern { pattern } => (
                format!("{} does not have the expected form", short(error.instance())),
                Some(format!("it must match the pattern {pattern}")),
            ),
            ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => (
                format!("{} has none of the accepted shapes", kind_of(error.instance())),
                self.describe(&schema_path).map(|d| format!("expected {d}")),
            ),
            _ => (error.to_string(), None),
        };
        let mut problem = Problem::new(file, pointer, message);
        problem.hint = hint;
        problem
    }

    /// The property names the schema lists beside the `additionalProperties` that failed.
    fn allowed_keys(&self, schema_path: &str) -> Vec<String> {
        let parent = schema_path.trim_end_matches("/additionalProperties");
        self.root
            .pointer(&format!("{parent}/properties"))
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn describe(&self, schema_path: &str) -> Option<String> {
        let parent = schema_path.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
        self.root.pointer(&format!("{parent}/description")).and_then(Value::as_str).map(str::to_string)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// The allowed key nearest to a misspelt one, when it is near enough to be a typo.
pub fn closest(key: &str, allowed: &[String]) -> Option<String> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_suggest_the_nearest_allowed_key() {
        let schema = Schema::compile(
            r#"{"type":"object","additionalProperties":false,"properties":{"client_secret":{"type":"string"},"scopes":{"enum":["a","b"]}}}"#,
        );
        let problems = schema.check(&json!({"client_secrt": "x", "scopes": "c"}), Path::new("f.yaml"), "/i");
        assert_eq!(problems.len(), 2, "{problems:?}");
        let unknown = problems.iter().find(|p| p.message.contains("client_secrt")).unwrap();
        assert_eq!(unknown.pointer, "/i");
        assert_eq!(unknown.hint.as_deref(), Some("did you mean `client_secret`?"));
        let bad_enum = problems.iter().find(|p| p.pointer == "/i/scopes").unwrap();
        assert_eq!(bad_enum.hint.as_deref(), Some(r#"use one of: "a", "b""#));
    }
}
