"""Handlers the integration tests run: each exercises one behaviour of the Python runtime."""
import os
import sys
import time


def echo(event, context):
    print("echo got", event)
    print("to stderr", file=sys.stderr)
    return {"event": event, "type": context["type"], "function": context.function_name,
            "has_deadline": context.get_remaining_time_ms() is not None}


def fail(event):
    raise ValueError("bad input: " + str(event.get("x")))


class Permanent(Exception):
    permanent = True


def fail_permanent(event):
    raise Permanent("will never work")


def slow(event):
    time.sleep(float(event.get("seconds", 5)))
    return "late"


def crash(event):
    os._exit(3)


def env(event):
    return {"secret": os.environ.get("SWITCHYARD_TEST_SECRET"), "declared": os.environ.get("GREETING"),
            "pid": os.getpid()}


def status(event):
    return {"statusCode": int(event["code"]), "body": "status " + str(event["code"])}


def hog(event):
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))


def pid_after(event):
    time.sleep(float(event.get("seconds", 0.3)))
    return {"pid": os.getpid()}
