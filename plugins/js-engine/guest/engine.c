/*
 * The JavaScript engine guest: QuickJS plus a driver, compiled to wasm32-wasi.
 *
 * The host owns everything but the language: module sources, the SDK, I/O. The guest reaches
 * it through two imports from module "latchkey":
 *   call(op, op_len, arg, arg_len) -> len   performs `op` with a JSON argument and keeps the
 *                                           JSON answer, `len` bytes long;
 *   response(dst)                           copies the kept answer to `dst`.
 * and exports `alloc` (for the host to place a source), `init(src, len)` and `run(src, len)`.
 * Both evaluate a module and drive promises to completion, returning 0, or 1 after having
 * reported the failure through `call("fail", …)`. `init` sets the engine up and evaluates a
 * prelude (the SDK's modules, loaded then and kept): the host calls it once and snapshots the
 * instance's memory, so that every run starts from an engine ready to run. `run` evaluates the
 * entry module in that engine, or in a fresh one when `init` never ran.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Compiled in this file rather than beside it: a run restored from a snapshot must reseed the
 * context's random state and restart its clock, which QuickJS keeps in private fields. */
#include "quickjs.c"

__attribute__((import_module("latchkey"), import_name("call")))
int32_t host_call(const char *op, int32_t op_len, const char *arg, int32_t arg_len);
__attribute__((import_module("latchkey"), import_name("response")))
void host_response(char *dst);

/* One byte more, zeroed: QuickJS parses only NUL-terminated sources, and memory restored from a
 * snapshot is not zero where malloc hands it out again. */
__attribute__((export_name("alloc")))
void *lk_alloc(int32_t size) {
    char *p = malloc((size_t)size + 1);
    if (p) p[size] = 0;
    return p;
}

/* Calls the host and returns its answer as a malloc'd, NUL-terminated string. */
static char *host(const char *op, const char *arg, size_t arg_len, int32_t *out_len) {
    int32_t n = host_call(op, (int32_t)strlen(op), arg, (int32_t)arg_len);
    char *buf = malloc((size_t)n + 1);
    if (!buf) return NULL;
    host_response(buf);
    buf[n] = 0;
    if (out_len) *out_len = n;
    return buf;
}

/* __host(op, json) -> json: the one primitive the SDK module is written on. */
static JSValue js_host(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val;
    if (argc < 2) return JS_ThrowTypeError(ctx, "__host(op, json)");
    const char *op = JS_ToCString(ctx, argv[0]);
    if (!op) return JS_EXCEPTION;
    size_t arg_len;
    const char *arg = JS_ToCStringLen(ctx, &arg_len, argv[1]);
    if (!arg) {
        JS_FreeCString(ctx, op);
        return JS_EXCEPTION;
    }
    int32_t n = 0;
    char *answer = host(op, arg, arg_len, &n);
    JS_FreeCString(ctx, op);
    JS_FreeCString(ctx, arg);
    if (!answer) return JS_ThrowOutOfMemory(ctx);
    JSValue result = JS_NewStringLen(ctx, answer, (size_t)n);
    free(answer);
    return result;
}

/* Module sources come from the host, which type-strips TypeScript and knows the SDK. */
static JSModuleDef *load_module(JSContext *ctx, const char *name, void *opaque) {
    (void)opaque;
    int32_t n = 0;
    char *source = host("module", name, strlen(name), &n);
    if (!source) {
        JS_ThrowOutOfMemory(ctx);
        return NULL;
    }
    if (n == 0) {
        free(source);
        JS_ThrowReferenceError(ctx, "cannot find module '%s'", name);
        return NULL;
    }
    JSValue compiled = JS_Eval(ctx, source, (size_t)n, name, JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
    free(source);
    if (JS_IsException(compiled)) return NULL;
    JSModuleDef *module = JS_VALUE_GET_PTR(compiled);
    JS_FreeValue(ctx, compiled);
    return module;
}

/* Reports the pending exception to the host as {message, stack}. */
static void report_exception(JSContext *ctx) {
    JSValue error = JS_GetException(ctx);
    JSValue report = JS_NewObject(ctx);
    JS_SetPropertyStr(ctx, report, "message", JS_ToString(ctx, error));
    if (JS_IsError(error)) {
        JS_SetPropertyStr(ctx, report, "stack", JS_GetPropertyStr(ctx, error, "stack"));
    }
    JSValue json = JS_JSONStringify(ctx, report, JS_UNDEFINED, JS_UNDEFINED);
    size_t len = 0;
    const char *text = JS_IsException(json) ? NULL : JS_ToCStringLen(ctx, &len, json);
    if (text) {
        free(host("fail", text, len, NULL));
        JS_FreeCString(ctx, text);
    } else {
        const char *fallback = "{\"message\":\"the function failed with an error that cannot be described\"}";
        free(host("fail", fallback, strlen(fallback), NULL));
    }
    JS_FreeValue(ctx, json);
    JS_FreeValue(ctx, report);
    JS_FreeValue(ctx, error);
}

static JSRuntime *rt;
static JSContext *ctx;

static int setup(void) {
    rt = JS_NewRuntime();
    if (!rt) return 0;
    ctx = JS_NewContext(rt);
    if (!ctx) return 0;
    JS_SetModuleLoaderFunc(rt, NULL, load_module, NULL);
    JSValue global = JS_GetGlobalObject(ctx);
    JS_SetPropertyStr(ctx, global, "__host", JS_NewCFunction(ctx, js_host, "__host", 2));
    JS_FreeValue(ctx, global);
    return 1;
}

/* Evaluates a module and runs every job it queues; 0, or 1 once the failure is reported. */
static int32_t evaluate(const char *source, int32_t len, const char *name) {
    JSValue promise = JS_Eval(ctx, source, (size_t)len, name, JS_EVAL_TYPE_MODULE);
    if (JS_IsException(promise)) {
        report_exception(ctx);
        return 1;
    }
    for (;;) {
        JSContext *job_ctx;
        int ran = JS_ExecutePendingJob(rt, &job_ctx);
        if (ran < 0) {
            report_exception(job_ctx);
            return 1;
        }
        if (ran == 0) break;
    }
    int32_t status = 0;
    switch (JS_PromiseState(ctx, promise)) {
    case JS_PROMISE_REJECTED:
        JS_Throw(ctx, JS_PromiseResult(ctx, promise));
        report_exception(ctx);
        status = 1;
        break;
    case JS_PROMISE_PENDING: {
        const char *stuck = "{\"message\":\"the function never finished: it awaits a promise nothing can settle\"}";
        free(host("fail", stuck, strlen(stuck), NULL));
        status = 1;
        break;
    }
    default:
        break;
    }
    JS_FreeValue(ctx, promise);
    return status;
}

__attribute__((export_name("init")))
int32_t init(const char *prelude, int32_t prelude_len) {
    if (rt || !setup()) return 2;
    return evaluate(prelude, prelude_len, "latchkey:prelude");
}

__attribute__((export_name("run")))
int32_t run(const char *entry, int32_t entry_len) {
    if (rt) {
        /* What a snapshot froze and must differ from run to run: Math.random's seed, the origin
         * of performance.now(), and where the stack starts. */
        ctx->random_state = (uint64_t)js__hrtime_ns() ^ ((uint64_t)js__gettimeofday_us() << 20);
        if (ctx->random_state == 0) ctx->random_state = 1;
        if (JS_AddPerformance(ctx)) return 2;
        JS_UpdateStackTop(rt);
    } else if (!setup()) {
        return 2;
    }
    /* The instance is thrown away after one run; freeing the runtime would only cost time. */
    return evaluate(entry, entry_len, "latchkey:entry");
}
