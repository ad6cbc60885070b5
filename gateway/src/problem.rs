//! Problems found in configuration and catalog files, each pointing at a file, a line and a path
//! inside the document, saying what is wrong and what would be right.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// A JSON pointer into the document (`/integrations/github/client_secret`); empty for the
    /// whole document.
    pub pointer: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(file: impl Into<PathBuf>, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { file: file.into(), line: None, pointer: pointer.into(), message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.pointer.is_empty() {
            write!(f, ": {}", self.pointer)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every problem of one load, printed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// Fills in line numbers for problems in `file`, from its text.
    pub fn locate(&mut self, file: &Path, text: &str) {
        let mut index = None;
        for problem in self.0.iter_mut().filter(|p| p.file == file && p.line.is_none()) {
            let index = index.get_or_insert_with(|| LineIndex::new(text));
            problem.line = index.line_of(&problem.pointer);
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The line on which each node of a YAML document starts, by JSON pointer. serde_yaml keeps no
/// positions for values, so the document is parsed once more, event by event, only when a
/// problem needs a line.
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut builder = IndexBuilder { lines: HashMap::new(), stack: Vec::new() };
        // A document that does not parse has its own error with a line; an index that stops
        // early only means fewer lines here.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        LineIndex { lines: builder.lines }
    }

    /// The line of the node at `pointer`, or of its nearest ancestor that exists.
    pub fn line_of(&self, pointer: &str) -> Option<usize> {
        let mut pointer = pointer;
        loop {
            if let Some(line) = self.lines.get(pointer) {
                return Some(*line);
            }
            match pointer.rfind('/') {
                Some(cut) => pointer = &pointer[..cut],
                None => return None,
            }
        }
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

struct IndexBuilder {
    lines: HashMap<String, usize>,
    stack: Vec<Frame>,
}

impl IndexBuilder {
    /// The pointer of the node that starts now, advancing the parent's position. `None` when the
    /// event is a mapping key.
    fn next_path(&mut self, is_scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}/{next}");
                *next += 1;
                Some(p)
            }
            Some(Frame::Mapping { path, key }) => match key.take() {
                Some(k) => Some(format!("{path}/{}", escape_pointer(&k))),
                None => {
                    *key = Some(is_scalar.unwrap_or_default().to_string());
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.next_path(Some(&value)) {
                    self.lines.entry(path).or_insert(mark.line());
                } else if let Some(Frame::Mapping { path, key: Some(k) }) = self.stack.last() {
                    // Point a key's problems at the key's own line.
                    let p = format!("{path}/{}", escape_pointer(k));
                    self.lines.insert(p, mark.line());
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_path(Some("")) {
                    self.lines.entry(path).or_insert(mark.line());
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(mark.line());
                self.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { path, key: None }
                } else {
                    Frame::Sequence { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_of_keys_values_and_sequence_items() {
        let text = "integrations:\n  github:\n    provider: github\n    scopes:\n      - repo\n      - user\n  a/b:\n    x: 1\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line_of("/integrations/github"), Some(2));
        assert_eq!(index.line_of("/integrations/github/provider"), Some(3));
        assert_eq!(index.line_of("/integrations/github/scopes/1"), Some(6));
        assert_eq!(index.line_of("/integrations/a~1b/x"), Some(8));
        // Missing nodes fall back to their nearest ancestor.
        assert_eq!(index.line_of("/integrations/github/client_secret"), Some(2));
    }
}
