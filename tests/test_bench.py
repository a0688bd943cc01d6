"""``optimlab bench``: the table's structure, the rounds' arithmetic, the loaded-machine
note, one-line errors; optimlab's step allocates nothing after the first.  No timings
are asserted: the figures are whatever this machine gives."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch

from optimlab import bench, cli
from optimlab.bench import cases, table, timing
from optimlab.kernels import cpu as cpu_kernels


def test_gpt2_layout_is_gpt2_small_at_quarter_width():
    shapes = cases.gpt2_shapes()
    assert len(shapes) == 148
    assert 15_000_000 < sum(math.prod(s) for s in shapes) < 15_500_000
    assert cases.gpt2_shapes(width=768)[0] == (50257, 768)


@pytest.mark.parametrize(
    "name,expected",
    [("SGD", 12), ("momentum", 20), ("RMSprop", 20), ("RMSprop+momentum", 28), ("Adam", 28),
     ("NAdam", 28), ("AdamW-8bit", 12 + 2 * 2 * (1 + 4 / 256))],
)  # fmt: skip
def test_bytes_per_param_follow_the_state_layout(name, expected):
    # DESIGN.md: param r+w and grad r = 12 B; each fp32 state tensor r+w 8 B; 8-bit state
    # 1 B per element and a 4 B absmax per 256, read and written
    assert cases.OPTIMIZERS[name].bytes_per_param == pytest.approx(expected)


def test_a_row_can_carry_its_own_constructor_kwargs_and_no_torch_twin():
    case = cases.Case("Adam", dict(lr=1e-3), 2, "bf16", dict(foreach=True), in_torch=False)
    assert case.bytes_per_param == 12 + 2 * 2 * 2
    param = torch.zeros(3, requires_grad=True)
    makers = cases._makers(case, [param], with_others=True)
    assert list(makers) == ["optimlab"]  # torch has no equivalent: nothing else to time
    assert makers["optimlab"]().param_groups[0]["foreach"] is True


class FakeClock:
    """Every call takes ``seconds[name]``; records the order of the calls."""

    device = torch.device("cpu")

    def __init__(self, seconds=None):
        self.seconds, self.order = seconds or {}, []

    def time(self, fn):
        fn()
        self.order.append(getattr(fn, "name", None))
        return self.seconds.get(self.order[-1], 1.0)


def _named(name):
    fn = lambda: None  # noqa: E731
    fn.name = name
    return fn


def test_measure_interleaves_with_a_rotating_order_and_takes_round_medians():
    clock = FakeClock({"a": 1.0, "b": 2.0, "c": 3.0})
    calls = {name: _named(name) for name in "abc"}
    medians = timing.measure(calls, clock, rounds=2, repeats=3)
    assert clock.order == list("abcbcacababcbcacab")
    assert medians == {"a": [1.0, 1.0], "b": [2.0, 2.0], "c": [3.0, 3.0]}


def _rounds(add_seconds, ours, theirs):
    return {"add_": add_seconds, "optimlab": ours, "torch fused": theirs,
            "torch foreach": [10 * t for t in theirs]}  # fmt: skip


def test_summarize_takes_ratios_per_round_against_the_fastest_other():
    per_round = _rounds([0.01, 0.01, 0.01], ours=[1.0, 2.0, 4.0], theirs=[2.0, 3.0, 4.0])
    bandwidth = timing.Stream.BYTES / 0.01
    row = timing.summarize(per_round, bytes_moved=0.5 * bandwidth)  # the limit: 0.5 s
    assert row["best_other"] == "torch fused"
    assert row["speedup_vs_best"] == pytest.approx(1.5)  # median of 2, 1.5, 1
    assert row["speedup_range"] == pytest.approx([1.0, 2.0])
    assert row["seconds"]["optimlab"] == 2.0 and row["limit_seconds"] == pytest.approx(0.5)
    assert row["share_of_limit"] == pytest.approx(0.25)  # median of 0.5, 0.25, 0.125
    assert row["bandwidth_gbs"] == pytest.approx(bandwidth / 1e9)
    assert row["bandwidth_spread"] == pytest.approx(1.0) and table.untrusted(row) is None


@pytest.mark.parametrize(
    "add_seconds,limit,cell,note",
    [([0.01, 0.02, 0.01], 0.5, "— (loaded)",
      "— (loaded), 1 of 1 rows: the add_ bandwidth swung more than 1.5x between rounds"),
     ([0.01, 0.01, 0.01], 3.0, "— (>100 %)",
      "— (>100 %), 1 of 1 rows: optimlab's step moved its bytes faster than the add_ did")],
)  # fmt: skip
def test_a_share_that_is_not_a_measurement_is_not_printed(add_seconds, limit, cell, note):
    per_round = _rounds(add_seconds, ours=[2.0, 2.0, 2.0], theirs=[3.0, 3.0, 3.0])
    bytes_moved = limit * timing.Stream.BYTES / 0.01  # the limit in seconds at 0.01 s per add_
    row = timing.summarize(per_round, bytes_moved)
    row.update(optimizer="Adam", layout="small", missing={}, allocated_bytes_per_step=0)
    meta = dict(torch="x", device="cpu", kernels="k", load=0.1, cpus=2, rounds=3, repeats=3)
    text = table.render(meta, [row])
    assert f"| Adam | small | 2000.00 | — | 30000.00 | 3000.00 | 1.50x | {cell} |" in text
    assert note in text
    assert "%" not in text.split(cell)[1].split("\n")[0]  # no number printed for the share
    assert "busy" not in text
    meta["load"] = 3.5
    assert "busy when the run started (load average 3.5, 2 CPUs)" in table.render(meta, [row])


def test_estimate_counts_each_step_the_run_will_take():
    clock = FakeClock()  # every step and every add_ takes 1 s
    settings = dict(rounds=2, repeats=3, warmup=2)
    plan = [("small", ["SGD"])]
    seconds = bench.estimate(plan, clock, timing.Stream(clock.device), settings, False)
    # 6 add_; optimlab: 2 warmup + 6 timed + 1 counted for allocations
    steps = 6 + (2 + 6 + 1)
    assert steps <= seconds < steps + 10  # + making the params, in real time


SLOW_ARGV = ["bench", "--optimizers", "SGD,Adam", "--layouts", "small", "--quick",
             "--rounds", "2", "--repeats", "2", "--threads", "1"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason=cpu_kernels.UNAVAILABLE)
def test_bench_json_and_table(capsys):
    # one thread: torch's per-tensor parallel regions crawl when another process holds a core
    threads = torch.get_num_threads()
    assert cli.main([*SLOW_ARGV, "--json"]) == 0
    assert torch.get_num_threads() == threads  # restored
    captured = capsys.readouterr()
    assert re.search(r"2 rows, 2 rounds of 2 steps: about \d+ s more", captured.err)
    out = json.loads(captured.out)
    meta, rows = out["meta"], out["rows"]
    assert meta["threads"] == 1 and meta["kernels"] and meta["estimated_seconds"] > 0
    assert (meta["rounds"], meta["repeats"], meta["warmup"]) == (2, 2, 1)  # --quick's warmup
    assert [(r["optimizer"], r["layout"]) for r in rows] == [("SGD", "small"), ("Adam", "small")]
    for row in rows:
        assert row["params"] == 1000 * 1024 and row["tensors"] == 1000
        assert {"optimlab", "torch for-loop", "torch foreach"} <= row["seconds"].keys()
        assert all(len(times) == 2 for times in row["seconds_per_round"].values())
        low, high = row["speedup_range"]
        assert 0 < low <= row["speedup_vs_best"] <= high
        assert row["allocated_bytes_per_step"] == 0  # once state exists, nothing
        assert row["share_of_limit"] > 0 and row["bandwidth_spread"] >= 1
        assert row["missing"] == {}
        assert row["bytes_per_param"] == {"SGD": 12, "Adam": 28}[row["optimizer"]]
    assert cli.main(SLOW_ARGV) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("optimlab bench: torch ") and lines[1] == ""
    assert lines[2] == ("| optimizer | layout | optimlab ms | torch for-loop | torch foreach "
                        "| torch fused | vs fastest other | of bw limit | add_ GB/s |")  # fmt: skip
    cell = r"(\d+\.\d\d|—)"
    speedup = r"\d+\.\d\dx( \(\d+\.\d\d–\d+\.\d\d\))?"
    share = r"(\d+ %|— \(loaded\)|— \(>100 %\))"
    for line, name in zip(lines[4:6], ["SGD", "Adam"], strict=True):
        assert re.fullmatch(
            rf"\| {name} \| small( \| {cell}){{4}} \| {speedup} \| {share} \| \d+\.\d \|", line
        ), line
    assert "Bytes allocated by one step after the first, optimlab: 0 B (2 of 2 rows)." in lines


NO_KERNEL = cases.Case("Adam", {}, 2, ours=dict(no_such_option=True), in_torch=False)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--optimizers", "Adamax"], "argument --optimizers: unknown 'Adamax'; choose from SGD,"),
        (["--optimizers", ","], "argument --optimizers: no names in ','"),
        (["--layouts", "huge"], "argument --layouts: unknown 'huge'; choose from large,"),
        (["--repeats", "0"], "argument --repeats: expected an integer from 1 to 1000, got '0'"),
        (["--repeats", "2.5"], "argument --repeats: expected an integer from 1 to 1000"),
        (["--repeats", "many"], "argument --repeats: expected an integer from 1 to 1000"),
        (["--rounds", "-1"], "argument --rounds: expected an integer from 1 to 100, got '-1'"),
        (["--warmup", "0"], "argument --warmup: expected an integer from 1 to 100, got '0'"),
        (["--threads", "0"], "argument --threads: expected an integer from 1 to"),
        (["--threads", "100000"], "argument --threads: expected an integer from 1 to"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--repeats"], "argument --repeats: expected one argument"),
        (["--quick=yes"], "argument --quick: ignored explicit argument 'yes'"),
        (["Adam"], "unrecognized arguments: Adam"),
        (["--optimizers", "broken", "--layouts", "small"],
         "broken has nothing to time here (optimlab: TypeError:"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line_and_exit_2(capsys, monkeypatch, argv, message):
    monkeypatch.setitem(cases.OPTIMIZERS, "broken", NO_KERNEL)
    try:
        code = cli.main(["bench", *argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("optimlab bench: error: "), err
    assert message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: it would run")
def test_device_cuda_without_a_gpu_is_one_error_line():
    proc = subprocess.run([sys.executable, "-m", "optimlab", "bench", "--device", "cuda"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("optimlab bench: error: no CUDA device")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
