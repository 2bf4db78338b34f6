"""Fails at import: deploying it must fail with the traceback."""
raise RuntimeError("broken at import time")
