"""Process settings made by ``callcentre serve`` (callcentre/runtime.py)."""

from __future__ import annotations

import gc

from click.testing import CliRunner

from callcentre import runtime
from callcentre.cli import main


def test_tune_gc_sets_the_thresholds_and_returns_the_old_ones():
    before = gc.get_threshold()
    try:
        old = runtime.tune_gc((1234, 3, 99))
        assert old == before
        assert gc.get_threshold() == (1234, 3, 99)
    finally:
        gc.set_threshold(*before)


def test_serve_tunes_the_collector_before_the_server_starts(monkeypatch, tmp_path):
    seen: list[tuple[int, int, int]] = []

    async def fake_serve(cfg) -> None:
        seen.append(gc.get_threshold())

    monkeypatch.setattr("callcentre.app.serve", fake_serve)
    monkeypatch.setattr(runtime, "limit_malloc_arenas", lambda: False)
    before = gc.get_threshold()
    try:
        result = CliRunner().invoke(main, ["serve"], env={"CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"})
    finally:
        gc.set_threshold(*before)
    assert result.exit_code == 0, result.output
    assert seen == [runtime.GC_THRESHOLDS]
