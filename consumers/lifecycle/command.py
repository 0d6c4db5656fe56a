"""What each `finsignal model ...` command prints; the CLI only dispatches here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from signals.drift import DRIFT_KEY
from signals.registry import ModelRegistry


def list_lines(registry: ModelRegistry) -> list[str]:
    """One row per version: pointers, name, eval figures, size, when registered."""
    entries = registry.entries()
    if not entries:
        return [f"no models registered in {registry.root}; add one with `finsignal model register DIR`"]
    out = [f"{'version':12}  {'pointers':14}  {'name':28}  {'accuracy':>8}  {'macro-F1':>8}  {'size':>9}  registered"]
    for e in entries:
        refs = ",".join(registry.references(e.version)) or "-"
        acc, f1 = e.eval.get("accuracy"), e.eval.get("macro_f1")
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.manifest.get("registered_unix", 0)))
        out.append(f"{e.version:12}  {refs:14}  {e.name[:28]:28}  {_num(acc):>8}  {_num(f1):>8}  "
                   f"{e.manifest.get('size_bytes', 0) / 1e6:>7.1f}MB  {when}Z")
    return out


def show_lines(registry: ModelRegistry, ref: str) -> list[str]:
    """The manifest, what points at the version, and its audit records."""
    entry = registry.get(ref)
    manifest = {k: v for k, v in entry.manifest.items() if k != "files"}
    out = [f"version {entry.version}  path {entry.path}",
           f"pointers: {', '.join(registry.references(entry.version)) or 'none'}",
           json.dumps(manifest, indent=2, default=str),
           "files: " + ", ".join(f"{f['path']} ({f['bytes']} B)" for f in entry.manifest.get("files", []))]
    history = [r for r in registry.audit() if r.get("version") == entry.version or r.get("candidate") == entry.version]
    for rec in history[-10:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.get("ts_unix", 0)))
        out.append(f"{when}Z {rec.get('action')} by {rec.get('user')}" + (
            f" passed={rec['passed']} forced={rec['forced']}" if "passed" in rec else ""))
    return out


def register_lines(registry: ModelRegistry, directory: Path) -> list[str]:
    entry, new = registry.register(directory)
    verb = "registered" if new else "already registered"
    return [f"{verb} {entry.version} ({entry.name}) from {directory}", f"path {entry.path}"]


def rollback_lines(registry: ModelRegistry) -> list[str]:
    before, after = registry.rollback()
    return [f"rolled back: live {before} -> {after}"]


def shadow_lines(registry: ModelRegistry, ref: str | None) -> list[str]:
    if ref is None:
        before = registry.pointer("shadow")
        registry.set_shadow(None)
        return [f"shadow cleared (was {before or 'unset'})"]
    from consumers.lifecycle.gate import resolve_candidate

    entry = resolve_candidate(registry, ref)
    registry.set_shadow(entry.version)
    return [f"shadow -> {entry.version} ({entry.name}); workers with FINSIGNAL_WORKER_SHADOW_DIR="
            f"{registry.pointer_path('shadow')} score it beside live"]


def remove_lines(registry: ModelRegistry, ref: str) -> list[str]:
    entry = registry.get(ref)
    registry.remove(entry.version)
    return [f"removed {entry.version}"]


def audit_lines(registry: ModelRegistry, limit: int) -> list[str]:
    out = []
    for rec in registry.audit()[-limit:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.get("ts_unix", 0)))
        extra = ""
        if rec.get("action") in {"promote", "refuse", "rollback"}:
            extra = f" live {rec.get('live_before')} -> {rec.get('live_after')}"
        if rec.get("failed_gates"):
            extra += f" failed: {', '.join(rec['failed_gates'])}"
        if rec.get("forced"):
            extra += " FORCED"
        out.append(f"{when}Z {rec.get('user')} {rec.get('action')} {rec.get('version')}{extra}")
    return out or ["(audit log empty)"]


def drift_snapshots(client: Any) -> list[dict[str, Any]]:
    """Every live worker's latest drift snapshot (keys `finsignal:drift:{worker}`, expiring when it stops)."""
    keys = sorted(client.scan_iter(match=f"{DRIFT_KEY}:*", count=100))
    raw = client.mget(keys) if keys else []
    return [json.loads(v) for v in raw if v]


def drift_lines(snapshots: list[dict[str, Any]], now: float | None = None) -> list[str]:
    """Per worker: the reference, the window, PSI per feature and source, the KS test, what alerts."""
    if not snapshots:
        return ["no drift snapshot in Redis: no worker is running, or none has published yet"]
    now = now or time.time()
    out = []
    for snap in snapshots:
        model = snap["model"]
        out.append(f"worker {snap['worker']} (group {snap['group']}), model {model['name']} {model['version']}, "
                   f"{now - snap['ts_unix']:.0f}s ago")
        fig = snap.get("figures")
        if fig is None:
            warming = snap.get("warming")
            state = f"warming up the reference: {warming}/{snap['warmup']} signals" if warming is not None \
                else f"window {snap['window']} signals, too few to compare"
            out.append(f"  {state}")
            continue
        out.append(f"  reference: {fig['origin']} ({fig['reference_signals']} signals); window: "
                   f"{fig['window_signals']} signals")
        out.append(f"  {'PSI':18}{'direction':>10}{'score':>10}{'confidence':>11}")
        for source, row in fig["psi"].items():
            out.append(f"  {source[:18]:18}{row['direction']:>10.3f}{row['score']:>10.3f}{row['confidence']:>11.3f}")
        out.append(f"  KS score: D = {fig['ks_statistic']:.3f}, p = {fig['ks_pvalue']:.3g}")
        alerting = fig["alerting"]
        out.append(f"  DRIFT (PSI > {fig['psi_alert']}, KS p < {fig['ks_alpha']}): " + "; ".join(alerting)
                   if alerting else f"  no drift (PSI <= {fig['psi_alert']}, KS p >= {fig['ks_alpha']})")
    return out


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
