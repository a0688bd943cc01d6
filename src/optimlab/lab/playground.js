// The report's playground: the lab's 2-D functions and the lecture's optimizers, in the browser.
//
// The updates are a transcription of optimlab's reference implementations
// (optimlab/optimizers/*.py, torch's order of operations) in float64, so a path
// drawn here is the path optimlab takes: tests/test_lab_playground.py runs this
// file in headless Chromium and compares its trajectories with optimlab's.
// Data (bounds, starts, minima, learning rates) comes from the report as JSON in
// the element #playground-data; nothing is fetched.
"use strict";

const Playground = (() => {
  const PI = Math.PI;

  // f and its gradient, as in optimlab/lab/problems/functions2d.py
  const FUNCTIONS = {
    rosenbrock: {
      f: (x, y) => (1 - x) ** 2 + 100 * (y - x ** 2) ** 2,
      g: (x, y) => [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)],
    },
    beale: {
      f: (x, y) =>
        (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2,
      g: (x, y) => {
        const a = 1.5 - x + x * y, b = 2.25 - x + x * y * y, c = 2.625 - x + x * y ** 3;
        return [
          2 * a * (y - 1) + 2 * b * (y * y - 1) + 2 * c * (y ** 3 - 1),
          2 * a * x + 4 * b * x * y + 6 * c * x * y * y,
        ];
      },
    },
    saddle: {
      f: (x, y) => x ** 2 + y ** 4 / 4 - y ** 2 / 2,
      g: (x, y) => [2 * x, y ** 3 - y],
    },
    ill_conditioned: {
      f: (x, y) => (x ** 2 + 50 * y ** 2) / 2,
      g: (x, y) => [x, 50 * y],
    },
    rastrigin: {
      f: (x, y) =>
        20 + x ** 2 - 10 * Math.cos(2 * PI * x) + y ** 2 - 10 * Math.cos(2 * PI * y),
      g: (x, y) => [2 * x + 20 * PI * Math.sin(2 * PI * x), 2 * y + 20 * PI * Math.sin(2 * PI * y)],
    },
  };

  // --- the optimizers: one update per optimizer, elementwise over the two weights --------

  function sgd(w, g, s, h) {
    // optimlab.SGD: torch's buffer b = mu b + g, w -= lr (g + mu b | b); or the lecture's
    // velocity v = beta v - lr g, w += v.  The look-ahead form got g at w + offset (step()).
    const mu = h.momentum, lr = h.lr, plain = h.nesterov_form === "lookahead";
    for (let i = 0; i < w.length; i++) {
      let gi = g[i];
      if (mu !== 0 && h.momentum_form === "lecture") {
        s.v[i] = s.v[i] * mu + gi * -lr;
        if (h.nesterov && !plain) w[i] = w[i] + s.v[i] * mu + gi * -lr;
        else w[i] = w[i] + s.v[i];
        continue;
      }
      if (mu !== 0) {
        s.b[i] = s.t === 0 ? gi : s.b[i] * mu + gi * (1 - h.dampening);
        gi = h.nesterov && !plain ? gi + s.b[i] * mu : s.b[i];
      }
      w[i] = w[i] + gi * -lr;
    }
  }

  function adagrad(w, g, s, h) {
    // optimlab.Adagrad: sum += g^2; w -= lr g / (sqrt(sum) + eps)  [inside: sqrt(sum + eps)]
    for (let i = 0; i < w.length; i++) {
      s.sum[i] = s.sum[i] + g[i] * g[i];
      const std = h.eps_inside ? Math.sqrt(s.sum[i] + h.eps) : Math.sqrt(s.sum[i]) + h.eps;
      w[i] = w[i] + -h.lr * (g[i] / std);
    }
  }

  function rmsprop(w, g, s, h) {
    // optimlab.RMSprop: avg = alpha avg + (1 - alpha) g^2; w -= lr g / (sqrt(avg) + eps)
    for (let i = 0; i < w.length; i++) {
      s.avg[i] = s.avg[i] * h.alpha + (1 - h.alpha) * (g[i] * g[i]);
      const std = h.eps_inside ? Math.sqrt(s.avg[i] + h.eps) : Math.sqrt(s.avg[i]) + h.eps;
      w[i] = w[i] + -h.lr * (g[i] / std);
    }
  }

  function lerp(a, b, weight) {
    // torch.lerp, as ATen computes it (the two branches keep it exact at both ends)
    return weight < 0.5 ? a + weight * (b - a) : b - (b - a) * (1 - weight);
  }

  function adam(w, g, s, h) {
    // optimlab.Adam: m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
    // w -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), bc = 1 - b^t (1 without correction)
    const t = s.t + 1;
    const bc1 = h.bias_correction ? 1 - h.beta1 ** t : 1;
    const bc2 = h.bias_correction ? 1 - h.beta2 ** t : 1;
    const stepSize = h.lr / bc1;
    for (let i = 0; i < w.length; i++) {
      s.m[i] = lerp(s.m[i], g[i], 1 - h.beta1);
      s.v[i] = s.v[i] * h.beta2 + (1 - h.beta2) * (g[i] * g[i]);
      const denom = Math.sqrt(s.v[i]) / Math.sqrt(bc2) + h.eps;
      w[i] = w[i] + -stepSize * (s.m[i] / denom);
    }
  }

  const UPDATES = { sgd, adagrad, rmsprop, adam };
  const DEFAULTS = {
    sgd: { lr: 0.01, momentum: 0, dampening: 0, nesterov: false,
           momentum_form: "torch", nesterov_form: "reformulated" },
    adagrad: { lr: 0.01, eps: 1e-10, eps_inside: false },
    rmsprop: { lr: 0.01, alpha: 0.99, eps: 1e-8, eps_inside: false },
    adam: { lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-8, bias_correction: true },
  };

  function lookahead(w, s, h) {
    // optimlab.SGD._lookahead_offset: where slide 4 evaluates the gradient
    if (h.nesterov_form !== "lookahead" || s.t === 0) return w.slice();
    if (h.momentum_form === "lecture") return w.map((x, i) => x + h.momentum * s.v[i]);
    return w.map((x, i) => x + -h.lr * h.momentum * s.b[i]);
  }

  // A run: {function, optimizer, start: [x, y], steps, noise?, seed?, ...hyperparameters}.
  // Returns the points (steps + 1 of them) and f at each.
  function run(spec) {
    const fn = FUNCTIONS[spec.function];
    const h = { ...DEFAULTS[spec.optimizer], ...spec };
    const update = UPDATES[spec.optimizer];
    const zeros = () => [0, 0];
    const s = { t: 0, b: zeros(), v: zeros(), sum: zeros(), avg: zeros(), m: zeros() };
    const w = spec.start.slice();
    const path = [w.slice()], loss = [fn.f(w[0], w[1])];
    const noise = gaussian(spec.seed || 1);
    for (let step = 0; step < spec.steps; step++) {
      const at = spec.optimizer === "sgd" ? lookahead(w, s, h) : w;
      const g = fn.g(at[0], at[1]);
      if (spec.noise) for (let i = 0; i < 2; i++) g[i] += spec.noise * noise();
      update(w, g, s, h);
      s.t += 1;
      if (!w.every(Number.isFinite) || Math.abs(w[0]) + Math.abs(w[1]) > 1e12) break;
      path.push(w.slice());
      loss.push(fn.f(w[0], w[1]));
    }
    return { path, loss };
  }

  function gaussian(seed) {
    // mulberry32 + Box-Muller: reproducible noise in the browser (not torch's stream)
    let a = seed >>> 0;
    const uniform = () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * PI * uniform());
  }

  // --- drawing ----------------------------------------------------------------------------

  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

  function drawContours(canvas, name, info) {
    // filled bands of log(f - min), three per decade, with a darker edge between bands
    const ctx = canvas.getContext("2d");
    const [x0, x1, y0, y1] = info.bounds;
    const step = 2, nx = Math.ceil(canvas.width / step), ny = Math.ceil(canvas.height / step);
    const fn = FUNCTIONS[name].f;
    const values = new Float64Array(nx * ny);
    let lo = Infinity;
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++) {
        const v = fn(x0 + ((x1 - x0) * (i + 0.5)) / nx, y1 - ((y1 - y0) * (j + 0.5)) / ny);
        values[j * nx + i] = v;
        lo = Math.min(lo, v);
      }
    }
    const level = values.map((v) => Math.floor(3 * Math.log10(v - lo + 1e-3)));
    const top = Math.max(...level), bottom = Math.min(...level);
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++) {
        const k = level[j * nx + i];
        const share = (k - bottom) / Math.max(1, top - bottom);
        const edge = (i + 1 < nx && level[j * nx + i + 1] !== k) ||
          (j + 1 < ny && level[(j + 1) * nx + i] !== k);
        const light = edge ? 62 : 93 - 14 * share;
        ctx.fillStyle = `hsl(${215 - 185 * share}, 45%, ${light}%)`;
        ctx.fillRect(i * step, j * step, step, step);
      }
    }
    for (const [mx, my] of info.minima) {
      const [px, py] = toPixel(canvas, info, mx, my);
      ctx.fillStyle = "#f2c200";
      ctx.strokeStyle = "#000";
      ctx.beginPath();
      ctx.arc(px, py, 5, 0, 2 * PI);
      ctx.fill();
      ctx.stroke();
    }
  }

  function toPixel(canvas, info, x, y) {
    const [x0, x1, y0, y1] = info.bounds;
    return [((x - x0) / (x1 - x0)) * canvas.width, ((y1 - y) / (y1 - y0)) * canvas.height];
  }

  function drawPath(canvas, info, path, upto, color) {
    const ctx = canvas.getContext("2d");
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    for (let i = 0; i < Math.min(upto, path.length); i++) {
      const [px, py] = toPixel(canvas, info, path[i][0], path[i][1]);
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
    }
    ctx.stroke();
    const [sx, sy] = toPixel(canvas, info, path[0][0], path[0][1]);
    ctx.fillStyle = "#000";
    ctx.fillRect(sx - 3, sy - 3, 6, 6);
  }

  function drawLoss(canvas, runs, optimum, upto) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height, pad = 36;
    ctx.clearRect(0, 0, W, H);
    const gaps = runs.flatMap((r) => r.loss.map((v) => Math.max(v - optimum, 1e-16)));
    const hi = Math.log10(Math.max(...gaps)), lo = Math.max(Math.log10(Math.min(...gaps)), hi - 16);
    const steps = Math.max(...runs.map((r) => r.loss.length)) - 1 || 1;
    ctx.strokeStyle = "#999";
    ctx.strokeRect(pad, 8, W - pad - 8, H - pad - 8);
    ctx.fillStyle = "#333";
    ctx.font = "11px sans-serif";
    ctx.fillText(`1e${Math.round(hi)}`, 2, 16);
    ctx.fillText(`1e${Math.round(lo)}`, 2, H - pad);
    ctx.fillText("step", W / 2, H - 6);
    ctx.fillText(`${steps}`, W - 30, H - pad + 14);
    ctx.fillText("f − f*", 2, H / 2);
    runs.forEach((r, k) => {
      ctx.strokeStyle = COLORS[k % COLORS.length];
      ctx.beginPath();
      const n = Math.min(upto, r.loss.length);
      for (let i = 0; i < n; i++) {
        const v = Math.log10(Math.max(r.loss[i] - optimum, 1e-16));
        const px = pad + ((W - pad - 8) * i) / steps;
        const py = 8 + ((H - pad - 16) * (hi - v)) / (hi - lo || 1);
        if (i === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      }
      ctx.stroke();
    });
  }

  // --- the page -----------------------------------------------------------------------------

  function mount(root, data) {
    const $ = (name) => root.querySelector(`[name="${name}"]`);
    const contour = root.querySelector("canvas.contour");
    const lossCanvas = root.querySelector("canvas.loss");
    const status = root.querySelector(".status");
    let start = null, runs = [], frame = null;

    function read() {
      const name = $("function").value;
      const optimizer = $("optimizer").value;
      const spec = {
        function: name,
        optimizer: { sgd: "sgd", momentum: "sgd", nesterov: "sgd" }[optimizer] || optimizer,
        start: start || data.functions[name].start,
        steps: Number($("steps").value),
        lr: Number($("lr").value),
        noise: Number($("noise").value),
        seed: runs.length + 1,
      };
      if (optimizer !== "sgd" && spec.optimizer === "sgd") {
        spec.momentum = Number($("beta").value);
        spec.nesterov = optimizer === "nesterov";
        spec.momentum_form = $("velocity").checked ? "lecture" : "torch";
        spec.nesterov_form = $("lookahead").checked && spec.nesterov ? "lookahead" : "reformulated";
      }
      if (spec.optimizer === "rmsprop") spec.alpha = Number($("alpha").value);
      if (spec.optimizer === "adam") {
        spec.beta1 = Number($("beta1").value);
        spec.beta2 = Number($("beta2").value);
        spec.bias_correction = $("bias").checked;
      }
      if (spec.optimizer === "adagrad" || spec.optimizer === "rmsprop" || spec.optimizer === "adam")
        spec.eps = Number($("eps").value);
      if (spec.optimizer === "adagrad" || spec.optimizer === "rmsprop")
        spec.eps_inside = $("inside").checked;
      return spec;
    }

    function redraw(upto) {
      const name = $("function").value, info = data.functions[name];
      drawContours(contour, name, info);
      runs.forEach((r, k) => drawPath(contour, info, r.path, k === runs.length - 1 ? upto : 1e9,
                                      COLORS[k % COLORS.length]));
      drawLoss(lossCanvas, runs, info.optimum, upto);
    }

    function go() {
      const spec = read();
      if (!(spec.lr > 0) || !(spec.steps > 0)) {
        status.textContent = "lr and steps must be positive numbers";
        return;
      }
      runs = [...runs.slice(-(COLORS.length - 1)), run(spec)];
      const last = runs[runs.length - 1];
      const f = last.loss[last.loss.length - 1];
      status.textContent =
        `${last.path.length - 1} steps` +
        (last.path.length - 1 < spec.steps ? " (diverged: stopped)" : "") +
        `; final f − f* = ${(f - data.functions[spec.function].optimum).toExponential(2)}`;
      cancelAnimationFrame(frame);
      let upto = 1;
      const tick = () => {
        upto += Math.max(1, Math.ceil(last.path.length / 90));
        redraw(upto);
        if (upto < last.path.length) frame = requestAnimationFrame(tick);
      };
      tick();
    }

    function sync() {
      const optimizer = $("optimizer").value;
      const family = { sgd: "sgd", momentum: "momentum", nesterov: "momentum" }[optimizer] ||
        optimizer;
      const name = $("function").value;
      $("lr").value = data.functions[name].lr[family];
      for (const el of root.querySelectorAll("[data-for]"))
        el.style.display = el.dataset.for.split(" ").includes(optimizer) ? "" : "none";
      const eps = { adagrad: 1e-10, rmsprop: 1e-8, adam: 1e-8 }[optimizer];
      if (eps) $("eps").value = eps;
    }

    contour.addEventListener("click", (event) => {
      const rect = contour.getBoundingClientRect();
      const info = data.functions[$("function").value];
      const [x0, x1, y0, y1] = info.bounds;
      const px = ((event.clientX - rect.left) / rect.width) * contour.width;
      const py = ((event.clientY - rect.top) / rect.height) * contour.height;
      start = [x0 + ((x1 - x0) * px) / contour.width, y1 - ((y1 - y0) * py) / contour.height];
      go();
    });
    $("function").addEventListener("change", () => { start = null; runs = []; sync(); go(); });
    $("optimizer").addEventListener("change", () => { sync(); go(); });
    root.querySelector("button.run").addEventListener("click", go);
    root.querySelector("button.clear").addEventListener("click", () => { runs = []; go(); });
    sync();
    go();
  }

  return { FUNCTIONS, run, mount };
})();

// The test hook: #selftest=<JSON list of runs> writes their paths into #selftest-result.
(function () {
  const hash = decodeURIComponent(location.hash || "");
  if (hash.startsWith("#selftest=")) {
    const specs = JSON.parse(hash.slice("#selftest=".length));
    const out = document.createElement("pre");
    out.id = "selftest-result";
    out.textContent = JSON.stringify(specs.map((s) => Playground.run(s).path));
    document.body.appendChild(out);
  }
  const data = document.getElementById("playground-data");
  const root = document.getElementById("playground");
  if (data && root) Playground.mount(root, JSON.parse(data.textContent));
})();
