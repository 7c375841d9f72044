"""The quickstart's outputs: the text summary (with a loss sparkline) and the one-page HTML
report (stage table, the loss curve, samples, dedup examples side by side). The page is one
self-contained file: the loss curve is a PNG (matplotlib) embedded as a data URI, or an inline
SVG without matplotlib; it loads nothing else, so it opens anywhere, offline."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["entropy_ratio", "html_report", "loss_png", "loss_svg", "sparkline", "summary_text"]

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """``values`` as a row of block characters (averaged down to ``width`` columns)."""
    vals = [float(v) for v in values if math.isfinite(float(v))]
    if not vals:
        return ""
    if len(vals) > width:
        step = len(vals) / width
        vals = [
            sum(vals[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
            / max(int((i + 1) * step) - int(i * step), 1)
            for i in range(width)
        ]
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_BARS[min(int((v - lo) / span * len(_BARS)), len(_BARS) - 1)] for v in vals)


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _stage_rows(
    results: Mapping[str, Mapping[str, Any]], reused: Mapping[str, bool]
) -> list[tuple[str, str, str]]:
    rows = []
    for name, res in results.items():
        state = "skipped" if "skipped" in res else ("reused" if reused.get(name) else "ran")
        rows.append((name, f"{res.get('seconds', 0.0):.1f}", state))
    return rows


def summary_text(
    results: Mapping[str, Mapping[str, Any]], reused: Mapping[str, bool], out: Path
) -> str:
    """The summary printed at the end of the run."""
    lines = ["", "== codegen-core quickstart summary", ""]
    lines.append(f"{'stage':<10} {'seconds':>8}  state")
    for name, secs, state in _stage_rows(results, reused):
        lines.append(f"{name:<10} {secs:>8}  {state}")
    d = results.get("data")
    if d:
        dropped = ", ".join(f"{k} {v}" for k, v in d["dropped"].items()) or "none"
        lines += [
            "",
            f"corpus            {', '.join(d['corpus'])}",
            f"files seen        {d['documents_seen']}",
            f"dropped (why)     {dropped}",
            f"exact duplicates  {d['exact_duplicates']}",
            f"near duplicates   {d['near_duplicates']} in {d['near_clusters']} clusters",
            (
                f"files kept        {d['kept']} -> {d['train_files']} train, "
                f"{d['heldout_files']} held out"
            ),
            (
                f"tokens            {d['train_tokens']} train, {d['heldout_tokens']} held out "
                f"({d['tokenizer']} tokenizer, sequences of {d['seq_len']})"
            ),
        ]
    t = results.get("train")
    if t:
        losses = [v for _, v in t["losses"]]
        lines += [
            "",
            f"training          {t['steps']} steps (resumed from step {t['resumed_from']})"
            if t["resumed_from"]
            else f"training          {t['steps']} steps",
            f"train loss        {sparkline(losses)}  {_fmt(losses[0])} -> {_fmt(losses[-1])}"
            if losses
            else "train loss        (none)",
        ]
        if t.get("heldout_loss") is not None and d:
            ratio = entropy_ratio(t, d)
            lines.append(
                f"held-out loss     {t['heldout_loss']:.3f} nats/token vs unigram entropy "
                f"{d['unigram_entropy']:.3f} (ratio {ratio:.2f})"
                + (f", {t['heldout_bpb']:.3f} bits/byte" if t.get("heldout_bpb") else "")
            )
    s = results.get("sample")
    if s:
        lines += ["", "samples (greedy):"]
        for row in s["samples"]:
            lines.append(_indent(row["prompt"] + row["completion"]))
            lines.append("    ---")
        inf = s["infill"]
        lines += ["infill (<mask_1> = the middle):",
                  _indent(inf["prefix"] + "<<" + inf["middle"] + ">>" + inf["suffix"])]  # fmt: skip
        lines.append("multi-turn session (each turn's prompt, then the model's reply):")
        for turn in s["session"]:
            lines.append(_indent(turn["user"].strip("\n") + "\n" + turn["model"]))
    for name in ("humaneval", "mtpb"):
        r = results.get(name)
        if not r:
            continue
        if "skipped" in r:
            lines.append(f"{name:<17} {r['skipped']}")
            continue
        ref = (f", reference solutions {r['reference_passed']}/{r['total']}"
               if "reference_passed" in r else "")  # fmt: skip
        lines.append(f"{name:<17} model passes {r['model_passed']}/{r['total']}{ref} "
                     f"({r['source']})")  # fmt: skip
    lines += ["", f"report            {out / 'report.html'}", ""]
    return "\n".join(lines)


def entropy_ratio(train: Mapping[str, Any], data: Mapping[str, Any]) -> float:
    """Held-out loss / the held-out data's unigram entropy (0 when either is missing)."""
    loss, entropy = train.get("heldout_loss"), data.get("unigram_entropy")
    return float(loss) / float(entropy) if loss is not None and entropy else 0.0


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def loss_svg(
    series: Mapping[str, Sequence[tuple[int, float]]],
    width: int = 640,
    height: int = 240,
    entropy: float | None = None,
) -> str:
    """Loss curves as an inline SVG (no matplotlib needed); ``entropy`` draws the unigram
    entropy as a dashed line."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if entropy is not None:
        y0, y1 = min(y0, entropy), max(y1, entropy)
    xs, ys = (x1 - x0) or 1, (y1 - y0) or 1.0
    pad = 40
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" id="loss-curve" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">'
        ),
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        (
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" '
            f'stroke="black"/>'
        ),
        f'<line x1="{pad}" y1="10" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{pad}" y="{height - 12}" font-size="11">step {x0}</text>',
        f'<text x="{width - 80}" y="{height - 12}" font-size="11">step {x1}</text>',
        f'<text x="2" y="18" font-size="11">{y1:.2f}</text>',
        f'<text x="2" y="{height - pad}" font-size="11">{y0:.2f}</text>',
    ]
    for i, (name, s) in enumerate(series.items()):
        coords = " ".join(
            f"{pad + (x - x0) / xs * (width - pad - 10):.1f},"
            f"{10 + (1 - (y - y0) / ys) * (height - pad - 10):.1f}"
            for x, y in s
        )
        color = colors[i % len(colors)]
        if len(s) == 1:
            cx, cy = coords.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="{color}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{color}" points="{coords}"/>')
        parts.append(f'<text x="{width - 150}" y="{20 + 14 * i}" font-size="11" '
                     f'fill="{color}">{html.escape(name)}</text>')  # fmt: skip
    if entropy is not None:
        ey = 10 + (1 - (entropy - y0) / ys) * (height - pad - 10)
        parts.append(f'<line x1="{pad}" y1="{ey:.1f}" x2="{width - 10}" y2="{ey:.1f}" '
                     f'stroke="gray" stroke-dasharray="6,4"/>')  # fmt: skip
        parts.append(f'<text x="{pad + 4}" y="{ey - 4:.1f}" font-size="11" fill="gray">'
                     f"unigram entropy {entropy:.2f}</text>")  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)


def loss_png(
    path: Path,
    train: Sequence[tuple[int, float]],
    held: Sequence[tuple[int, float]],
    entropy: float | None = None,
) -> Path | None:
    """``path``: the train loss (raw and a running mean), the held-out loss and the unigram
    entropy line, as a PNG; None (nothing written) without matplotlib or points."""
    try:
        import matplotlib  # noqa: PLC0415 - optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    if not train and not held:
        return None
    fig, axis = plt.subplots(figsize=(8, 3.6))
    if train:
        xs, ys = zip(*train, strict=True)
        axis.plot(xs, ys, color="#1f77b4", alpha=0.35 if len(ys) >= 40 else 1.0, linewidth=0.8,
                  label="train loss")  # fmt: skip
        k = len(ys) // 20
        if k > 1:
            mean = [sum(ys[max(0, i - k + 1) : i + 1]) / (i + 1 - max(0, i - k + 1))
                    for i in range(len(ys))]  # fmt: skip
            axis.plot(xs, mean, color="#1f77b4", linewidth=1.6, label=f"train loss (mean of {k})")
    if held:
        axis.plot(*zip(*held, strict=True), "o-", color="#d62728", label="held-out loss")
    if entropy:
        axis.axhline(entropy, color="gray", linestyle="--", linewidth=1,
                     label=f"held-out unigram entropy {entropy:.2f}")  # fmt: skip
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats / token)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _pre(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<pre{attr}>{html.escape(text)}</pre>"


def _html_stages(results: Mapping[str, Mapping[str, Any]], reused: Mapping[str, bool]) -> list[str]:
    e = html.escape
    body = ['<div class="col"><h2>Stages</h2>',
            '<table id="stages"><tr><th>stage</th><th>seconds</th><th>state</th></tr>']  # fmt: skip
    for name, secs, state in _stage_rows(results, reused):
        body.append(f"<tr><td>{e(name)}</td><td>{secs}</td><td>{e(state)}</td></tr>")
    body.append("</table></div>")
    return body


def _html_data(d: Mapping[str, Any]) -> list[str]:
    e = html.escape
    rows = [("files seen", d["documents_seen"]),
            ("dropped by filters", ", ".join(f"{k}: {v}" for k, v in d["dropped"].items())),
            ("exact duplicates", d["exact_duplicates"]),
            ("near duplicates", f"{d['near_duplicates']} in {d['near_clusters']} clusters"),
            ("files kept", d["kept"]),
            ("train / held-out files", f"{d['train_files']} / {d['heldout_files']}"),
            ("train / held-out tokens", f"{d['train_tokens']} / {d['heldout_tokens']}"),
            ("held-out unigram entropy", f"{d['unigram_entropy']:.3f} nats/token")]  # fmt: skip
    return ['<div class="col"><h2>Data</h2><table id="data">',
            *(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in rows),
            "</table></div>"]  # fmt: skip


def _html_loss(t: Mapping[str, Any], d: Mapping[str, Any] | None, out: Path) -> list[str]:
    entropy = d["unigram_entropy"] if d else None
    body = ["<h2>Loss curve</h2>"]
    if t.get("heldout_loss") is not None and d:
        body.append(f'<p id="headline">Held-out loss <b>{t["heldout_loss"]:.3f}</b> nats/token '
                    f"after {t['steps']} steps against the held-out data's unigram entropy "
                    f"{d['unigram_entropy']:.3f}: ratio <b>{entropy_ratio(t, d):.2f}</b>.</p>")  # fmt: skip
    png = loss_png(out / "loss.png", t["losses"], t["eval_losses"], entropy)
    if png is not None:  # embedded: the page stays one file that loads nothing
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        body.append(f'<p><img id="loss-curve" src="data:image/png;base64,{data}" '
                    f'alt="training and held-out loss by step" width="720"></p>')  # fmt: skip
    else:
        body.append(loss_svg({"train loss": t["losses"], "held-out loss": t["eval_losses"]},
                             entropy=entropy))  # fmt: skip
    body.append(f"<p>Re-run the training by hand:</p>{_pre(t['command'])}")
    return body


def _html_samples(s: Mapping[str, Any]) -> list[str]:
    inf = s["infill"]
    return ['<h2 id="samples">Samples (greedy)</h2>',
            *(_pre(r["prompt"] + r["completion"], "sample") for r in s["samples"]),
            "<h3>Infill (the middle between &lt;&lt; and &gt;&gt;)</h3>",
            _pre(inf["prefix"] + "<<" + inf["middle"] + ">>" + inf["suffix"], "infill"),
            "<h3>Multi-turn session</h3>",
            *(_pre(turn["user"] + turn["model"], "turn") for turn in s["session"])]  # fmt: skip


def _html_eval(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    e = html.escape
    body = ['<h2>Evaluation (sandbox)</h2><ul id="evaluation">']
    for name in ("humaneval", "mtpb"):
        r = results.get(name)
        if not r:
            continue
        if "skipped" in r:
            body.append(f"<li>{e(name)}: {e(r['skipped'])}</li>")
        else:
            ref = (f"; reference solutions {r['reference_passed']}/{r['total']}"
                   if "reference_passed" in r else "")  # fmt: skip
            body.append(f"<li>{e(name)}: model {r['model_passed']}/{r['total']}{ref} "
                        f"({e(r['source'])})</li>")  # fmt: skip
    body.append("</ul>")
    return body


def _html_dedup(examples: Sequence[Mapping[str, Any]]) -> list[str]:
    e = html.escape
    body = ['<h2 id="dedup">Dedup examples (kept file beside the removed one)</h2>']
    for ex in examples:
        body += [f"<h3>{e(ex['kind'])}</h3>", '<table class="dedup"><tr>',
                 f"<th>kept: {e(ex['kept'])}</th><th>removed: {e(ex['removed'])}</th></tr>",
                 f"<tr><td>{_pre(ex['kept_head'])}</td><td>{_pre(ex['removed_head'])}</td>",
                 "</tr></table>"]  # fmt: skip
    return body


def html_report(
    results: Mapping[str, Mapping[str, Any]], reused: Mapping[str, bool], out: Path
) -> str:
    """The one-page report, one self-contained file: stages and data side by side, the loss
    curve, samples, evaluation, dedup examples side by side. Writes ``out/loss.png`` when
    matplotlib is installed (the page embeds it)."""
    d, t, s = results.get("data"), results.get("train"), results.get("sample")
    body = ["<h1>codegen-core quickstart</h1>", '<div class="row">',
            *_html_stages(results, reused), *(_html_data(d) if d else []), "</div>"]  # fmt: skip
    if t:
        body += _html_loss(t, d, out)
    if s:
        body += _html_samples(s)
    body += _html_eval(results)
    if d and d["dedup_examples"]:
        body += _html_dedup(d["dedup_examples"])
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
             "vertical-align:top}pre{font-size:12px;margin:0 0 6px 0;white-space:pre-wrap}"
             "pre.sample,pre.infill,pre.turn{background:#f6f6f6;padding:4px}"
             "table.dedup td{width:50%}.row{display:flex;gap:32px;align-items:flex-start}")  # fmt: skip
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>codegen-core quickstart</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")  # fmt: skip
