/* sidecar plugin ABI v1 helpers for C (see plugins/README.md).
 * The host writes the input JSON into memory it got from alloc(), calls handle(ptr, len),
 * and reads the output at (result >> 32, result & 0xffffffff). */
#ifndef SIDECAR_ABI_H
#define SIDECAR_ABI_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("sidecar"), import_name(name)))

IMPORT("log") void sidecar_log(int32_t level, const char *ptr, int32_t len);
IMPORT("kv_get") int32_t sidecar_kv_get(const char *key, int32_t key_len);
IMPORT("kv_set") int32_t sidecar_kv_set(const char *key, int32_t key_len, const char *val, int32_t val_len);
IMPORT("kv_delete") int32_t sidecar_kv_delete(const char *key, int32_t key_len);
IMPORT("config_get") int32_t sidecar_config_get(const char *key, int32_t key_len);
IMPORT("http_fetch") int32_t sidecar_http_fetch(const char *req, int32_t req_len);
IMPORT("result_read") int32_t sidecar_result_read(char *buf, int32_t cap);

EXPORT("alloc") void *sidecar_alloc(int32_t len) { return malloc(len ? (size_t)len : 1); }
EXPORT("dealloc") void sidecar_dealloc(void *ptr, int32_t len) { (void)len; free(ptr); }

static inline int64_t sidecar_pack(const char *ptr, size_t len) {
    return (int64_t)(((uint64_t)(uintptr_t)ptr << 32) | (uint64_t)(uint32_t)len);
}

/* A growable output buffer. */
typedef struct { char *p; size_t n, cap; } buf_t;
static void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) { b->cap = (b->n + n + 1) * 2; b->p = realloc(b->p, b->cap); }
    memcpy(b->p + b->n, s, n); b->n += n; b->p[b->n] = 0;
}
static void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_int(buf_t *b, long v) {
    char tmp[24]; int i = 23; tmp[i] = 0; int neg = v < 0; unsigned long u = neg ? -v : v;
    do { tmp[--i] = '0' + u % 10; u /= 10; } while (u);
    if (neg) tmp[--i] = '-';
    buf_str(b, tmp + i);
}
/* a JSON string literal, escaped */
static void buf_json_str(buf_t *b, const char *s, size_t n) {
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; buf_put(b, e, 2); }
        else if (c == '\n') buf_put(b, "\\n", 2);
        else if (c == '\t') buf_put(b, "\\t", 2);
        else if (c == '\r') buf_put(b, "\\r", 2);
        else if (c < 0x20) { char e[7] = "\\u0000"; e[4] = "0123456789abcdef"[c >> 4]; e[5] = "0123456789abcdef"[c & 15]; buf_put(b, e, 6); }
        else buf_put(b, (const char *)&c, 1);
    }
    buf_put(b, "\"", 1);
}

/* Finds "key":"..." in compact JSON (as the host sends it) and decodes the string into a
 * fresh NUL-terminated buffer; NULL when absent. Good enough for flat inputs. */
static char *json_get_string(const char *json, size_t n, const char *key, size_t *out_len) {
    char pat[80]; size_t k = strlen(key);
    if (k + 4 > sizeof pat) return NULL;
    pat[0] = '"'; memcpy(pat + 1, key, k); memcpy(pat + 1 + k, "\":\"", 3); size_t pl = k + 4;
    for (size_t i = 0; i + pl <= n; i++) {
        if (memcmp(json + i, pat, pl) != 0) continue;
        const char *s = json + i + pl; const char *end = json + n;
        char *out = malloc(end - s + 1); size_t o = 0;
        while (s < end && *s != '"') {
            if (*s == '\\' && s + 1 < end) {
                s++;
                switch (*s) {
                case 'n': out[o++] = '\n'; break; case 't': out[o++] = '\t'; break;
                case 'r': out[o++] = '\r'; break; case 'b': out[o++] = '\b'; break;
                case 'f': out[o++] = '\f'; break;
                case 'u': {
                    unsigned cp = 0;
                    for (int j = 1; j <= 4 && s + j < end; j++) {
                        char h = s[j]; cp = cp * 16 + (h <= '9' ? h - '0' : (h | 32) - 'a' + 10);
                    }
                    s += 4;
                    if (cp < 0x80) out[o++] = (char)cp;
                    else if (cp < 0x800) { out[o++] = 0xC0 | (cp >> 6); out[o++] = 0x80 | (cp & 63); }
                    else { out[o++] = 0xE0 | (cp >> 12); out[o++] = 0x80 | ((cp >> 6) & 63); out[o++] = 0x80 | (cp & 63); }
                    break;
                }
                default: out[o++] = *s;
                }
                s++;
            } else out[o++] = *s++;
        }
        out[o] = 0; if (out_len) *out_len = o;
        return out;
    }
    return NULL;
}

static int json_tool_is(const char *json, size_t n, const char *tool) {
    size_t len; char *t = json_get_string(json, n, "tool", &len);
    int same = t && strcmp(t, tool) == 0; free(t); return same;
}
#endif
