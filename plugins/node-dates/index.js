// node-dates: a process plugin in Node (runtime = "process"; see ../README.md).
// Reads line-delimited JSON-RPC requests on stdin and answers each on stdout.
"use strict";
const readline = require("node:readline");

const tools = {
  format({ iso, locale = "en-GB", timeZone = "UTC" }) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) throw new Error(`not a date: ${iso}`);
    const formatted = new Intl.DateTimeFormat(locale, { dateStyle: "full", timeStyle: "short", timeZone }).format(date);
    return { formatted };
  },
  diff({ from, to }) {
    const ms = new Date(to).getTime() - new Date(from).getTime();
    if (Number.isNaN(ms)) throw new Error("from and to must be dates");
    return { days: ms / 86400000, hours: ms / 3600000 };
  },
};

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const request = JSON.parse(line);
  if (request.id === undefined) return; // a notification ($/cancelRequest): our calls are instant
  let answer;
  try {
    const { tool, input } = request.params;
    if (!tools[tool]) throw new Error(`unknown tool ${tool}`);
    answer = { jsonrpc: "2.0", id: request.id, result: tools[tool](input || {}) };
  } catch (err) {
    answer = { jsonrpc: "2.0", id: request.id, error: { code: -32000, message: String(err.message || err) } };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
process.stderr.write("node-dates ready\n");
