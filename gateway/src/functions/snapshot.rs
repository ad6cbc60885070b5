//! The JavaScript engine's snapshot: the engine module rewritten so that its memory starts as
//! an instance's memory was after `init` (QuickJS's runtime and context created, the SDK's
//! modules loaded). Every run still gets a fresh instance, but one that starts ready to run:
//! wasmtime maps the data copy-on-write, so the set-up costs a run nothing.
//!
//! The memory is the whole of the state that matters: the engine is C compiled by clang, whose
//! one mutable global, the stack pointer, is back at its initial value once `init` returns, and
//! whose table only holds the functions the module declares.

use wasm_encoder::{ConstExpr, DataSection, ExportKind, ExportSection, MemorySection, MemoryType, RawSection};
use wasmparser::{ExternalKind, Parser, Payload};

const PAGE: usize = 64 * 1024;
/// Zero runs shorter than this stay inside a data segment: fewer, larger segments.
const GAP: usize = 64;

/// `module` with its memory's initial contents replaced by `memory`, and without the
/// `_initialize` export (C's constructors ran before the snapshot; running them again would undo
/// what they set up).
pub fn rewrite(module: &[u8], memory: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| e.to_string())?;
        match &payload {
            Payload::MemorySection(reader) => {
                let mut memories = MemorySection::new();
                for (i, memory_type) in reader.clone().into_iter().enumerate() {
                    let memory_type = memory_type.map_err(|e| e.to_string())?;
                    if i > 0 || memory_type.memory64 || memory_type.shared || memory_type.page_size_log2.is_some() {
                        return Err("the engine's memory is not one plain 32-bit memory".into());
                    }
                    memories.memory(MemoryType {
                        minimum: memory.len().div_ceil(PAGE) as u64,
                        maximum: memory_type.maximum,
                        memory64: false,
                        shared: false,
                        page_size_log2: None,
                    });
                }
                out.section(&memories);
            }
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                for export in reader.clone() {
                    let export = export.map_err(|e| e.to_string())?;
                    let kind = match export.kind {
                        _ if export.name == "_initialize" => continue,
                        ExternalKind::Func => ExportKind::Func,
                        ExternalKind::Table => ExportKind::Table,
                        ExternalKind::Memory => ExportKind::Memory,
                        ExternalKind::Global => ExportKind::Global,
                        other => return Err(format!("the engine exports a {other:?}")),
                    };
                    exports.export(export.name, kind, export.index);
                }
                out.section(&exports);
            }
            Payload::DataSection(_) => {
                out.section(&data(memory)?);
            }
            Payload::DataCountSection { .. } => {
                return Err("the engine's code refers to its data segments".into());
            }
            Payload::StartSection { .. } => {
                return Err("the engine has a start function".into());
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.section(&RawSection { id, data: &module[range] });
                }
            }
        }
    }
    Ok(out.finish())
}

/// The non-zero stretches of `memory` as active segments (fresh memory is zeroed).
fn data(memory: &[u8]) -> Result<DataSection, String> {
    let mut section = DataSection::new();
    let mut at = 0;
    while let Some(start) = memory[at..].iter().position(|&b| b != 0).map(|p| p + at) {
        let mut end = start;
        loop {
            end += memory[end..].iter().position(|&b| b == 0).unwrap_or(memory.len() - end);
            match memory[end..].iter().take(GAP).position(|&b| b != 0) {
                Some(next) => end += next,
                None => break,
            }
        }
        let offset = i32::try_from(start).map_err(|_| "the engine's memory is larger than 2 GiB")?;
        section.active(0, &ConstExpr::i32_const(offset), memory[start..end].iter().copied());
        at = end;
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_every_non_zero_byte_and_nothing_else_differs() {
        let mut memory = vec![0u8; 3 * PAGE];
        memory[5] = 1;
        memory[6] = 2;
        memory[6 + GAP] = 3;
        memory[PAGE + 17] = 4;
        memory[3 * PAGE - 1] = 5;
        let module = wat::parse_str(
            r#"(module (memory (export "memory") 1) (data (i32.const 8) "x")
                 (func (export "_initialize")) (func (export "run")))"#,
        )
        .expect("valid WAT");
        let rewritten = rewrite(&module, &memory).expect("rewritable");
        let mut rebuilt = vec![0u8; 3 * PAGE];
        let mut exports = Vec::new();
        for payload in Parser::new(0).parse_all(&rewritten) {
            match payload.expect("valid module") {
                Payload::MemorySection(reader) => {
                    let memories: Vec<_> = reader.into_iter().collect::<Result<_, _>>().expect("memories");
                    assert_eq!(memories[0].initial, 3);
                }
                Payload::ExportSection(reader) => {
                    exports = reader.into_iter().map(|e| e.expect("export").name.to_string()).collect();
                }
                Payload::DataSection(reader) => {
                    let segments: Vec<_> = reader.into_iter().collect::<Result<_, _>>().expect("segments");
                    assert_eq!(segments.len(), 3, "the first two bytes and the one after them share a segment");
                    for segment in segments {
                        let wasmparser::DataKind::Active { offset_expr, .. } = segment.kind else {
                            panic!("a passive segment")
                        };
                        let Ok(wasmparser::Operator::I32Const { value }) = offset_expr.get_operators_reader().read()
                        else {
                            panic!("an offset that is not a constant")
                        };
                        rebuilt[value as usize..value as usize + segment.data.len()].copy_from_slice(segment.data);
                    }
                }
                _ => {}
            }
        }
        assert_eq!(rebuilt, memory);
        assert_eq!(exports, ["memory", "run"]);
    }
}
