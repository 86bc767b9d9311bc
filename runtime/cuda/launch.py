"""Kernel launches as data, and a CUDA graph of them.

A decode step is a list of `Launch`es made once; `Replay` captures it as one CUDA graph through
cuda.core's GraphBuilder (numba-cuda >= 0.30 launches kernels into a builder like into a stream) and
replays that graph per token: one launch from Python instead of one per kernel. Where no graph can be
made (Numba's CUDA simulator, an older numba-cuda) the same launches run one by one on a stream, and
`graph_error` says why.
"""
from __future__ import annotations

from dataclasses import dataclass

from numba import config, cuda


@dataclass(frozen=True)
class Launch:
    kernel: object
    grid: tuple
    block: int
    shared_bytes: int
    args: tuple

    def on(self, stream) -> None:
        self.kernel[self.grid, self.block, stream, self.shared_bytes](*self.args)


def run_all(launches, stream) -> None:
    for launch in launches:
        launch.on(stream)


class Replay:
    """The launches on one stream; as a captured graph where possible (call `capture` after a warm-up
    run, so that compiling and module loading stay outside the capture)."""

    def __init__(self, launches: list[Launch], share: "Replay | None" = None):
        """share: another Replay whose stream this one uses (its graph then runs in order with that one's
        work and with copies made on its stream)."""
        self.launches = launches
        self.graph = None
        self.graph_error = ""
        self._core_stream = None
        if share is not None:
            self.stream, self._core_stream, self.graph_error = share.stream, share._core_stream, share.graph_error
            self._device = getattr(share, "_device", None)
            return
        self.stream = cuda.stream()
        if config.ENABLE_CUDASIM:
            self.graph_error = "Numba's CUDA simulator has no graphs"
            return
        try:
            from cuda.core import Device
        except ImportError:
            try:
                from cuda.core.experimental import Device
            except ImportError as e:
                self.graph_error = f"no cuda.core ({e})"
                return
        try:
            self._device = Device()
            self._device.set_current()
            self._core_stream = self._device.create_stream()
            self.stream = cuda.external_stream(int(self._core_stream.handle))
        except Exception as e:  # noqa: BLE001 - any failure here only means: no graph
            self.graph_error = f"cuda.core stream: {type(e).__name__}: {e}"
            self._core_stream = None

    def capture(self) -> None:
        if self._core_stream is None:
            return
        try:
            builder = self._device.create_graph_builder()
            builder.begin_building()
            run_all(self.launches, builder)
            self.graph = builder.end_building().complete()
        except Exception as e:  # noqa: BLE001
            self.graph_error = f"graph capture: {type(e).__name__}: {e}"
            self.graph = None

    def run(self) -> None:
        if self.graph is not None:
            self.graph.launch(self._core_stream)
        else:
            run_all(self.launches, self.stream)

    @property
    def launches_per_run(self) -> int:
        """Launches Python makes per run: 1 graph, or every kernel."""
        return 1 if self.graph is not None else len(self.launches)
