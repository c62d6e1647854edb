"""Steady state: the part of a run where the pipeline is pressed, away from fill and drain.

An offline run starts by filling the device (all requests there at t = 0) and ends by
draining it (the last requests finish alone, a token a cycle). Whole-run throughput mixes
both in; with few requests the drain dominates. The steady window is

    start   the first turn out of the last stage decided after a tenth of the requests had
            finished: the fill is over and the lengths in flight are mixed
    end     the last turn decided while some request still wanted a row and had none
            (queued for admission, or parked on host): after it the pipeline drains

    t   0 ........ start ======== steady ======== end ........ makespan
        fill (prefill burst)                           drain (the tail)

Figures over the window: output tokens a second, rows and context tokens a decode turn,
the H2D links' busy fraction. A run whose window is empty (nothing ever pressed, or too
few requests) has none: `steady_state` returns None.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

START_FINISHED = 0.1


class Steady(NamedTuple):
    start_s: float
    end_s: float
    tok_s: float              # output tokens a second (this replica)
    rows: float               # rows a decode turn
    ctx_per_turn: float       # context tokens a decode turn (sum over its rows)
    mean_context: float       # context tokens a decode row
    link_util: float          # H2D busy / (links x window)
    frac: float               # window / makespan


def steady_state(series: dict, h2d_intervals, requests: int, makespan_s: float) -> Steady | None:
    end = series["end"]
    if end.size == 0:
        return None
    started = np.flatnonzero(series["finished"] >= START_FINISHED * requests)
    pressed = np.flatnonzero(series["pressed"])
    if started.size == 0 or pressed.size == 0:
        return None
    t0, t1 = float(end[started[0]]), float(end[pressed[-1]])
    if t1 <= t0:
        return None
    inside = (end > t0) & (end <= t1)
    dec = inside & series["decode"]
    if not dec.any():
        return None
    rows = series["rows"][dec].astype(np.float64)
    ctx = series["ctx"][dec].astype(np.float64)
    busy = 0.0
    for link in h2d_intervals:
        if link:
            iv = np.asarray(link, dtype=np.float64)                 # [n, 2] (start, end)
            busy += float(np.clip(np.minimum(iv[:, 1], t1) - np.maximum(iv[:, 0], t0), 0.0, None).sum())
    span = t1 - t0
    return Steady(t0, t1, float(series["tokens"][inside].sum()) / span, float(rows.mean()),
                  float(ctx.mean()), float(ctx.sum() / rows.sum()),
                  busy / (max(1, len(h2d_intervals)) * span), span / max(makespan_s, 1e-12))
