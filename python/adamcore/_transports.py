"""How adamcore.distributed moves its flat buffers: one small object per kind of transport.

ShardedAdam's logic (flat spaces, shards, buckets, state) is the same for every transport; a
transport only knows two collectives over one contiguous buffer each:

``reduce_scatter_sum(send, recv, counts)``
    ``send`` holds ``sum(counts)`` elements laid rank after rank; rank r receives in ``recv``
    (``counts[r]`` elements) the sum over ranks of its part.
``all_gather_in_place(buf, counts)``
    ``buf`` holds ``sum(counts)`` elements; this rank's part (at ``sum(counts[:rank])``) is
    already written, and the call fills in every other rank's.

``equal_counts`` says whether every rank's part must have the same length (NCCL's collectives
take one count); ShardedAdam then pads its flat spaces to a multiple of the number of ranks.

Three transports, chosen from the params' library by :func:`choose_transport`:

- :class:`MpiHostTransport`: NumPy buffers through mpi4py.
- :class:`MpiDeviceTransport`: CuPy buffers through a CUDA-aware MPI; the current CuPy stream is
  synchronized before each collective, since MPI does not know CUDA streams.
- :class:`NcclTransport`: CuPy buffers through ``cupy.cuda.nccl.NcclCommunicator``, enqueued on
  the current CuPy stream (the same stream adamcore's CUDA step runs on), so nothing waits.

The small agreement collectives (argument checks, finiteness, the clipping norm, state dicts)
always go through the mpi4py communicator, whatever moves the big buffers.
"""

from __future__ import annotations

import ctypes
import importlib
import os

import numpy as np


def _address(a) -> int:
    """The address of a contiguous array's first element: CuPy (CUDA array interface) or NumPy."""
    interface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(interface["data"][0])


def _moved_as(a):
    """Arrays that are only copied (never reduced) travel as unsigned integers of their width,
    so a 16-bit float needs no MPI type of its own."""
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.itemsize == 2 else a


class MpiHostTransport:
    """NumPy buffers through mpi4py (MPI_Reduce_scatter, MPI_Allgatherv in place)."""

    name = "mpi"
    equal_counts = False

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI, self.comm, self.rank = MPI, comm, comm.Get_rank()

    def _type(self, a):
        return self._MPI._typedict[a.dtype.char]

    def _ready(self):
        """Called before each collective: the device transport waits for the stream here."""

    def reduce_scatter_sum(self, send, recv, counts):
        self._ready()
        self.comm.Reduce_scatter([send, self._type(send)], [recv, self._type(recv)], list(counts),
                                 op=self._MPI.SUM)

    def all_gather_in_place(self, buf, counts):
        self._ready()
        buf = _moved_as(buf)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        self.comm.Allgatherv(self._MPI.IN_PLACE, [buf, list(counts), displs, self._type(buf)])

    def abort(self):
        """Nothing of its own to tear down: ShardedAdam aborts the MPI communicator."""


class MpiDeviceTransport(MpiHostTransport):
    """CuPy buffers handed to a CUDA-aware MPI (mpi4py takes them through DLPack / the CUDA
    array interface). MPI does not order itself after work queued on a CUDA stream, so the
    current CuPy stream is synchronized before each collective."""

    name = "cuda-aware-mpi"

    def __init__(self, comm, synchronize=None):
        super().__init__(comm)
        if synchronize is None:
            import cupy

            def synchronize():
                cupy.cuda.get_current_stream().synchronize()
        self._synchronize = synchronize

    def _ready(self):
        self._synchronize()


class NcclTransport:
    """CuPy buffers through NCCL (``cupy.cuda.nccl``), one NCCL communicator over the MPI ranks.

    Args:
        comm: the mpi4py communicator; rank 0 makes the NCCL unique id and broadcasts it.
        nccl: the module holding NcclCommunicator, get_unique_id and the NCCL_* constants
            (default ``cupy.cuda.nccl``; the tests pass a stand-in).
        communicator: an existing NcclCommunicator over the same ranks (default: made here).
        stream: a CUDA stream pointer or an object with ``.ptr`` (default: CuPy's current
            stream at each call).
    """

    name = "nccl"
    equal_counts = True  # ncclReduceScatter / ncclAllGather take one count for every rank

    def __init__(self, comm, *, nccl=None, communicator=None, stream=None):
        if nccl is None:
            from cupy.cuda import nccl
        self.nccl = nccl
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        if communicator is None:
            made = None
            if self.rank == 0:
                try:
                    made = ("id", nccl.get_unique_id())
                except Exception as e:  # noqa: BLE001 - every rank must hear of it, not wait
                    made = ("error", f"{type(e).__name__}: {e}")
            kind, unique_id = comm.bcast(made, root=0)
            if kind == "error":
                raise RuntimeError(f"NCCL transport: rank 0 could not make the NCCL unique id "
                                   f"({unique_id})")
            communicator = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self.communicator = communicator
        self._stream = stream
        self._types = {np.dtype(np.float16): nccl.NCCL_FLOAT16,
                       np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _stream_pointer(self) -> int:
        if self._stream is None:
            import cupy

            return int(cupy.cuda.get_current_stream().ptr)
        return int(getattr(self._stream, "ptr", self._stream))

    def _type(self, a):
        try:
            return self._types[np.dtype(a.dtype)]
        except KeyError:
            raise TypeError(f"NCCL transport: no NCCL type for {a.dtype}") from None

    @staticmethod
    def _count(counts):
        if len(set(counts)) > 1:
            raise ValueError(f"NCCL needs one count for every rank, got {list(counts)}")
        return int(counts[0]) if counts else 0

    def reduce_scatter_sum(self, send, recv, counts):
        count = self._count(counts)
        self.communicator.reduceScatter(_address(send), _address(recv), count, self._type(send),
                                        self.nccl.NCCL_SUM, self._stream_pointer())

    def all_gather_in_place(self, buf, counts):
        # in place: NCCL's rule is sendbuff == recvbuff + rank * count
        count = self._count(counts)
        base = _address(buf)
        self.communicator.allGather(base + self.rank * count * buf.dtype.itemsize, base, count,
                                    self._type(buf), self._stream_pointer())

    def abort(self):
        try:
            self.communicator.abort()  # so no rank waits inside NCCL for the aborted ones
        except Exception:  # noqa: BLE001 - best effort on the way down; MPI_Abort follows
            pass


def mpi_is_cuda_aware() -> bool:
    """Whether the MPI library in this process takes device buffers.

    ``ADAMCORE_MPI_CUDA_AWARE=1`` or ``0`` decides; otherwise the library's own answer,
    ``MPIX_Query_cuda_support()`` (Open MPI, and MPICH from 4.0), found in the loaded libmpi.
    Without either the answer is no, and CuPy params go through NCCL.
    """
    setting = os.environ.get("ADAMCORE_MPI_CUDA_AWARE")
    if setting is not None:
        return setting.strip().lower() not in ("", "0", "no", "false", "off")
    for path in _loaded_mpi_libraries():
        try:
            query = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if query is not None:
            query.restype = ctypes.c_int
            return bool(query())
    return False


def _loaded_mpi_libraries() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libmpi" in line and "/" in line}
    except OSError:  # not Linux
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libmpi."))


def transport_kind(library: str, transport="auto") -> str:
    """Which transport params of ``library`` ("numpy" or "cupy") get, decided without any
    collective (so the ranks can agree on it before one is made): "mpi", "cuda-aware-mpi" or
    "nccl". ``transport`` is "auto", "mpi" (host MPI for NumPy, CUDA-aware MPI for CuPy) or
    "nccl"."""
    if transport not in ("auto", "mpi", "nccl"):
        raise ValueError(f"transport must be 'auto', 'mpi', 'nccl' or a transport object, "
                         f"got {transport!r}")
    if library == "numpy":
        if transport == "nccl":
            raise ValueError("transport='nccl' moves device buffers; NumPy params go through MPI")
        return "mpi"
    if transport == "mpi" or (transport == "auto" and mpi_is_cuda_aware()):
        return "cuda-aware-mpi"
    try:
        nccl = importlib.import_module("cupy.cuda.nccl")
    except ImportError as e:
        raise ImportError("CuPy params need a CUDA-aware MPI (transport='mpi', or "
                          "ADAMCORE_MPI_CUDA_AWARE=1) or NCCL (cupy.cuda.nccl), and this "
                          "MPI does not say it is CUDA-aware") from e
    if not getattr(nccl, "available", True):
        raise ImportError("CuPy was built without NCCL (cupy.cuda.nccl.available is False) "
                          "and this MPI does not say it is CUDA-aware: pass transport='mpi' "
                          "if it is")
    return "nccl"


def make_transport(kind: str, comm):
    """The transport of a kind :func:`transport_kind` returned (NCCL: a collective over comm)."""
    if kind == "mpi":
        return MpiHostTransport(comm)
    if kind == "cuda-aware-mpi":
        return MpiDeviceTransport(comm)
    return NcclTransport(comm, nccl=importlib.import_module("cupy.cuda.nccl"))


def choose_transport(library: str, comm, transport="auto"):
    """The transport for params of ``library``: :func:`transport_kind`, then made; a transport
    object (anything with the two collectives above) is used as given."""
    if not isinstance(transport, str):
        return transport
    return make_transport(transport_kind(library, transport), comm)
