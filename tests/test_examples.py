"""Smoke tests: every example runs a few steps end to end."""

import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["train_mlp", "frozen_layer", "build_model"])
def test_seed_examples_run(name):
    load(name).main(steps=5)


def test_rnn_example_learns():
    accuracy = load("train_rnn").main(steps=60)
    assert accuracy > 0.8
