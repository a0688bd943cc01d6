"""The report's interactive playground: an HTML fragment with its data and script inlined.

The script (``playground.js`` beside this file) transcribes optimlab's updates;
the data — each 2-D function's box, start, minima, optimum and lr guesses — is
written here from the problems themselves, so the page and the lab agree.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from .problems import functions2d, get

__all__ = ["fragment", "page", "script"]

_CONTROLS = """
<div id="playground" class="playground">
 <div class="pg-controls">
  <label>function <select name="function">{functions}</select></label>
  <label>optimizer <select name="optimizer">
   <option value="sgd">SGD</option><option value="momentum">SGD + momentum</option>
   <option value="nesterov">Nesterov</option><option value="adagrad">Adagrad</option>
   <option value="rmsprop">RMSProp</option><option value="adam">Adam</option></select></label>
  <label>lr <input name="lr" type="number" step="any" min="0" value="0.01"></label>
  <label data-for="momentum nesterov">β (momentum)
   <input name="beta" type="number" step="0.01" min="0" max="0.999" value="0.9"></label>
  <label data-for="momentum nesterov"><input name="velocity" type="checkbox">
   the lecture's velocity (v = βv − lr·dw)</label>
  <label data-for="nesterov"><input name="lookahead" type="checkbox">
   gradient at the look-ahead point w + βv</label>
  <label data-for="rmsprop">decay rate <input name="alpha" type="number" step="0.01" min="0"
   max="1" value="0.99"></label>
  <label data-for="adam">β₁ <input name="beta1" type="number" step="0.01" min="0" max="0.999"
   value="0.9"></label>
  <label data-for="adam">β₂ <input name="beta2" type="number" step="0.001" min="0" max="0.9999"
   value="0.999"></label>
  <label data-for="adagrad rmsprop adam">ε <input name="eps" type="number" step="any" min="0"
   value="1e-8"></label>
  <label data-for="adagrad rmsprop"><input name="inside" type="checkbox"> ε inside the root
   (the lecture's √(s + ε))</label>
  <label data-for="adam"><input name="bias" type="checkbox" checked> bias correction</label>
  <label>steps <input name="steps" type="number" min="1" max="100000" value="200"></label>
  <label>gradient noise σ <input name="noise" type="number" step="any" min="0" value="0"></label>
  <button class="run" type="button">run</button>
  <button class="clear" type="button">clear</button>
 </div>
 <div class="pg-plots">
  <canvas class="contour" width="480" height="360" title="click: start here"></canvas>
  <canvas class="loss" width="360" height="360"></canvas>
 </div>
 <p class="status note"></p>
</div>
"""


def script() -> str:
    return resources.files(__package__).joinpath("playground.js").read_text(encoding="utf-8")


def _data() -> dict:
    functions = {}
    for name in functions2d.FUNCTIONS:
        p = get(name)
        functions[name] = {
            "bounds": list(p.bounds),
            "start": list(p.start),
            "minima": [list(m) for m in p.minima],
            "optimum": p.optimum,
            "lr": dict(p.lr_center),
        }
    return {"functions": functions}


def fragment() -> str:
    """The playground as it goes into the report: controls, canvases, data and script."""
    options = "".join(
        f'<option value="{n}"{" selected" if n == "ill_conditioned" else ""}>'
        f"{html.escape(get(n).title)}</option>"
        for n in functions2d.FUNCTIONS
    )
    data = json.dumps(_data()).replace("</", "<\\/")
    return (
        _CONTROLS.format(functions=options)
        + f'<script type="application/json" id="playground-data">{data}</script>'
        + f"<script>{script()}</script>"
    )


def page() -> str:
    """A page with only the playground (what the browser test loads)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>optimlab playground</title>"
        f"</head><body>{fragment()}</body></html>"
    )
