"""Host staging of async checkpoints: one host copy of the DCP state, kept across saves and refilled at each.

`HostStager` is what `dcp.async_save` is given as its `async_stager`. Its host buffers (one storage per
tensor: DCP's file writer clones a tensor whose storage is larger than itself, so views into one big
buffer would be copied once more; pinned on CUDA) are allocated once, ahead of the first save if asked (`reserve`), and refilled at every
save: on CUDA by non-blocking copies on a side stream that waits for the training stream, while the next
forward/backward runs; the future `stage` returns is done when the copies are, and DCP writes the files
from the host copy after it. Torchtitan staged this way before DCP had a stager of its own.

Why not DCP's `DefaultStager`: torch 2.11.0's closes its deep-copy stager at the end of every stage
(pytorch#170431), which empties the stager's table of copiers, so a `DefaultStager` kept across saves
fails its second stage with `KeyError: <class 'type'>` (pytorch#183413, fixed in later torch by #183424):
the top-level dict, copied through its `__reduce_ex__`, hands the class `dict` to the emptied table.
That was the crash of the first async save on the H200s (the warm-up stage had been the first use). A new
`DefaultStager` per save would pin tens of GB anew at every save; this stager has no such version-bound
behaviour and leaves nothing for DCP to deep-copy.

Pinning goes through `cudaHostRegister` on ordinary host tensors (as DCP's own stager does) rather than
`pin_memory=True`: torch's caching host allocator may round each block up to a power of two, which for a
7B model's shards and optimizer state would waste up to half of the pinned memory.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.distributed.checkpoint.staging import AsyncStager
from torch.distributed.tensor import DTensor

Where = tuple
"""Where a tensor sits in a nested state dict: the keys / indices leading to it."""


def _map_tensors(obj: Any, fn: Callable[[Where, torch.Tensor], Any], path: Where = ()) -> Any:
    """`obj` with every tensor leaf (a DTensor counts as one leaf) replaced by `fn(path, leaf)`; dicts, lists
    and tuples are rebuilt and any other leaf is deep-copied, so the result shares nothing mutable with `obj`."""
    if isinstance(obj, torch.Tensor):
        return fn(path, obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn, path + (k,)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_map_tensors(v, fn, path + (i,)) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    return copy.deepcopy(obj)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose bytes are staged: a DTensor's shard on this rank, or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


@torch.no_grad()
def layout(state_dict: Any) -> tuple:
    """Path, shape, dtype and device type of every (local) tensor of `state_dict`: one layout, one set of buffers."""
    found: list = []

    def note(path: Where, t: torch.Tensor) -> None:
        local = _local(t)
        found.append((path, tuple(local.shape), local.dtype, local.device.type))

    _map_tensors(state_dict, note)
    return tuple(found)


def _cudart_check(rc: Any, what: str) -> None:
    if int(rc) != 0:
        raise RuntimeError(f"{what} failed with CUDA error {int(rc)}")


class HostStager(AsyncStager):
    """DCP's `AsyncStager` over host buffers kept across saves; `device` CUDA: pinned buffers, side-stream copies.

    Contract with the caller: `stage` is called only when the host copy of the previous save has been written
    (the buffers are refilled in place); `close` releases the buffers once no save is in flight.
    """

    _synchronize_after_execute = False  # `stage` returns a future: DCP's writer waits for it itself

    def __init__(self, device: torch.device | None = None):
        self._device = device if device is not None and device.type == "cuda" else None
        self._stream = torch.cuda.Stream(self._device) if self._device is not None else None
        self._layout: tuple | None = None
        self._buffers: dict[Where, torch.Tensor] = {}
        self._pinned: list[int] = []  # data pointers registered with cudaHostRegister
        self._pool: ThreadPoolExecutor | None = None
        self._reserving: Future | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-stage")
        return self._pool

    def reserve(self, state_dict: Any) -> None:
        """In the background, allocate (and pin) buffers for `state_dict`'s tensors without copying anything, so the
        first save does not wait for the allocation (seconds for tens of GB of pinned memory). No-op once allocated."""
        if self._layout is None and self._reserving is None:
            self._reserving = self._executor().submit(self._allocate, layout(state_dict))

    def _allocate(self, wanted: tuple) -> None:
        """Make the buffers fit `wanted` (a `layout`): nothing to do when they already do, else all anew."""
        if wanted == self._layout:
            return
        self._release()
        # in a background thread too: pin from this rank's device, not the thread's default device 0
        with torch.cuda.device(self._device) if self._device is not None else contextlib.nullcontext():
            try:
                for path, shape, dtype, device_type in wanted:
                    buf = self._buffers[path] = torch.empty(shape, dtype=dtype)
                    nbytes = buf.untyped_storage().nbytes()
                    if device_type == "cuda" and nbytes:  # portable (flag 1), as DCP's stager registers
                        rc = torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), nbytes, 1)
                        _cudart_check(rc, "cudaHostRegister")
                        self._pinned.append(buf.data_ptr())
            except BaseException:
                self._release()  # no half-pinned set left behind
                raise
        self._layout = wanted

    def _release(self) -> None:
        for ptr in self._pinned:
            _cudart_check(torch.cuda.cudart().cudaHostUnregister(ptr), "cudaHostUnregister")
        self._buffers, self._pinned, self._layout = {}, [], None

    @torch.no_grad()
    def stage(self, state_dict: Any, **_: Any) -> Future:
        """Start copying `state_dict` into the host buffers; the future gives the host state dict once it is filled
        (DTensors stay DTensors with the same sharding, over host shards)."""
        reserving, self._reserving = self._reserving, None
        if reserving is not None:
            reserving.result()  # raises what the allocation raised (the next stage would try again)
        self._allocate(layout(state_dict))
        if self._stream is None:
            done: Future = Future()
            done.set_result(_map_tensors(state_dict, self._fill(non_blocking=False)))
            return done
        # the side stream starts after the work queued so far (the update that made these values), with no host wait
        self._stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(self._stream):
            staged = _map_tensors(state_dict, self._fill(non_blocking=True))
            copied = self._stream.record_event()
        # `state_dict` stays referenced until the copies are done, so no source memory is reused under them
        return self._executor().submit(_when_copied, copied, staged, state_dict)

    def _fill(self, non_blocking: bool) -> Callable[[Where, torch.Tensor], torch.Tensor]:
        def fill(path: Where, t: torch.Tensor) -> torch.Tensor:
            buf = self._buffers[path]
            buf.copy_(_local(t).detach(), non_blocking=non_blocking)
            if isinstance(t, DTensor):
                # a DTensor over the host shard with the source's spec (mesh, placements, global shape): DCP
                # writes it as the same shard. `from_local` would move the shard back to the mesh's device.
                return DTensor(buf, t._spec, requires_grad=False)
            return buf

        return fill

    def synchronize_staging(self) -> None:
        """Nothing to do: `stage`'s future is what callers (and DCP's writer) wait on."""

    def close(self) -> None:
        """Wait for background work, then unpin and drop the host buffers (a later `stage` would allocate anew)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._reserving = None
        self._release()


def _when_copied(copied: torch.cuda.Event, staged: Any, source: Any) -> Any:
    """Background: block until the side-stream copies are done; then the host state dict is complete (`source`,
    the state copied from, is an argument only to stay alive until then)."""
    copied.synchronize()
    return staged
