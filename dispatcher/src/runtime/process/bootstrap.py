"""Switchyard Python worker: loads one handler and serves invocations over the worker protocol.

Protocol (see docs/worker-protocol.md): frames on the process's original stdin/stdout, each a
4-byte big-endian length followed by that many bytes of UTF-8 JSON. At start this script moves the
protocol to private descriptors and points fd 1 at fd 2, so whatever a handler prints goes to the
log stream and can never corrupt the protocol.
"""
import json
import os
import struct
import sys
import time

# base64, inspect and traceback are imported only when needed: cold starts are mostly imports.

_proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
_proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
os.dup2(2, 1)
sys.stdout.reconfigure(line_buffering=True)
sys.stderr.reconfigure(line_buffering=True)

END_MARK = "\x1eSWITCHYARD-END "


def _read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = _proto_in.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv():
    head = _read_exact(4)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    body = _read_exact(length)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def _send(msg):
    body = json.dumps(msg, default=str).encode("utf-8")
    _proto_out.write(struct.pack(">I", len(body)) + body)
    _proto_out.flush()


class Context(dict):
    """The invocation context: CloudEvent attributes, function name and deadline.

    Keys are readable as attributes too: context.id, context["type"], context.function_name.
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def get_remaining_time_ms(self):
        deadline = self.get("deadline_ms")
        if deadline is None:
            return None
        return max(0, int(deadline - time.time() * 1000))


def _error(exc, kind="handler"):
    import traceback

    return {
        "kind": kind,
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "permanent": bool(getattr(exc, "permanent", False)),
    }


def _load(path, entrypoint):
    import importlib.util

    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location("switchyard_handler", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, entrypoint, None)
    if fn is None or not callable(fn):
        raise AttributeError(f"{path} has no callable {entrypoint!r}")
    code = getattr(fn, "__code__", None)
    if code is not None:
        # Plain functions: count positional parameters without importing inspect.
        wants_context = code.co_argcount - (1 if hasattr(fn, "__self__") else 0) >= 2 or bool(code.co_flags & 0x04)
    else:
        import inspect

        try:
            params = inspect.signature(fn).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            wants_context = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            wants_context = True
    return fn, wants_context


def _response(result):
    if isinstance(result, dict) and "statusCode" in result:
        status = int(result["statusCode"])
        headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
        body = result.get("body")
    else:
        status, headers, body = 200, {"content-type": "application/json"}, json.dumps(result, default=str)
    if body is None:
        return {"status": status, "headers": headers, "body": ""}
    if isinstance(body, (bytes, bytearray)):
        import base64

        return {"status": status, "headers": headers, "body_base64": base64.b64encode(body).decode()}
    if not isinstance(body, str):
        headers.setdefault("content-type", "application/json")
        body = json.dumps(body, default=str)
    return {"status": status, "headers": headers, "body": body}


def main():
    path, entrypoint = sys.argv[1], sys.argv[2]
    try:
        handler, wants_context = _load(path, entrypoint)
    except BaseException as exc:  # noqa: BLE001 - any import failure is reported, then we exit
        _send({"type": "init_error", "error": _error(exc, "init")})
        return 1
    _send({"type": "ready", "pid": os.getpid()})
    while True:
        msg = _recv()
        if msg is None:
            return 0
        if msg.get("type") != "invoke":
            continue
        seq = msg.get("seq")
        context = Context(msg.get("context") or {})
        try:
            result = handler(msg.get("event"), context) if wants_context else handler(msg.get("event"))
            reply = {"type": "result", "seq": seq, "ok": True, "response": _response(result)}
        except Exception as exc:  # noqa: BLE001 - handler failures are reported, the worker lives on
            reply = {"type": "result", "seq": seq, "ok": False, "error": _error(exc)}
        except SystemExit as exc:
            reply = {"type": "result", "seq": seq, "ok": False, "error": _error(exc)}
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(2, f"{END_MARK}{seq}\n".encode())
            _send(reply)
            return 0
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(2, f"{END_MARK}{seq}\n".encode())
        _send(reply)


if __name__ == "__main__":
    sys.exit(main())
