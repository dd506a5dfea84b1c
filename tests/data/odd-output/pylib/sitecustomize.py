"""Writes to stderr outside any ansible event: at start-up and at exit (see README.md)."""
import atexit
import sys

sys.stderr.write("sitecustomize: a warning line\n")
sys.stderr.write("sitecustomize:\tsecond line, \x1b[33mcoloured\x1b[0m, caf\u00e9\n")
sys.stderr.flush()
sys.stderr.buffer.write(b"sitecustomize: invalid utf-8 \xff\xfe\xc3(\n")
sys.stderr.buffer.flush()
sys.stderr.write("sitecustomize: a line without a newline")
sys.stderr.flush()
atexit.register(lambda: (sys.stderr.write("sitecustomize: bye, no newline"), sys.stderr.flush()))
