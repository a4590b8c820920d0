/* text-tools: word count, slugify, case conversion. Built by tools/build_plugins.py. */
#include "../sidecar_abi.h"
#include <ctype.h>

static int64_t error(buf_t *out, const char *msg) {
    buf_str(out, "{\"error\":"); buf_json_str(out, msg, strlen(msg)); buf_str(out, "}");
    return sidecar_pack(out->p, out->n);
}

EXPORT("handle") int64_t handle(const char *in, int32_t n) {
    buf_t out = {0};
    size_t len; char *text = json_get_string(in, n, "text", &len);
    if (!text) return error(&out, "input.text is required");
    if (json_tool_is(in, n, "wordcount")) {
        long words = 0, lines = len ? 1 : 0, chars = 0; int in_word = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)text[i];
            if ((c & 0xC0) != 0x80) chars++;
            if (c == '\n' && i + 1 < len) lines++;
            if (isspace(c)) in_word = 0; else if (!in_word) { in_word = 1; words++; }
        }
        buf_str(&out, "{\"words\":"); buf_int(&out, words); buf_str(&out, ",\"lines\":"); buf_int(&out, lines);
        buf_str(&out, ",\"chars\":"); buf_int(&out, chars); buf_str(&out, "}");
    } else if (json_tool_is(in, n, "slugify")) {
        char *slug = malloc(len + 1); size_t o = 0; int dash = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)text[i];
            if (c < 0x80 && isalnum(c)) {
                if (dash && o) slug[o++] = '-';
                slug[o++] = (char)tolower(c); dash = 0;
            } else if ((c & 0xC0) != 0x80) dash = 1;
        }
        buf_str(&out, "{\"slug\":"); buf_json_str(&out, slug, o); buf_str(&out, "}");
    } else if (json_tool_is(in, n, "case")) {
        char *to = json_get_string(in, n, "to", NULL);
        int word_start = 1;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)text[i];
            if (c >= 0x80) { word_start = 0; continue; }
            if (to && strcmp(to, "upper") == 0) text[i] = (char)toupper(c);
            else if (to && strcmp(to, "title") == 0) text[i] = (char)(word_start ? toupper(c) : tolower(c));
            else text[i] = (char)tolower(c);
            word_start = isspace(c) || c == '-' || c == '_';
        }
        buf_str(&out, "{\"text\":"); buf_json_str(&out, text, len); buf_str(&out, "}");
    } else {
        return error(&out, "unknown tool");
    }
    return sidecar_pack(out.p, out.n);
}
