"""The shadow stage: a candidate model proves itself on the device's own live inputs before it serves.

Between validation and activation, the candidate runs beside the active model on a sample of the inputs the
pipeline handles (``Pipeline.shadow``); its results go to no sink. ``Shadow.offer`` (on the pipeline's
thread, cheap) hands an input to one worker thread, which invokes the candidate and compares its answer with
the active model's, unless the candidate's invoke time so far is over ``budget`` times the active model's
(the CPU budget) or the worker is still busy with the previous one. Figures, over ``samples`` compared
inputs or ``seconds`` (whichever comes first, with at least ``MIN_SAMPLES``):

- agreement with the active model: top-1 agreement (classification); matched-detection F1 at IoU 0.5 with
  per-label recall (detection; the active model's objects are the reference); mean IoU of the class maps over
  the classes either model found (segmentation); mean Pearson correlation of the outputs (raw);
- the candidate's median invoke time against the active model's (``latency_ratio``);
- failures: inputs the active model answered and the candidate could not.

``passed`` when agreement >= ``min_agreement``, latency_ratio <= ``max_latency_ratio`` and no more than
``max_failure_rate`` of the samples failed. Pure bookkeeping plus one thread; the update agent decides what to
do with the verdict (``cloud_sync.update_agent``). Wire format of the policy and the figures: docs/updates.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from edge.errors import ConfigError, EdgeError

log = logging.getLogger(__name__)

MIN_SAMPLES = 10
PROGRESS_EVERY_S = 1.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")


class ShadowPolicy(NamedTuple):
    """When a candidate passes its shadow stage (see the module doc)."""

    samples: int = 200
    seconds: float | None = None
    min_agreement: float = 0.9
    max_latency_ratio: float = 2.0
    budget: float = 0.25
    max_failure_rate: float = 0.02
    give_up_s: float = 3600.0  # no verdict by then (inputs stopped): decided on what was seen, or rejected

    @classmethod
    def for_length(cls, text: str, **fields: Any) -> ShadowPolicy:
        """A checked policy from ``--shadow N|DURATION`` and other fields (None: the default)."""
        samples, seconds = parse_length(text)
        given = {k: v for k, v in fields.items() if v is not None}
        if seconds is not None:  # a duration: as many samples as the time gives
            given.update(samples=1_000_000, seconds=seconds, give_up_s=max(3 * seconds, 60.0))
        else:
            given["samples"] = samples
        try:
            return cls(**given).checked()
        except ConfigError as exc:
            raise ConfigError(f"--shadow {text}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShadowPolicy:
        """A checked policy; ``ConfigError`` naming the field and value when one is wrong."""
        unknown = set(data) - set(cls._fields)
        if unknown:
            raise ConfigError(f"shadow policy: unknown field(s) {', '.join(sorted(unknown))}")
        policy = cls(**{k: data[k] for k in cls._fields if k in data and data[k] is not None})
        return policy.checked()

    def stricter(self, other: ShadowPolicy) -> ShadowPolicy:
        """The policy that passes only what both pass: a device's own policy is a floor an offer's cannot
        lower (the offer's policy is not signed)."""
        # a time limit ends a stage early: the stricter has the longer one, and none when either has none
        seconds = None if self.seconds is None or other.seconds is None else max(self.seconds, other.seconds)
        return ShadowPolicy(
            samples=max(self.samples, other.samples),
            seconds=seconds,
            min_agreement=max(self.min_agreement, other.min_agreement),
            max_latency_ratio=min(self.max_latency_ratio, other.max_latency_ratio),
            budget=min(self.budget, other.budget),
            max_failure_rate=min(self.max_failure_rate, other.max_failure_rate),
            give_up_s=max(self.give_up_s, other.give_up_s),
        )

    def checked(self) -> ShadowPolicy:
        def number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

        problems = []
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or self.samples < MIN_SAMPLES:
            problems.append(f"samples {self.samples!r} (a whole number >= {MIN_SAMPLES})")
        if self.seconds is not None and not (number(self.seconds) and self.seconds > 0):
            problems.append(f"seconds {self.seconds!r} (more than 0)")
        if not (number(self.min_agreement) and 0 <= self.min_agreement <= 1):
            problems.append(f"min_agreement {self.min_agreement!r} (0 to 1)")
        if not (number(self.max_latency_ratio) and self.max_latency_ratio > 0):
            problems.append(f"max_latency_ratio {self.max_latency_ratio!r} (more than 0)")
        if not (number(self.budget) and 0 < self.budget <= 4):
            problems.append(f"budget {self.budget!r} (more than 0, at most 4)")
        if not (number(self.max_failure_rate) and 0 <= self.max_failure_rate <= 1):
            problems.append(f"max_failure_rate {self.max_failure_rate!r} (0 to 1)")
        if not (number(self.give_up_s) and self.give_up_s > 0):
            problems.append(f"give_up_s {self.give_up_s!r} (more than 0)")
        if problems:
            raise ConfigError("shadow policy out of range: " + "; ".join(problems))
        return self


def parse_length(text: str) -> tuple[int | None, float | None]:
    """``--shadow 200`` (samples) or ``--shadow 90s`` / ``10m`` / ``1h`` (a duration): (samples, seconds)."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value), None
    match = _DURATION.match(value)
    if match is None:
        raise ConfigError(f"--shadow {text!r}: expected a number of samples (200) or a duration (90s, 10m)")
    scale = {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    return None, float(match.group(1)) * scale


class _Totals:
    """Running sums of one shadow stage (persisted so a restart resumes where it was)."""

    __slots__ = ("samples", "agreement_sum", "failures", "tp", "fp", "fn", "label_tp", "label_fn",
                 "active_ms", "candidate_ms", "active_times", "candidate_times", "skipped", "elapsed")

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        self.samples = int(saved.get("samples", 0))
        self.agreement_sum = float(saved.get("agreement_sum", 0.0))
        self.failures = int(saved.get("failures", 0))
        self.tp, self.fp, self.fn = (int(saved.get(k, 0)) for k in ("tp", "fp", "fn"))
        self.label_tp: dict[str, int] = dict(saved.get("label_tp", {}))
        self.label_fn: dict[str, int] = dict(saved.get("label_fn", {}))
        self.active_ms = float(saved.get("active_ms", 0.0))
        self.candidate_ms = float(saved.get("candidate_ms", 0.0))
        self.active_times: list[float] = list(saved.get("active_times", []))[-500:]
        self.candidate_times: list[float] = list(saved.get("candidate_times", []))[-500:]
        self.skipped = int(saved.get("skipped", 0))
        self.elapsed = float(saved.get("elapsed", 0.0))

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Shadow:
    """One candidate's shadow stage. ``offer`` from the pipeline; ``on_progress(figures)`` about once a second
    and ``on_done(figures)`` once, from the worker thread. ``prepare(item, model)`` re-prepares an input for a
    candidate whose input differs from the active model's (``Pipeline._prepare``)."""

    def __init__(
        self,
        candidate: Any,
        policy: ShadowPolicy,
        on_done: Callable[[dict[str, Any]], None],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        prepare: Callable[[Any, Any], Any] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.candidate = candidate
        self.policy = policy
        self.on_done = on_done
        self.on_progress = on_progress
        self.prepare = prepare
        self.totals = _Totals(resume)
        self.done = False
        self._started = time.monotonic() - self.totals.elapsed
        self._last_progress = 0.0
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------- the pipeline's thread

    def offer(self, prepared: Any, active: Any, result: Any, active_ms: float, top_k: int,
              threshold: float) -> None:
        """One input the active model answered; taken when the budget and the worker allow."""
        if self.done:
            return
        totals = self.totals
        with self._lock:
            totals.active_ms += active_ms
            over_budget = totals.candidate_ms > self.policy.budget * totals.active_ms
            if over_budget or self._queue.full():
                totals.skipped += 1
                return
        try:
            self._queue.put_nowait((prepared, active, result, active_ms, top_k, threshold))
        except queue.Full:
            with self._lock:
                totals.skipped += 1

    def close(self) -> None:
        """Stop the worker (the stage ends without a verdict)."""
        self.done = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    # ---------------------------------------------------------------------- the worker

    def _work(self) -> None:
        while not self.done:
            try:
                item = self._queue.get(timeout=PROGRESS_EVERY_S)
            except queue.Empty:  # no input for a while: the clock may still end the stage
                self._report()
                continue
            if item is None:
                return
            try:
                self._compare(*item)
            except Exception:  # the stage must end with a verdict, never die quietly
                log.exception("shadow comparison failed")
                with self._lock:
                    self.totals.samples += 1
                    self.totals.failures += 1
            self._report()

    def _compare(self, prepared: Any, active: Any, result: Any, active_ms: float, top_k: int,
                 threshold: float) -> None:
        with self._lock:  # checked again here: an input may have waited in the queue while the last one ran
            if self.totals.candidate_ms > self.policy.budget * self.totals.active_ms:
                self.totals.skipped += 1
                return
        candidate = self.candidate
        tensor, geometry = prepared.tensor, prepared.geometry
        if candidate.input != active.input:
            if self.prepare is None:
                raise EdgeError("the candidate's input differs from the active model's; nothing re-prepares")
            again = self.prepare(prepared.item, candidate)
            if again.error is not None or again.tensor is None:
                raise EdgeError(again.error or "the input could not be prepared for the candidate")
            tensor, geometry = again.tensor, again.geometry
        start = time.perf_counter()
        try:
            raw = candidate.invoke(tensor)
        except EdgeError:
            with self._lock:
                self.totals.candidate_ms += (time.perf_counter() - start) * 1000
                self.totals.samples += 1
                self.totals.failures += 1
            return
        candidate_ms = (time.perf_counter() - start) * 1000
        broken = any(np.issubdtype(o.dtype, np.floating) and not np.isfinite(o).all() for o in raw)
        if broken:  # NaN or inf out: a failure, whatever the comparison would say
            with self._lock:
                self.totals.candidate_ms += candidate_ms
                self.totals.samples += 1
                self.totals.failures += 1
            return
        theirs = candidate.decode(candidate.dequantized(raw), top_k, threshold, geometry)
        score, detail = compare(result, theirs)
        if not math.isfinite(score):
            score = 0.0
        with self._lock:
            totals = self.totals
            totals.candidate_ms += candidate_ms
            totals.samples += 1
            totals.agreement_sum += score
            totals.active_times = (totals.active_times + [active_ms])[-500:]
            totals.candidate_times = (totals.candidate_times + [candidate_ms])[-500:]
            if detail is not None:
                tp, fp, fn, per_label_tp, per_label_fn = detail
                totals.tp += tp
                totals.fp += fp
                totals.fn += fn
                for label, n in per_label_tp.items():
                    totals.label_tp[label] = totals.label_tp.get(label, 0) + n
                for label, n in per_label_fn.items():
                    totals.label_fn[label] = totals.label_fn.get(label, 0) + n

    def _report(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.totals.elapsed = now - self._started
            figures = self.figures()
            finished = self._finished()
        if finished:
            self.done = True
            self.on_done(figures)
        elif self.on_progress is not None and now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.on_progress(figures)

    def _finished(self) -> bool:
        totals, policy = self.totals, self.policy
        if totals.samples >= policy.samples or totals.elapsed >= policy.give_up_s:
            return True
        timed_out = policy.seconds is not None and totals.elapsed >= policy.seconds
        return timed_out and totals.samples >= MIN_SAMPLES

    # ---------------------------------------------------------------------- figures

    def figures(self) -> dict[str, Any]:
        """The running figures, the verdict so far and the state to resume from (JSON-ready)."""
        totals, policy = self.totals, self.policy
        compared = totals.samples - totals.failures
        matched = totals.tp + totals.fp + totals.fn  # detection: F1 over every object compared
        agreement: float | None
        if matched:
            agreement = 2 * totals.tp / (2 * totals.tp + totals.fp + totals.fn)
        else:
            agreement = totals.agreement_sum / compared if compared else None
        ratio = None
        if totals.active_times and totals.candidate_times:
            active = float(np.median(totals.active_times))
            ratio = float(np.median(totals.candidate_times)) / active if active > 0 else None
        failure_rate = totals.failures / totals.samples if totals.samples else 0.0
        reasons = []
        if agreement is not None and agreement < policy.min_agreement:
            reasons.append(f"agreement {agreement:.3f} < {policy.min_agreement:g}")
        if ratio is not None and ratio > policy.max_latency_ratio:
            reasons.append(f"latency {ratio:.2f}x the active model's > {policy.max_latency_ratio:g}x")
        if failure_rate > policy.max_failure_rate:
            reasons.append(f"{totals.failures} of {totals.samples} inputs failed")
        if agreement is None and totals.samples:
            reasons.append("no input could be compared")
        if totals.samples < MIN_SAMPLES and totals.elapsed >= policy.give_up_s:
            reasons.append(f"only {totals.samples} live input(s) in {totals.elapsed:.0f} s; at least "
                           f"{MIN_SAMPLES} are needed")
        progress = min(1.0, totals.samples / policy.samples)
        if policy.seconds is not None:
            progress = max(progress, min(1.0, totals.elapsed / policy.seconds))
        figures: dict[str, Any] = {
            "policy": policy.to_json(),
            "samples": totals.samples,
            "target": policy.samples,
            "progress": round(progress, 4),
            "elapsed_s": round(totals.elapsed, 1),
            "agreement": None if agreement is None else round(agreement, 4),
            "latency_ratio": None if ratio is None else round(ratio, 3),
            "failures": totals.failures,
            "skipped": totals.skipped,
            "budget_used": round(totals.candidate_ms / totals.active_ms, 4) if totals.active_ms else 0.0,
            "passed": not reasons and totals.samples >= MIN_SAMPLES,
            "reason": "; ".join(reasons),
            "state": totals.to_json(),
        }
        if totals.label_tp or totals.label_fn:
            labels = sorted(set(totals.label_tp) | set(totals.label_fn))
            figures["recall"] = {
                label: round(totals.label_tp.get(label, 0) /
                             max(1, totals.label_tp.get(label, 0) + totals.label_fn.get(label, 0)), 4)
                for label in labels
            }
        return figures


Matching = tuple[int, int, int, dict[str, int], dict[str, int]]  # tp, fp, fn, tp and misses per label


def compare(ours: Any, theirs: Any) -> tuple[float, Matching | None]:
    """How far a candidate's result agrees with the active model's on one input: a score 0..1 and, for
    detection, (tp, fp, fn, true positives per label, misses per label)."""
    if hasattr(ours, "objects"):
        detail = match_detections(ours.objects, theirs.objects)
        tp, fp, fn = detail[:3]
        return (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0), detail
    if hasattr(ours, "classes") and hasattr(ours, "class_map"):
        return mean_iou(ours.class_map, theirs.class_map), None
    if hasattr(ours, "classes"):
        if not ours.classes or not theirs.classes:
            return float(bool(ours.classes) == bool(theirs.classes)), None
        return float(ours.classes[0].label == theirs.classes[0].label), None  # labels: files may be reordered
    if hasattr(ours, "outputs"):
        return correlation(ours.outputs, theirs.outputs), None
    raise EdgeError(f"cannot compare results of type {type(ours).__name__}")


def match_detections(ours: Any, theirs: Any, iou_at: float = 0.5) -> Matching:
    """Greedy matching by IoU within a label, best pair first: the active model's objects are the truth."""
    pairs = []
    for i, a in enumerate(ours):
        for j, b in enumerate(theirs):
            if a.label == b.label:
                overlap = iou(a.box, b.box)
                if overlap >= iou_at:
                    pairs.append((overlap, i, j))
    pairs.sort(reverse=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    per_tp: dict[str, int] = {}
    for _, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        per_tp[ours[i].label] = per_tp.get(ours[i].label, 0) + 1
    per_fn: dict[str, int] = {}
    for i, a in enumerate(ours):
        if i not in used_a:
            per_fn[a.label] = per_fn.get(a.label, 0) + 1
    tp = len(used_a)
    return tp, len(theirs) - tp, len(ours) - tp, per_tp, per_fn


def iou(a: Any, b: Any) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mean_iou(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Mean IoU of two class maps over the classes either has (1.0 when both are empty)."""
    if ours.shape != theirs.shape:
        from PIL import Image

        resized = Image.fromarray(theirs.astype(np.int32)).resize(ours.shape[::-1], Image.Resampling.NEAREST)
        theirs = np.asarray(resized)
    classes = np.union1d(np.unique(ours), np.unique(theirs))
    scores = []
    for c in classes.tolist():
        a, b = ours == c, theirs == c
        union = np.logical_or(a, b).sum()
        if union:
            scores.append(np.logical_and(a, b).sum() / union)
    return float(np.mean(scores)) if scores else 1.0


def correlation(ours: Any, theirs: Any) -> float:
    """Mean Pearson correlation of each output with the candidate's same-named one (constant outputs: 1.0
    when equal)."""
    scores = []
    mine = dict(ours)
    for name, value in theirs:
        if name not in mine:
            scores.append(0.0)  # an output the active model does not have: nothing agrees with it
            continue
        a = np.asarray(mine[name], np.float64).ravel()
        b = np.asarray(value, np.float64).ravel()
        if a.shape != b.shape:
            scores.append(0.0)
        elif a.std() == 0 or b.std() == 0:
            scores.append(float(np.allclose(a, b)))
        else:
            scores.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(scores)) if scores else 0.0
