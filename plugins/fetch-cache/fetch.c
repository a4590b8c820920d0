/* fetch-cache: HTTP GET through the host's http_fetch, cached in the plugin's kv store.
 * Uses two permissions, both declared in plugin.toml and granted by the user: the hosts it
 * may reach, and a kv quota. Built by tools/build_plugins.py. */
#include "../sidecar_abi.h"

static int64_t error(buf_t *out, const char *msg) {
    buf_str(out, "{\"error\":"); buf_json_str(out, msg, strlen(msg)); buf_str(out, "}");
    return sidecar_pack(out->p, out->n);
}

static void say(const char *msg, const char *url) {
    buf_t line = {0};
    buf_str(&line, msg); buf_str(&line, url);
    sidecar_log(1, line.p, (int32_t)line.n);
    free(line.p);
}

/* the host's last result (kv_get, http_fetch), n bytes */
static char *last_result(int32_t n) {
    char *data = malloc((size_t)n + 1);
    sidecar_result_read(data, n);
    data[n] = 0;
    return data;
}

EXPORT("handle") int64_t handle(const char *in, int32_t n) {
    buf_t out = {0};
    size_t len; char *url = json_get_string(in, n, "url", &len);
    if (!url) return error(&out, "input.url is required");
    if (json_tool_is(in, n, "forget")) {
        int32_t gone = sidecar_kv_delete(url, (int32_t)len);
        buf_str(&out, gone == 1 ? "{\"forgotten\":true}" : "{\"forgotten\":false}");
        return sidecar_pack(out.p, out.n);
    }
    if (!json_tool_is(in, n, "fetch")) return error(&out, "unknown tool");
    int32_t found = sidecar_kv_get(url, (int32_t)len);
    if (found >= 0) {
        char *cached = last_result(found);
        say("cache hit: ", url);
        buf_str(&out, "{\"cached\":true,\"response\":"); buf_put(&out, cached, (size_t)found); buf_str(&out, "}");
        return sidecar_pack(out.p, out.n);
    }
    buf_t req = {0};
    buf_str(&req, "{\"url\":"); buf_json_str(&req, url, len); buf_str(&req, "}");
    int32_t got = sidecar_http_fetch(req.p, (int32_t)req.n);
    char *response = last_result(got);
    /* a failed fetch ({"status":0,...}) is answered, not cached */
    int ok = strncmp(response, "{\"status\":0", 11) != 0;
    int stored = ok ? sidecar_kv_set(url, (int32_t)len, response, got) : -1;
    say(stored == 0 ? "fetched and cached: " : "fetched, not cached: ", url);
    buf_str(&out, "{\"cached\":false,\"stored\":"); buf_str(&out, stored == 0 ? "true" : "false");
    buf_str(&out, ",\"response\":"); buf_put(&out, response, (size_t)got); buf_str(&out, "}");
    return sidecar_pack(out.p, out.n);
}
