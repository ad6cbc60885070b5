//! TypeScript to JavaScript, in-process: types are stripped (oxc), nothing else is lowered, and
//! the module stays an ES module for the engine to load.

use std::path::Path;

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};

use crate::problem::Problem;

/// Compiles one function source; a `.js`/`.mjs` file is only checked for syntax.
pub fn compile(path: &Path, source: &str) -> Result<String, Vec<Problem>> {
    let source_type = SourceType::from_path(path).unwrap_or_else(|_| SourceType::ts()).with_module(true);
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, source, source_type).parse();
    if parsed.diagnostics.has_errors() {
        return Err(problems(path, source, parsed.diagnostics.errors()));
    }
    let mut program = parsed.program;
    let semantic = SemanticBuilder::new().with_check_syntax_error(true).build(&program);
    if semantic.diagnostics.has_errors() {
        return Err(problems(path, source, semantic.diagnostics.errors()));
    }
    let scoping = semantic.semantic.into_scoping();
    let options = TransformOptions::default();
    let transformed = Transformer::new(&allocator, path, &options).build_with_scoping(scoping, &mut program);
    if transformed.diagnostics.has_errors() {
        return Err(problems(path, source, transformed.diagnostics.errors()));
    }
    Ok(Codegen::new().build(&program).code)
}

fn problems<'a>(path: &Path, source: &str, errors: impl Iterator<Item = &'a OxcDiagnostic>) -> Vec<Problem> {
    errors
        .map(|e| {
            let offset = e.labels.first().map(|l| l.offset() as usize).unwrap_or(0);
            let (line, column) = line_column(source, offset);
            let mut problem = Problem::new(path, "", format!("column {column}: {}", e.message)).at_line(line);
            if let Some(help) = &e.help {
                problem = problem.hint(help.to_string());
            }
            problem
        })
        .collect()
}

/// 1-based line and column of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..source.floor_char_boundary(offset.min(source.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_go_and_modules_stay() {
        let js = compile(
            Path::new("f.ts"),
            "import type { X } from './models';\nimport { createSync } from 'nango';\ninterface A { b: string }\n\
             export default createSync({ exec: async (n: any): Promise<void> => { const a: A = { b: 'x' }; return; } });\n",
        )
        .unwrap();
        assert!(!js.contains("interface") && !js.contains("./models"), "{js}");
        assert!(js.contains("from \"nango\"") || js.contains("from 'nango'"), "{js}");
        assert!(js.contains("export default"), "{js}");
    }

    #[test]
    fn errors_carry_file_and_line() {
        let problems =
            compile(Path::new("fns/bad.ts"), "const a = 1;\nexport default function (n) {\n  return a +;\n}\n")
                .unwrap_err();
        assert_eq!(problems[0].line, Some(3), "{problems:?}");
        assert!(problems[0].to_string().starts_with("fns/bad.ts:3"), "{}", problems[0]);
    }
}
