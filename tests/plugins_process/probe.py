"""A process plugin for tests: reports its environment, sleeps, crashes, allocates, and
notes cancellations (as a non-JSON stdout line, which the host puts in the plugin's log)."""

import json
import os
import resource
import sys
import time

for line in sys.stdin:
    request = json.loads(line)
    if request.get("method") == "$/cancelRequest":
        print(f"cancelled {request['params']['id']}", flush=True)
        continue
    params = request["params"]
    tool, args = params["tool"], params.get("input") or {}
    try:
        if tool == "env":
            result = {"cwd": os.getcwd(), "env": sorted(os.environ), "pid": os.getpid(),
                      "as": resource.getrlimit(resource.RLIMIT_AS)[0],
                      "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
                      "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
        elif tool == "sleep":
            time.sleep(args.get("seconds", 60))
            result = {"slept": True}
        elif tool == "crash":
            print("about to crash", file=sys.stderr, flush=True)
            os._exit(3)
        elif tool == "hog":
            result = {"bytes": len(bytearray(args.get("bytes", 1 << 30)))}
        else:
            raise ValueError(f"unknown tool {tool}")
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
    except Exception as exc:  # noqa: BLE001
        answer = {"jsonrpc": "2.0", "id": request["id"], "error": {"message": f"{type(exc).__name__}: {exc}"}}
    print(json.dumps(answer), flush=True)
