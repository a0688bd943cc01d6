"""``optimlab bench``: runs, reports every column, allocates nothing after the first step."""

from __future__ import annotations

import json

import pytest
import torch

from optimlab import bench, cli
from optimlab.kernels import cpu as cpu_kernels


def test_gpt2_layout_is_gpt2_small_at_quarter_width():
    shapes = bench.gpt2_shapes()
    numel = sum(torch_numel(s) for s in shapes)
    assert len(shapes) == 148
    assert 15_000_000 < numel < 15_500_000
    assert bench.gpt2_shapes(width=768)[0] == (50257, 768)


def torch_numel(shape):
    out = 1
    for n in shape:
        out *= n
    return out


@pytest.mark.slow
@pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason=cpu_kernels.UNAVAILABLE)
def test_bench_json_and_table(capsys):
    # one thread: torch's per-tensor parallel regions crawl when another process holds a core
    argv = ["bench", "--optimizers", "SGD,Adam", "--layouts", "small", "--repeats", "2",
            "--warmup", "1", "--threads", "1"]  # fmt: skip
    threads = torch.get_num_threads()
    assert cli.main([*argv, "--json"]) == 0
    assert torch.get_num_threads() == threads  # restored
    out = json.loads(capsys.readouterr().out)
    assert out["meta"]["threads"] >= 1 and out["meta"]["kernels"]
    rows = out["rows"]
    assert [(r["optimizer"], r["layout"]) for r in rows] == [("SGD", "small"), ("Adam", "small")]
    for row in rows:
        assert row["params"] == 1000 * 1024 and row["tensors"] == 1000
        assert {"optimlab", "torch for-loop", "torch foreach"} <= row["seconds"].keys()
        assert row["allocated_bytes_per_step"]["optimlab"] == 0
        assert row["speedup_vs_torch_best"] > 0 and 0 < row["share_of_limit"]
        assert row["bytes_per_param"] == {"SGD": 12, "Adam": 28}[row["optimizer"]]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert "| Adam | small |" in table and "vs torch best" in table


def test_bench_refuses_unknown_names():
    with pytest.raises(SystemExit, match="unknown \\['Adamax'\\]"):
        cli.main(["bench", "--optimizers", "Adamax"])
