"""Smoke tests: every example runs a few steps end to end."""

import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
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


def test_model_transform_examples_run(tmp_path):
    results = load("lora_finetune").main(steps=5, rank=2, out=tmp_path)
    assert results["merged, acc 5-9"] == results["LoRA on 5-9, acc 5-9"]
    assert (tmp_path / "adapter_model.npz").is_file()
    runs = load("mixed_precision").main(steps=5)
    assert set(runs) == {"float32", "bfloat16", "float16"}
    maps = load("feature_maps").main(steps=5, out=tmp_path)
    assert maps["conv1"].shape == (4, 8, 8, 8)
    assert (tmp_path / "feature_maps.png").is_file()
