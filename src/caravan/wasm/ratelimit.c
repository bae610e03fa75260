/* Caravan's per-inference rate limit: a proxy-wasm (ABI 0.2.1) HTTP filter for Envoy.
 *
 * It counts gRPC messages (the 5-byte length-prefixed frames of the request body) on the
 * inference methods, one token per message, against a token bucket per client (the value
 * of the identity header that api_key_auth or jwt_authn set before this filter). Buckets
 * live in proxy-wasm shared data (one store per Envoy process, shared by every worker's
 * VM with the same vm_id) and are updated with compare-and-swap, so a client's limit
 * holds across streams, connections and workers: over t seconds a client limited to R
 * messages/s with burst B gets at most B + R*t messages forwarded.
 *
 * A message that finds the bucket empty ends its stream with a local reply: gRPC
 * RESOURCE_EXHAUSTED (HTTP 429 + grpc-status 8) and the message below. Nothing of that
 * message (or any later one) reaches the replica.
 *
 * Plugin configuration (text, written by caravan.xds.inference_limit):
 *   header <name>                       identity header (one line, first)
 *   path <exact :path>                  a method whose messages are counted (1+ lines)
 *   limit <client> <per_s> <burst>      a client's bucket
 *   default <per_s> <burst>             the bucket of any other client (optional)
 * Requests without the header, or of a client with no limit, are not counted.
 *
 * Built with `python -m ziglang cc --target=wasm32-freestanding` by caravan.wasm.build.
 */
#include "proxy_wasm.h"

static void *calloc(size_t n, size_t size) {
  void *p = malloc(n * size);
  return p == NULL ? NULL : memset(p, 0, n * size);
}

int memcmp(const void *a, const void *b, size_t n) {
  const unsigned char *x = a, *y = b;
  for (; n; n--, x++, y++)
    if (*x != *y) return *x - *y;
  return 0;
}

static size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static int strcmp(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return (unsigned char)*a - (unsigned char)*b;
}

static const char *memchr_(const char *p, char c, size_t n) {
  for (; n; n--, p++)
    if (*p == c) return p;
  return NULL;
}

/* A non-negative decimal ("12", "0.25"); -1 when malformed. */
static double strtod_(const char *s) {
  double v = 0, scale = 1;
  int frac = 0, digits = 0;
  for (; *s; s++) {
    if (*s == '.' && !frac) { frac = 1; continue; }
    if (*s < '0' || *s > '9') return -1;
    digits++;
    if (frac) v += (scale /= 10) * (*s - '0'); else v = v * 10 + (*s - '0');
  }
  return digits ? v : -1;
}

enum { GRPC_RESOURCE_EXHAUSTED = 8 };

#define MAX_NAME 256
#define MAX_PATHS 8
#define MAX_STREAMS 4096
#define CAS_TRIES 64

typedef struct { char name[MAX_NAME]; double per_s, burst; } Limit;

static char g_header[MAX_NAME];
static char g_paths[MAX_PATHS][MAX_NAME];
static int g_npaths;
static Limit *g_limits;
static int g_nlimits;
static Limit g_default;
static int g_has_default;
static uint32_t g_refused_metric;

/* Per stream: its client's limit (NULL: not counted), the frame parser's state. */
typedef struct Stream {
  struct Stream *next;   /* the next stream in its hash slot */
  uint32_t id;
  const Limit *limit;
  char client[MAX_NAME];
  uint32_t header_seen;  /* bytes of the current 5-byte frame header seen so far */
  uint32_t length;       /* the current frame's payload length (big-endian in the header) */
  uint64_t payload_left; /* payload bytes of the current frame still to come */
  int refused;
} Stream;

static Stream *g_streams[MAX_STREAMS]; /* chained hash of open streams by context id */

static Stream *stream_of(uint32_t id) {
  Stream *s = g_streams[id % MAX_STREAMS];
  while (s != NULL && s->id != id) s = s->next;
  return s;
}

void WASM_EXPORT(proxy_on_context_create)(uint32_t id, uint32_t parent) {
  if (parent == 0) return; /* the root context */
  Stream *s = calloc(1, sizeof *s);
  if (s == NULL) return;
  s->id = id;
  s->next = g_streams[id % MAX_STREAMS];
  g_streams[id % MAX_STREAMS] = s;
}

/* ------------------------------------------------------------------ configuration */

static double number(const char **p, const char *end) {
  char word[MAX_NAME];
  if (config_word(word, MAX_NAME, p, end) <= 0) return -1;
  return strtod_(word);
}

static int count_lines(const char *p, const char *end) {
  int n = 1;
  for (; p < end; p++) n += *p == '\n';
  return n;
}

static int parse_line(const char *p, const char *end) {
  char kind[MAX_NAME];
  if (config_word(kind, MAX_NAME, &p, end) <= 0) return 0;
  if (!strcmp(kind, "header")) return config_word(g_header, MAX_NAME, &p, end) > 0 ? 0 : -1;
  if (!strcmp(kind, "path")) {
    if (g_npaths >= MAX_PATHS) return -1;
    return config_word(g_paths[g_npaths++], MAX_NAME, &p, end) > 0 ? 0 : -1;
  }
  Limit *l = !strcmp(kind, "default") ? &g_default : !strcmp(kind, "limit") ? &g_limits[g_nlimits] : NULL;
  if (l == NULL) return -1;
  if (l != &g_default && config_word(l->name, MAX_NAME, &p, end) <= 0) return -1;
  l->per_s = number(&p, end);
  l->burst = number(&p, end);
  if (l->per_s <= 0 || l->burst < 1) return -1;
  if (l == &g_default) g_has_default = 1; else g_nlimits++;
  return 0;
}

static int parse_config(const char *text, size_t size) {
  const char *p = text, *end = text + size;
  free(g_limits);
  g_limits = calloc((size_t)count_lines(p, end), sizeof(Limit));
  g_nlimits = g_npaths = g_has_default = 0;
  g_header[0] = 0;
  while (p < end) {
    const char *eol = memchr_(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;
    if (parse_line(p, eol) != 0) return -1;
    p = eol + 1;
  }
  return g_header[0] && g_npaths ? 0 : -1;
}

static void warn(const char *msg) { proxy_log(LOG_WARN, msg, strlen(msg)); }

int32_t WASM_EXPORT(proxy_on_configure)(uint32_t id, size_t size) {
  char *text = NULL;
  size_t n = 0;
  if (proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, size, &text, &n) != OK) return 0;
  int bad = parse_config(text, n);
  free(text);
  if (bad) {
    warn("caravan inference limit: bad plugin configuration");
    return 0;
  }
  static const char metric[] = "caravan_inference_limit.refused_streams";
  proxy_define_metric(0 /* counter */, metric, sizeof metric - 1, &g_refused_metric);
  return 1;
}

/* ------------------------------------------------------------------ headers */

static const Limit *limit_of(const char *client) {
  for (int i = 0; i < g_nlimits; i++)
    if (!strcmp(g_limits[i].name, client)) return &g_limits[i];
  return g_has_default ? &g_default : NULL;
}

static int counted_path(void) {
  char *path = NULL;
  size_t n = 0;
  int found = 0;
  if (proxy_get_header_map_value(MAP_REQUEST_HEADERS, ":path", 5, &path, &n) != OK) return 0;
  for (int i = 0; i < g_npaths && !found; i++)
    found = strlen(g_paths[i]) == n && !memcmp(g_paths[i], path, n);
  free(path);
  return found;
}

int32_t WASM_EXPORT(proxy_on_request_headers)(uint32_t id, uint32_t headers, uint32_t eos) {
  Stream *s = stream_of(id);
  char *value = NULL;
  size_t n = 0;
  if (s == NULL || !counted_path()) return CONTINUE;
  if (proxy_get_header_map_value(MAP_REQUEST_HEADERS, g_header, strlen(g_header), &value, &n) != OK)
    return CONTINUE;
  if (n > 0 && n < MAX_NAME) {
    memcpy(s->client, value, n);
    s->client[n] = 0;
    s->limit = limit_of(s->client);
  }
  free(value);
  return CONTINUE;
}

/* ------------------------------------------------------------------ token bucket */

typedef struct { double tokens; uint64_t at_ns; } Bucket;

/* Take one token from the client's bucket (compare-and-swap on shared data); 1 when taken. */
static int take(const Stream *s) {
  char key[MAX_NAME + 16] = "caravan-limit/";
  size_t klen = strlen(key);
  memcpy(key + klen, s->client, strlen(s->client) + 1);
  klen = strlen(key);
  for (int attempt = 0; attempt < CAS_TRIES; attempt++) {
    uint64_t now = 0;
    proxy_get_current_time_nanoseconds(&now);
    char *raw = NULL;
    size_t n = 0;
    uint32_t cas = 0;
    Bucket b = {s->limit->burst, now};
    int got = proxy_get_shared_data(key, klen, &raw, &n, &cas);
    if (got == OK && n == sizeof b) memcpy(&b, raw, sizeof b);
    free(raw);
    if (now > b.at_ns) b.tokens += (double)(now - b.at_ns) * 1e-9 * s->limit->per_s;
    if (b.tokens > s->limit->burst) b.tokens = s->limit->burst;
    b.at_ns = now > b.at_ns ? now : b.at_ns;
    int ok = b.tokens >= 1.0;
    if (ok) b.tokens -= 1.0;
    int set = proxy_set_shared_data(key, klen, (const char *)&b, sizeof b, got == OK ? cas : 0);
    if (set == OK) return ok;
    if (set != CAS_MISMATCH) return 0;
  }
  return 0; /* persistent contention: refuse rather than over-admit */
}

/* ------------------------------------------------------------------ body: gRPC frames */

static void refuse(Stream *s) {
  char body[MAX_NAME * 2];
  size_t n = 0;
  const char *parts[] = {"caravan: client '", s->client, "' is over its inference rate limit"};
  for (int i = 0; i < 3; i++) {
    size_t len = strlen(parts[i]);
    memcpy(body + n, parts[i], len);
    n += len;
  }
  static const char details[] = "caravan_inference_rate_limited";
  s->refused = 1;
  proxy_increment_metric(g_refused_metric, 1);
  proxy_send_local_response(429, details, sizeof details - 1, body, n, NULL, 0,
                            GRPC_RESOURCE_EXHAUSTED);
}

/* Walk a body chunk of ``size`` bytes through the frame parser, copying into the VM only
 * the frame-header bytes (payload bytes are skipped where they lie); 0 when a message was
 * refused. A failed read leaves the rest of the chunk uncounted (it cannot happen for a
 * range inside the chunk). */
static int count_frames(Stream *s, size_t size) {
  size_t i = 0;
  while (i < size) {
    if (s->payload_left > 0) {
      size_t skip = size - i < s->payload_left ? size - i : (size_t)s->payload_left;
      s->payload_left -= skip;
      i += skip;
      continue;
    }
    if (s->header_seen == 0 && !take(s)) return 0;
    size_t want = 5 - s->header_seen, n = 0;
    if (want > size - i) want = size - i;
    char *p = NULL;
    int got = proxy_get_buffer_bytes(BUF_REQUEST_BODY, i, want, &p, &n);
    if (got != OK || n == 0) {
      free(p);
      return 1;
    }
    for (size_t k = 0; k < n; k++, s->header_seen++) /* byte 0: the compressed flag */
      if (s->header_seen >= 1) s->length = (s->length << 8) | (unsigned char)p[k];
    free(p);
    i += n;
    if (s->header_seen == 5) {
      s->payload_left = s->length;
      s->header_seen = 0;
      s->length = 0;
    }
  }
  return 1;
}

int32_t WASM_EXPORT(proxy_on_request_body)(uint32_t id, size_t size, uint32_t eos) {
  Stream *s = stream_of(id);
  if (s == NULL || s->limit == NULL) return CONTINUE;
  if (s->refused) return STOP_NO_BUFFER;
  if (count_frames(s, size)) return CONTINUE;
  refuse(s);
  return STOP_NO_BUFFER;
}

int32_t WASM_EXPORT(proxy_on_done)(uint32_t id) { return 1; }

void WASM_EXPORT(proxy_on_delete)(uint32_t id) {
  Stream **at = &g_streams[id % MAX_STREAMS];
  while (*at != NULL && (*at)->id != id) at = &(*at)->next;
  if (*at == NULL) return;
  Stream *s = *at;
  *at = s->next;
  free(s);
}
