//! json-query: jq-like paths over JSON, in Zig (ABI v1, see ../README.md).
//!
//! Tool `query`, input {"data": <any JSON>, "path": ".a.b[0]"}; output {"results": [...]},
//! every value the path selects (as jq's stream, collected). Path steps:
//!   .name  ."quoted name"  .["quoted name"]  [N] (negative counts from the end)  [] (every element or value)
//! `.` alone selects the whole input. A missing key or index selects null; indexing a value
//! of the wrong type answers {"error": ...}.
const std = @import("std");
const json = std.json;
const gpa = std.heap.wasm_allocator;

export fn alloc(len: i32) ?[*]u8 {
    const buf = gpa.alloc(u8, @intCast(@max(len, 1))) catch return null;
    return buf.ptr;
}

export fn dealloc(ptr: [*]u8, len: i32) void {
    gpa.free(ptr[0..@intCast(@max(len, 1))]);
}

fn pack(out: []const u8) i64 {
    return @bitCast((@as(u64, @intFromPtr(out.ptr)) << 32) | @as(u64, out.len));
}

const Failure = error{ Query, OutOfMemory };

const Query = struct {
    path: []const u8,
    at: usize = 0,
    message: []const u8 = "",

    fn fail(self: *Query, comptime fmt: []const u8, args: anytype) Failure {
        self.message = std.fmt.allocPrint(gpa, fmt, args) catch "invalid path";
        return error.Query;
    }

    fn name(self: *Query) []const u8 {
        const start = self.at;
        while (self.at < self.path.len) : (self.at += 1) {
            const c = self.path[self.at];
            if (!(std.ascii.isAlphanumeric(c) or c == '_' or c == '-' or c >= 0x80)) break;
        }
        return self.path[start..self.at];
    }

    fn quoted(self: *Query) Failure![]const u8 {
        self.at += 1; // the opening quote
        const start = self.at;
        while (self.at < self.path.len and self.path[self.at] != '"') self.at += 1;
        if (self.at >= self.path.len) return self.fail("unterminated string in the path", .{});
        self.at += 1;
        return self.path[start .. self.at - 1];
    }

    fn field(self: *Query, values: []const json.Value, key: []const u8, out: *std.ArrayList(json.Value)) Failure!void {
        for (values) |v| switch (v) {
            .object => |o| try out.append(gpa, o.get(key) orelse .null),
            .null => try out.append(gpa, .null),
            else => return self.fail("cannot index {s} with \"{s}\"", .{ kind(v), key }),
        };
    }

    fn index(self: *Query, values: []const json.Value, n: i64, out: *std.ArrayList(json.Value)) Failure!void {
        for (values) |v| switch (v) {
            .array => |a| {
                const len: i64 = @intCast(a.items.len);
                const i = if (n < 0) len + n else n;
                try out.append(gpa, if (i >= 0 and i < len) a.items[@intCast(i)] else .null);
            },
            .null => try out.append(gpa, .null),
            else => return self.fail("cannot index {s} with a number", .{kind(v)}),
        };
    }

    fn each(self: *Query, values: []const json.Value, out: *std.ArrayList(json.Value)) Failure!void {
        for (values) |v| switch (v) {
            .array => |a| try out.appendSlice(gpa, a.items),
            .object => |o| try out.appendSlice(gpa, o.values()),
            else => return self.fail("cannot iterate over {s}", .{kind(v)}),
        };
    }

    fn run(self: *Query, data: json.Value) Failure![]const json.Value {
        var current: std.ArrayList(json.Value) = .empty;
        try current.append(gpa, data);
        if (self.path.len == 0 or self.path[0] != '.' and self.path[0] != '[')
            return self.fail("a path starts with . or [", .{});
        while (self.at < self.path.len) {
            var next: std.ArrayList(json.Value) = .empty;
            const c = self.path[self.at];
            if (c == '.') {
                self.at += 1;
                if (self.at >= self.path.len or self.path[self.at] == '[') continue;
                const key = if (self.path[self.at] == '"') try self.quoted() else self.name();
                if (key.len == 0) return self.fail("expected a name at position {d}", .{self.at});
                try self.field(current.items, key, &next);
            } else if (c == '[') {
                self.at += 1;
                if (self.at < self.path.len and self.path[self.at] == ']') {
                    try self.each(current.items, &next);
                } else if (self.at < self.path.len and self.path[self.at] == '"') {
                    try self.field(current.items, try self.quoted(), &next);
                } else {
                    const start = self.at;
                    while (self.at < self.path.len and (self.path[self.at] == '-' or std.ascii.isDigit(self.path[self.at]))) self.at += 1;
                    const n = std.fmt.parseInt(i64, self.path[start..self.at], 10) catch
                        return self.fail("expected a number, a string or ] at position {d}", .{start});
                    try self.index(current.items, n, &next);
                }
                if (self.at >= self.path.len or self.path[self.at] != ']')
                    return self.fail("expected ] at position {d}", .{self.at});
                self.at += 1;
            } else {
                return self.fail("unexpected '{c}' at position {d}", .{ c, self.at });
            }
            current = next;
        }
        return current.items;
    }
};

fn kind(v: json.Value) []const u8 {
    return switch (v) {
        .null => "null",
        .bool => "a boolean",
        .integer, .float, .number_string => "a number",
        .string => "a string",
        .array => "an array",
        .object => "an object",
    };
}

fn errorOut(message: []const u8) i64 {
    const out = json.Stringify.valueAlloc(gpa, .{ .@"error" = message }, .{}) catch return 0;
    return pack(out);
}

export fn handle(ptr: [*]u8, len: i32) i64 {
    const input = ptr[0..@intCast(len)];
    const parsed = json.parseFromSlice(json.Value, gpa, input, .{}) catch return errorOut("the input is not JSON");
    const args = switch (parsed.value) {
        .object => |o| o.get("input") orelse return errorOut("no input"),
        else => return errorOut("no input"),
    };
    const fields = switch (args) {
        .object => |o| o,
        else => return errorOut("input must be an object"),
    };
    const path = switch (fields.get("path") orelse json.Value{ .string = "." }) {
        .string => |s| s,
        else => return errorOut("input.path must be a string"),
    };
    var query = Query{ .path = path };
    const results = query.run(fields.get("data") orelse .null) catch |err| return switch (err) {
        error.Query => errorOut(query.message),
        error.OutOfMemory => errorOut("out of memory"),
    };
    const out = json.Stringify.valueAlloc(gpa, .{ .results = results }, .{}) catch return errorOut("out of memory");
    return pack(out);
}
