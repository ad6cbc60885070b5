;; An action written directly in WebAssembly text: it logs a line, reads `GET /user` through
;; the connection, and returns the host's answer to that call (`{"ok": {status, headers, data}}`)
;; as its output. It shows the whole ABI in a few lines; see the latchkey-plugin-sdk crate.
(module
  (import "latchkey" "call" (func $call (param i32 i32 i32 i32) (result i32)))
  (import "latchkey" "response" (func $response (param i32)))
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 4096))

  (data (i32.const 0) "log")
  (data (i32.const 16) "{\"level\":\"info\",\"message\":\"wasm-user: reading the user\"}")
  (data (i32.const 128) "proxy")
  (data (i32.const 144) "{\"method\":\"GET\",\"endpoint\":\"/user\"}")
  (data (i32.const 256) "output")

  ;; A bump allocator: an instance serves one run.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))))))
    (local.get $ptr))

  (func (export "run") (param $context i32) (param $context_len i32) (result i32)
    (local $len i32)
    (local $answer i32)
    (drop (call $call (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 56)))
    (local.set $len (call $call (i32.const 128) (i32.const 5) (i32.const 144) (i32.const 35)))
    (local.set $answer (call $alloc (local.get $len)))
    (call $response (local.get $answer))
    (drop (call $call (i32.const 256) (i32.const 6) (local.get $answer) (local.get $len)))
    (i32.const 0))
)
