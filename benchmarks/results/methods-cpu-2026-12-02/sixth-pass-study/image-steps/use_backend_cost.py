# ruff: noqa: E402, F403, F405, E741  (a study script: path setup before imports, shared helpers by *)
import os

HERE = os.path.dirname(os.path.abspath(__file__))  # outputs beside the script
import sys

sys.path.insert(0, HERE)
from common import *


def f():
    for _ in range(1000):
        with sslfast.use_backend("reference"):
            pass


xs = [tt(f) / 1000 for _ in range(7)]
print(f"use_backend('reference') enter+exit: {med(xs) * 1e3:.1f} us per step (charged to eager only)")
