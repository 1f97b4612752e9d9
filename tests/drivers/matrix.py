"""What the Python driver programs share: the arguments, the per-scenario
timeout and the output the Rust test reads (tests/drivers.rs).

A program gets one JSON argument:
  {"host", "port", "user", "password", "db", "timeout",
   "readers": {region: tenant id}, "writers": {region: tenant id},
   "scenarios": [the names of the scenarios to run]}
and prints one JSON line per scenario:
  {"scenario": name, "result": ...}          the scenario ran; the test checks the value
  {"scenario": name, "error": {code, message}}  it raised where no error was expected
  {"scenario": name, "timeout": seconds}     it did not finish in time
"""

import json
import os
import sys
import threading
import traceback

# Read order: the non-local regions first, because the first routed query of a
# connection going to another region is what drivers break on.
ORDER = ["us", "eu", "apac"]

CFG = json.loads(sys.argv[1])
READERS = CFG["readers"]
WRITERS = CFG["writers"]


def code_of(e):
    """The SQLSTATE of a driver exception (psycopg and asyncpg both call it
    sqlstate), or its class name when it carries none."""
    return getattr(e, "sqlstate", None) or type(e).__name__


def describe(e):
    return {"code": code_of(e), "message": str(e).strip()[:500]}


def attempt(fn):
    """fn's value, or the error it raised: the read after an error says
    whether the connection still works, and what broke when it does not."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        return {"error": describe(e)}


async def attempt_async(aw):
    try:
        return await aw
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        return {"error": describe(e)}


def emit(name, **fields):
    print(json.dumps({"scenario": name, **fields}), flush=True)


def run(scenarios):
    """Runs each scenario in a thread of its own so that one that hangs is
    reported as a timeout and the next ones still run; the process then exits
    without waiting for a hung thread (or its connection) to end."""
    for name, fn in scenarios:
        if name not in CFG["scenarios"]:
            continue
        box = {}

        def target(fn=fn, box=box):
            try:
                box["result"] = fn()
            except BaseException as e:  # noqa: BLE001 - every failure is a result
                box["error"] = describe(e)
                box["error"]["trace"] = traceback.format_exc()[-800:]

        t = threading.Thread(target=target, daemon=True)
        t.start()
        t.join(CFG["timeout"])
        if t.is_alive():
            emit(name, timeout=CFG["timeout"])
        elif "error" in box:
            emit(name, error=box["error"])
        else:
            emit(name, result=box["result"])
    sys.stdout.flush()
    os._exit(0)
