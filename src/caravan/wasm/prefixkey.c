/* Caravan's prefix key: a proxy-wasm (ABI 0.2.1) HTTP filter for Envoy.
 *
 * On a ModelStreamInfer / ModelInfer request of a `routing.policy: prefix` model it holds
 * the request headers, reads the stream's FIRST gRPC message (5-byte frame header:
 * compressed flag, 4-byte big-endian length; then a KServe ModelInferRequest) as it
 * arrives, and as soon as the first `prefix_tokens` whitespace-separated words of the
 * `text_input` tensor are there (or the whole message is), sets the key header to the
 * 32-bit FNV-1a of those words joined by one space (8 hex digits) and lets the headers
 * and the held body go on. It never waits for the end of the stream, never buffers more
 * than the first message (capped), and never fails a request: anything unexpected (not a
 * ModelInferRequest, no text_input, a short raw element, an empty prompt, a compressed
 * message, a stream that ends first, a message above the cap) continues without a key.
 * The client's own value of the key header is always removed.
 *
 * ModelInferRequest (KServe grpc_service.proto): model_name = 1, inputs = 5 (repeated
 * InferInputTensor {name = 1, datatype = 2, contents = 5 InferTensorContents
 * {bytes_contents = 8 repeated bytes}}), raw_input_contents = 7 (repeated bytes; element
 * i belongs to inputs[i]; a BYTES element is a 4-byte little-endian length, then bytes).
 *
 * Plugin configuration (text, written by caravan.xds.routing):
 *   key <header>                         the header to set (first line)
 *   model_header <header>                the header that names the model (absent: default)
 *   path <exact :path>                   a method whose first message is keyed (1+ lines)
 *   max_hold <bytes>                     hold at most this much body (then: no key)
 *   model <name> <words> <session hdr>   a prefix model (1+ lines)
 *   default <name>                       the model of requests without the model header
 *
 * PREFIXKEY_NATIVE builds only the parser (prefix_key_of) for the unit tests' native
 * build (tests/unit/wasm); the filter is built with `python -m ziglang cc
 * --target=wasm32-freestanding` by caravan.wasm.build.
 */
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ the parser (pure) */

enum { R_NONE = 0, R_KEY = 1, R_MORE = 2 };

/* A field's bytes: `avail` of its `len` bytes are present (avail < len: still arriving). */
typedef struct { const uint8_t *p; size_t avail, len; } View;

typedef struct {
  int at;        /* index of the first input named text_input; -1 until seen */
  int inputs;    /* inputs seen */
  int raws;      /* raw_input_contents elements seen */
  View text;     /* the prompt's bytes (raw element or bytes_contents); p NULL: none yet */
  int is_raw;    /* text is a raw element (length-prefixed) */
  View raw_at[16]; /* raw elements seen before `at` was known (non-canonical order) */
} Parse;

/* Read a varint at *i (< avail); 0 ok, R_MORE truncated by avail, -1 malformed. */
static int varint(View v, size_t *i, uint64_t *out) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*i >= v.avail) return *i >= v.len ? -1 : R_MORE;
    uint8_t b = v.p[(*i)++];
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) { *out = x; return 0; }
  }
  return -1;
}

/* The next field of v at *i: its number, wire type and, for LEN fields, its view.
 * Returns 0 ok, R_MORE (the field's head is not all there), -1 malformed. */
static int field(View v, size_t *i, uint32_t *num, uint32_t *wt, View *sub) {
  uint64_t tag = 0, n = 0;
  int r = varint(v, i, &tag);
  if (r) return r;
  *num = (uint32_t)(tag >> 3);
  *wt = (uint32_t)(tag & 7);
  switch (*wt) {
    case 0: return varint(v, i, &n);
    case 1: n = 8; break;
    case 5: n = 4; break;
    case 2: if ((r = varint(v, i, &n))) return r; break;
    default: return -1;
  }
  if (n > v.len - *i) return -1;
  sub->p = v.p + *i;
  sub->len = (size_t)n;
  sub->avail = *i >= v.avail ? 0 : (v.avail - *i < n ? v.avail - *i : (size_t)n);
  *i += (size_t)n;
  return 0;
}

static int is_text_input(View name) {
  static const char want[] = "text_input";
  if (name.len != sizeof want - 1 || name.avail != name.len) return 0;
  for (size_t k = 0; k < name.len; k++)
    if (name.p[k] != (uint8_t)want[k]) return 0;
  return 1;
}

/* contents.bytes_contents[0] of a tensor's InferTensorContents; p NULL when none. */
static int first_bytes(View c, View *out) {
  size_t i = 0;
  while (i < c.avail) {
    uint32_t num, wt;
    View sub;
    int r = field(c, &i, &num, &wt, &sub);
    if (r) return r;
    if (num == 8 && wt == 2) { *out = sub; return 0; }
  }
  return c.avail < c.len ? R_MORE : 0;
}

/* One InferInputTensor: is it the (first) text_input, and its bytes_contents[0]. */
static int tensor(Parse *s, View t) {
  size_t i = 0;
  int named = 0;
  View bytes = {0};
  while (i < t.avail) {
    uint32_t num, wt;
    View sub;
    int r = field(t, &i, &num, &wt, &sub);
    if (r == R_MORE) break;
    if (r) return r;
    if (num == 1 && wt == 2) named = is_text_input(sub);
    if (num == 5 && wt == 2 && bytes.p == NULL) {
      r = first_bytes(sub, &bytes);
      if (r < 0) return r;
    }
  }
  if (s->at < 0 && named) {
    s->at = s->inputs;
    if (bytes.p != NULL) { s->text = bytes; s->is_raw = 0; }
    else if (s->at < s->raws && s->at < 16) { s->text = s->raw_at[s->at]; s->is_raw = 1; }
  }
  s->inputs++;
  return t.avail < t.len ? R_MORE : 0;
}

static void raw_element(Parse *s, View e) {
  if (s->at >= 0 && s->raws == s->at && s->text.p == NULL) { s->text = e; s->is_raw = 1; }
  if (s->raws < 16) s->raw_at[s->raws] = e;
  s->raws++;
}

/* Walk the message's fields as far as they are present; R_MORE when it was cut short. */
static int message(Parse *s, View m) {
  size_t i = 0;
  while (i < m.avail) {
    uint32_t num, wt;
    View sub;
    int r = field(m, &i, &num, &wt, &sub);
    if (r == R_MORE) return R_MORE;
    if (r) return -1;
    if (num == 5 && wt == 2) {
      r = tensor(s, sub);
      if (r < 0) return -1;
      if (r == R_MORE) return s->text.p != NULL ? 0 : R_MORE;
    }
    if (num == 7 && wt == 2) raw_element(s, sub);
    if (s->text.p != NULL) return 0; /* found (the rest of the message is not read) */
  }
  return m.avail < m.len ? R_MORE : 0;
}

static int space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* FNV-1a of the first `words` words of t joined by one space; R_MORE when t is cut
 * short before they end. */
static int hash_words(View t, int words, uint32_t *h) {
  uint32_t x = 2166136261u;
  int n = 0;
  size_t k = 0;
  while (n < words) {
    while (k < t.avail && space(t.p[k])) k++;
    if (k >= t.avail) break;
    if (n > 0) x = (x ^ ' ') * 16777619u;
    while (k < t.avail && !space(t.p[k])) x = (x ^ t.p[k++]) * 16777619u;
    if (k >= t.avail && t.avail < t.len) return R_MORE; /* the word may go on */
    n++;
  }
  if (n < words && t.avail < t.len) return R_MORE;
  if (n == 0) return R_NONE;
  *h = x;
  return R_KEY;
}

/* The prompt's bytes within a raw element (4-byte LE length, then bytes; cut to the
 * element as the Lua script it replaces did); R_NONE for a short element. */
static int raw_text(View e, View *t) {
  if (e.avail < 4) return e.len < 4 ? R_NONE : R_MORE;
  uint32_t n = (uint32_t)e.p[0] | (uint32_t)e.p[1] << 8 | (uint32_t)e.p[2] << 16 | (uint32_t)e.p[3] << 24;
  t->p = e.p + 4;
  t->len = n < e.len - 4 ? n : e.len - 4;
  t->avail = e.avail - 4 < t->len ? e.avail - 4 : t->len;
  return R_KEY;
}

/* The key of a gRPC request body whose first `have` bytes are in `body`: R_KEY (8 hex
 * digits in out[0..8)), R_MORE (undecided: wait for more of the first message), R_NONE
 * (no key). Reads only the first message; the message may be longer than `have`. */
int prefix_key_of(const uint8_t *body, size_t have, int words, char *out) {
  if (have < 5) return R_MORE;
  uint32_t len = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 | (uint32_t)body[3] << 8 | body[4];
  if (body[0] != 0 || words <= 0) return R_NONE;
  View m = {body + 5, have - 5 < len ? have - 5 : len, len};
  Parse s = {.at = -1};
  int r = message(&s, m);
  if (r < 0) return R_NONE;
  if (s.text.p == NULL) return r == R_MORE ? R_MORE : R_NONE;
  View t = s.text;
  if (s.is_raw && (r = raw_text(s.text, &t)) != R_KEY) return r;
  uint32_t h = 0;
  if ((r = hash_words(t, words, &h)) != R_KEY) return r;
  static const char hex[] = "0123456789abcdef";
  for (int k = 7; k >= 0; k--, h >>= 4) out[k] = hex[h & 15];
  return R_KEY;
}

#ifndef PREFIXKEY_NATIVE
#include "proxy_wasm.h"

static size_t strlen_(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static int same(const char *a, size_t n, const char *b) { /* a[0..n) equals C string b */
  size_t k = 0;
  for (; k < n && b[k]; k++)
    if (a[k] != b[k]) return 0;
  return k == n && b[k] == 0;
}

#define MAX_NAME 128
#define MAX_PATHS 4
#define MAX_MODELS 64
#define MAX_STREAMS 4096
#define FIRST_READ 4096

typedef struct { char name[MAX_NAME]; int words; char session[MAX_NAME]; } Model;

static char g_key[MAX_NAME], g_model_header[MAX_NAME], g_default[MAX_NAME];
static char g_paths[MAX_PATHS][MAX_NAME];
static int g_npaths;
static Model g_models[MAX_MODELS];
static int g_nmodels;
static size_t g_max_hold;

/* A held stream: its model's word count. Streams not held have no entry. */
typedef struct Held { struct Held *next; uint32_t id; int words; } Held;
static Held *g_held[MAX_STREAMS];

static Held **slot_of(uint32_t id) {
  Held **at = &g_held[id % MAX_STREAMS];
  while (*at != NULL && (*at)->id != id) at = &(*at)->next;
  return at;
}

static void release(uint32_t id) {
  Held **at = slot_of(id);
  if (*at == NULL) return;
  Held *h = *at;
  *at = h->next;
  free(h);
}

void WASM_EXPORT(proxy_on_context_create)(uint32_t id, uint32_t parent) {}

/* ------------------------------------------------------------------ configuration */

static long number(const char **p, const char *end) {
  char w[MAX_NAME];
  long v = 0;
  if (config_word(w, MAX_NAME, p, end) <= 0) return -1;
  for (const char *c = w; *c; c++) {
    if (*c < '0' || *c > '9' || v > 100000000) return -1;
    v = v * 10 + (*c - '0');
  }
  return v;
}

static int parse_line(const char *p, const char *end) {
  char kind[MAX_NAME];
  if (config_word(kind, MAX_NAME, &p, end) <= 0) return 0;
  if (same(kind, strlen_(kind), "key")) return config_word(g_key, MAX_NAME, &p, end) > 0 ? 0 : -1;
  if (same(kind, strlen_(kind), "model_header"))
    return config_word(g_model_header, MAX_NAME, &p, end) > 0 ? 0 : -1;
  if (same(kind, strlen_(kind), "default")) return config_word(g_default, MAX_NAME, &p, end) > 0 ? 0 : -1;
  if (same(kind, strlen_(kind), "max_hold")) {
    long n = number(&p, end);
    g_max_hold = n > 5 ? (size_t)n : 0;
    return n > 5 ? 0 : -1;
  }
  if (same(kind, strlen_(kind), "path")) {
    if (g_npaths >= MAX_PATHS) return -1;
    return config_word(g_paths[g_npaths++], MAX_NAME, &p, end) > 0 ? 0 : -1;
  }
  if (!same(kind, strlen_(kind), "model") || g_nmodels >= MAX_MODELS) return -1;
  Model *m = &g_models[g_nmodels];
  if (config_word(m->name, MAX_NAME, &p, end) <= 0 || (m->words = (int)number(&p, end)) <= 0) return -1;
  if (config_word(m->session, MAX_NAME, &p, end) <= 0) return -1;
  g_nmodels++;
  return 0;
}

static int parse_config(const char *p, const char *end) {
  g_npaths = g_nmodels = 0;
  g_key[0] = g_model_header[0] = g_default[0] = 0;
  g_max_hold = 0;
  while (p < end) {
    const char *eol = p;
    while (eol < end && *eol != '\n') eol++;
    if (parse_line(p, eol) != 0) return -1;
    p = eol + 1;
  }
  return g_key[0] && g_model_header[0] && g_npaths && g_max_hold ? 0 : -1;
}

int32_t WASM_EXPORT(proxy_on_configure)(uint32_t id, size_t size) {
  char *text = NULL;
  size_t n = 0;
  if (proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, size, &text, &n) != OK) return 0;
  int bad = parse_config(text, text + n);
  free(text);
  if (bad) {
    static const char msg[] = "caravan prefix key: bad plugin configuration";
    proxy_log(LOG_WARN, msg, sizeof msg - 1);
    g_npaths = 0; /* key nothing */
    return 0;
  }
  return 1;
}

/* ------------------------------------------------------------------ headers */

/* The request headers, fetched with one host call (proxy_get_header_map_pairs: u32 count,
 * count x (u32 name size, u32 value size), then each name and value NUL-terminated). */
typedef struct { const char *data; size_t size; } Pairs;
typedef struct { const char *v; size_t n; } Str;

static uint32_t u32_at(const char *p) {
  const unsigned char *q = (const unsigned char *)p;
  return (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
}

/* The value of header `name` (lower case, as Envoy stores them); v NULL when absent. */
static Str get(Pairs h, const char *name) {
  Str none = {NULL, 0};
  if (h.size < 4) return none;
  uint32_t count = u32_at(h.data);
  if (count > (h.size - 4) / 8) return none;
  size_t at = 4 + (size_t)count * 8;
  for (uint32_t i = 0; i < count; i++) {
    size_t kn = u32_at(h.data + 4 + i * 8), vn = u32_at(h.data + 8 + i * 8);
    if (kn + vn + 2 > h.size - at) return none;
    if (same(h.data + at, kn, name)) return (Str){h.data + at + kn + 1, vn};
    at += kn + vn + 2;
  }
  return none;
}

static int keyed_path(Pairs h) {
  Str path = get(h, ":path");
  for (int i = 0; path.v != NULL && i < g_npaths; i++)
    if (same(path.v, path.n, g_paths[i])) return 1;
  return 0;
}

static int compressed(Pairs h) {
  Str enc = get(h, "grpc-encoding");
  return enc.v != NULL && !same(enc.v, enc.n, "identity");
}

/* The model of this request: the model header's value, else the default model. */
static const Model *model(Pairs h) {
  Str name = get(h, g_model_header);
  if (name.v == NULL) name = (Str){g_default, strlen_(g_default)};
  for (int i = 0; i < g_nmodels; i++)
    if (same(name.v, name.n, g_models[i].name)) return &g_models[i];
  return NULL;
}

static void hold(uint32_t id, int words) {
  Held *h = malloc(sizeof *h);
  if (h == NULL) return;
  h->id = id;
  h->words = words;
  h->next = g_held[id % MAX_STREAMS];
  g_held[id % MAX_STREAMS] = h;
}

int32_t WASM_EXPORT(proxy_on_request_headers)(uint32_t id, uint32_t headers, uint32_t eos) {
  char *data = NULL;
  size_t size = 0;
  if (g_npaths == 0 || proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &data, &size) != OK) {
    free(data);
    return CONTINUE;
  }
  Pairs h = {data, size};
  if (get(h, g_key).v != NULL) proxy_remove_header_map_value(MAP_REQUEST_HEADERS, g_key, strlen_(g_key));
  const Model *m = eos || !keyed_path(h) || compressed(h) ? NULL : model(h);
  int held = m != NULL && get(h, m->session).v == NULL;
  free(data);
  if (!held) return CONTINUE;
  hold(id, m->words);
  return *slot_of(id) != NULL ? STOP_ITERATION : CONTINUE;
}

/* ------------------------------------------------------------------ body */

int32_t WASM_EXPORT(proxy_on_request_body)(uint32_t id, size_t size, uint32_t eos) {
  Held *h = *slot_of(id);
  if (h == NULL) return CONTINUE;
  char key[8];
  int r = R_MORE;
  /* the first words usually lie in the first KiB: copy FIRST_READ bytes, then all */
  for (size_t want = FIRST_READ; r == R_MORE; want = g_max_hold) {
    char *body = NULL;
    size_t n = 0, have = size < want ? size : want;
    r = proxy_get_buffer_bytes(BUF_REQUEST_BODY, 0, have, &body, &n) == OK
            ? prefix_key_of((const uint8_t *)body, n, h->words, key) : R_NONE;
    free(body);
    if (have == size || want == g_max_hold) break;
  }
  if (r == R_MORE && !eos && size < g_max_hold) return STOP_AND_BUFFER;
  if (r == R_KEY) proxy_replace_header_map_value(MAP_REQUEST_HEADERS, g_key, strlen_(g_key), key, 8);
  release(id);
  return CONTINUE;
}

int32_t WASM_EXPORT(proxy_on_request_trailers)(uint32_t id, uint32_t trailers) {
  release(id); /* the stream ended before its first message was whole: no key */
  return CONTINUE;
}

int32_t WASM_EXPORT(proxy_on_done)(uint32_t id) { return 1; }

void WASM_EXPORT(proxy_on_delete)(uint32_t id) { release(id); }
#endif
