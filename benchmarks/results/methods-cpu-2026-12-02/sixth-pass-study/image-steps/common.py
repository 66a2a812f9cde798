# ruff: noqa: E402, F403, F405, E741  (a study script: path setup before imports, shared helpers by *)
import os

HERE = os.path.dirname(os.path.abspath(__file__))  # outputs beside the script
import sys
import time
import statistics

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 5)))
import torch

torch.set_num_threads(1)
from sslfast import train as recipes
from sslfast.bench import methods as bm


def build(name):
    case = bm.method_case(name, recipes.RECIPES[name].data)
    inputs = case.make_inputs(torch.device("cpu"), torch.float32, False)
    states = inputs.args[0] if hasattr(inputs, "args") else inputs[0][0]
    return case, states


def tt(fn, clock=time.thread_time):
    t0 = clock()
    fn()
    return (clock() - t0) * 1e3


def med(x):
    return statistics.median(x)
