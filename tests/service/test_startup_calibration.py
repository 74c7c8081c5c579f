"""The served index's relevance calibration is measured when the server starts (in the
background), not by the first search, which would otherwise wait seconds for it; a library that
cannot calibrate yet (no index, its store unreachable) does not stop the server."""

from __future__ import annotations

import threading
from typing import Any

from svc_testlib import FakeLibrary


class CalibratingLibrary(FakeLibrary):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.calibrated = threading.Event()

    def calibration(self) -> Any:
        self.calibrated.set()
        if self.fail:
            raise RuntimeError("no index yet")
        return None


def test_the_calibration_is_measured_at_start_before_any_search(make_client: Any) -> None:
    library = CalibratingLibrary()
    make_client(library)
    assert library.calibrated.wait(30), "the server did not calibrate at start-up"
    assert not [c for c in library.calls if c[0] == "search"]  # no search asked for it


def test_a_library_that_cannot_calibrate_yet_still_serves(make_client: Any) -> None:
    library = CalibratingLibrary(fail=True)
    client = make_client(library)
    assert library.calibrated.wait(30)
    assert client.get("/api/health").status_code == 200


def test_without_a_preloaded_model_nothing_is_measured_at_start(make_client: Any) -> None:
    library = CalibratingLibrary()
    client = make_client(library, preload_model=False)
    assert client.get("/api/health").status_code == 200
    assert not library.calibrated.wait(0.5)
