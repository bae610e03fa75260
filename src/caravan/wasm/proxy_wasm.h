/* What every Caravan proxy-wasm filter shares: the ABI 0.2.1 export/import macros, the
 * host-function declarations and status values the filters use, a freestanding
 * runtime (no libc, no WASI: a filter may import only proxy-wasm host functions), the
 * callbacks every filter answers alike (proxy_on_vm_start) and the word reader of their
 * text plugin configurations (config_word).
 *
 * Include it from exactly one translation unit per module (each filter is one .c file,
 * built by caravan.wasm.build, which hashes this header into every filter's cache key).
 * Host functions and values: proxy-wasm/spec, abi-versions/v0.2.1/README.md; Envoy's
 * implementation: source/extensions/common/wasm/context.cc.
 */
#ifndef CARAVAN_PROXY_WASM_H
#define CARAVAN_PROXY_WASM_H
#include <stddef.h>
#include <stdint.h>

#define WASM_EXPORT(name) __attribute__((export_name(#name))) name
#define WASM_IMPORT(name) __attribute__((import_module("env"), import_name(#name))) name

enum { OK = 0, NOT_FOUND = 1, CAS_MISMATCH = 8 };          /* WasmResult */
enum { BUF_REQUEST_BODY = 0, BUF_PLUGIN_CONFIG = 7 };       /* WasmBufferType */
enum { MAP_REQUEST_HEADERS = 0 };                           /* WasmHeaderMapType */
enum { CONTINUE = 0, STOP_ITERATION = 1, STOP_AND_BUFFER = 1, STOP_NO_BUFFER = 3 }; /* Filter{Headers,Data}Status */
enum { LOG_WARN = 3 };                                      /* LogLevel */

/* Host functions (a declaration becomes an import only where a filter calls it). */
extern int32_t WASM_IMPORT(proxy_log)(int32_t level, const char *msg, size_t size);
extern int32_t WASM_IMPORT(proxy_get_buffer_bytes)(int32_t type, size_t start, size_t length,
                                                    char **ptr, size_t *size);
extern int32_t WASM_IMPORT(proxy_get_header_map_value)(int32_t type, const char *key, size_t key_size,
                                                        char **value, size_t *value_size);
extern int32_t WASM_IMPORT(proxy_get_header_map_pairs)(int32_t type, char **data, size_t *size);
extern int32_t WASM_IMPORT(proxy_replace_header_map_value)(int32_t type, const char *key,
                                                            size_t key_size, const char *value,
                                                            size_t value_size);
extern int32_t WASM_IMPORT(proxy_remove_header_map_value)(int32_t type, const char *key,
                                                           size_t key_size);
extern int32_t WASM_IMPORT(proxy_get_shared_data)(const char *key, size_t key_size, char **value,
                                                   size_t *value_size, uint32_t *cas);
extern int32_t WASM_IMPORT(proxy_set_shared_data)(const char *key, size_t key_size, const char *value,
                                                   size_t value_size, uint32_t cas);
extern int32_t WASM_IMPORT(proxy_send_local_response)(int32_t status, const char *details,
                                                       size_t details_size, const char *body,
                                                       size_t body_size, const char *headers,
                                                       size_t headers_size, int32_t grpc_status);
extern int32_t WASM_IMPORT(proxy_get_current_time_nanoseconds)(uint64_t *ns);
extern int32_t WASM_IMPORT(proxy_define_metric)(int32_t type, const char *name, size_t name_size,
                                                 uint32_t *id);
extern int32_t WASM_IMPORT(proxy_increment_metric)(uint32_t id, int64_t offset);

/* ------------------------------------------------------------------ freestanding runtime
 * A power-of-two free-list allocator on linear memory (8-byte header holding the size
 * class; never returns memory to the host) and the memory functions the compiler may
 * call. Single-threaded: a wasm VM runs on one Envoy worker. */

extern unsigned char __heap_base;
static uintptr_t g_brk;
static void *g_free_lists[40];

void *malloc(size_t n) {
  unsigned c = 4;
  while (((size_t)1 << c) < n + 8) c++;
  if (g_free_lists[c] != NULL) {
    void *p = g_free_lists[c];
    g_free_lists[c] = *(void **)p;
    return p;
  }
  if (g_brk == 0) g_brk = ((uintptr_t)&__heap_base + 7) & ~(uintptr_t)7;
  uintptr_t block = g_brk, top = g_brk + ((size_t)1 << c);
  size_t pages = (top + 65535) / 65536, have = __builtin_wasm_memory_size(0);
  if (pages > have && __builtin_wasm_memory_grow(0, pages - have) == (size_t)-1) return NULL;
  g_brk = top;
  *(uint32_t *)block = c;
  return (void *)(block + 8);
}

void free(void *p) {
  if (p == NULL) return;
  uint32_t c = *(uint32_t *)((unsigned char *)p - 8);
  *(void **)p = g_free_lists[c];
  g_free_lists[c] = p;
}

void *memset(void *d, int v, size_t n) {
  unsigned char *q = d;
  while (n--) *q++ = (unsigned char)v;
  return d;
}

void *memcpy(void *d, const void *s, size_t n) {
  unsigned char *q = d;
  const unsigned char *r = s;
  while (n--) *q++ = *r++;
  return d;
}

/* The ABI version Envoy checks, and where the host writes what it hands the module. */
__attribute__((export_name("proxy_abi_version_0_2_1"))) void abi_version(void) {}

void *WASM_EXPORT(proxy_on_memory_allocate)(size_t size) { return malloc(size); }

/* A filter needs no VM start-up work: each reads its plugin configuration in
 * proxy_on_configure. */
int32_t WASM_EXPORT(proxy_on_vm_start)(uint32_t id, size_t size) { return 1; }

/* ------------------------------------------------------------------ plugin configuration
 * The filters' configurations are text: one directive a line, words separated by spaces. */

/* Copy the next word of the line at *p (up to `end` or a newline; leading spaces skipped)
 * into dst, NUL-terminated, and move *p past it. `cap`: dst's size in bytes (the longest
 * word is cap - 1 bytes). Returns the word's length (0: none left on the line), -1 when
 * it does not fit (dst then holds the first cap - 1 bytes, unterminated). */
static inline int config_word(char *dst, size_t cap, const char **p, const char *end) {
  while (*p < end && **p == ' ') (*p)++;
  size_t n = 0;
  while (*p < end && **p != ' ' && **p != '\n') {
    if (n + 1 >= cap) return -1;
    dst[n++] = *(*p)++;
  }
  dst[n] = 0;
  return (int)n;
}

#endif
