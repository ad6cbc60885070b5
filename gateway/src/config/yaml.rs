//! YAML to JSON values, with merge keys applied and parse errors located.

use std::path::Path;

use serde_json::Value;

use crate::problem::Problem;

/// A YAML syntax error, not yet tied to a file.
#[derive(Debug)]
pub struct SyntaxError {
    line: Option<usize>,
    message: String,
}

impl SyntaxError {
    pub fn in_file(self, file: &Path) -> Problem {
        let problem = Problem::new(file, "", format!("invalid YAML: {}", self.message));
        match self.line {
            Some(line) => problem.at_line(line),
            None => problem,
        }
    }
}

/// Parses one YAML document into JSON. Anchors, aliases and `<<` merge keys are applied; keys
/// must be strings (or scalars, which become strings).
pub fn parse(text: &str) -> Result<Value, SyntaxError> {
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| SyntaxError { line: e.location().map(|l| l.line()), message: strip_location(&e.to_string()) })?;
    yaml.apply_merge().map_err(|e| SyntaxError { line: None, message: e.to_string() })?;
    to_json(yaml).map_err(|message| SyntaxError { line: None, message })
}

fn to_json(yaml: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| e.to_string())?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("mapping keys must be text, found {other:?}")),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => to_json(tagged.value)?,
    })
}

/// serde_yaml appends " at line L column C"; the line goes into the problem's own field.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_locates() {
        let v = parse("base: &b {x: 1}\nchild:\n  <<: *b\n  y: 2\n").unwrap();
        assert_eq!(v["child"]["x"], 1);
        let e = parse("a: [1\nb: 2\n").unwrap_err().in_file(Path::new("f.yaml"));
        assert!(e.line.is_some());
        assert!(e.message.starts_with("invalid YAML"));
    }
}
