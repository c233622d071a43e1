"""adamcore._transports in one process: which transport the params' library gets, and the NCCL
and CUDA-aware-MPI transports' calls on stand-ins for CuPy (no GPU or CuPy needed)."""

import sys
import types

import numpy as np
import pytest

pytest.importorskip("mpi4py")
from mpi4py import MPI  # noqa: E402

from adamcore import _transports  # noqa: E402
from adamcore._transports import (MpiDeviceTransport, MpiHostTransport,  # noqa: E402
                                  NcclTransport, choose_transport, mpi_is_cuda_aware)

COMM = MPI.COMM_SELF


class RecordingCommunicator:
    def __init__(self, ndev, commId, rank):
        self.made_with, self.calls = (ndev, len(commId), rank), []

    def reduceScatter(self, *args):
        self.calls.append(("reduceScatter", *args))

    def allGather(self, *args):
        self.calls.append(("allGather", *args))

    def abort(self):
        self.calls.append(("abort",))


def stand_in_cupy(monkeypatch, available=True, with_nccl=True):
    """Puts modules named cupy, cupy.cuda and cupy.cuda.nccl in sys.modules for one test."""
    syncs = []
    stream = types.SimpleNamespace(ptr=77, synchronize=lambda: syncs.append(1))
    cupy = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    cuda.get_current_stream = lambda: stream
    cupy.cuda = cuda
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    if with_nccl:
        nccl = types.ModuleType("cupy.cuda.nccl")
        nccl.available = available
        nccl.NCCL_SUM, nccl.NCCL_FLOAT16, nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64 = 0, 6, 7, 8
        nccl.get_unique_id = lambda: tuple(range(128))
        nccl.NcclCommunicator = RecordingCommunicator
        cuda.nccl = nccl
        monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    else:
        monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", None)  # import raises ImportError
    return syncs


def test_numpy_params_go_through_host_mpi():
    assert type(choose_transport("numpy", COMM)) is MpiHostTransport
    assert type(choose_transport("numpy", COMM, "mpi")) is MpiHostTransport
    with pytest.raises(ValueError, match="NumPy params go through MPI"):
        choose_transport("numpy", COMM, "nccl")
    with pytest.raises(ValueError, match="transport must be"):
        choose_transport("numpy", COMM, "gloo")
    mine = object()
    assert choose_transport("cupy", COMM, mine) is mine  # a transport object is used as given


def test_cupy_params_pick_nccl_unless_the_mpi_is_cuda_aware(monkeypatch):
    stand_in_cupy(monkeypatch)
    monkeypatch.setenv("ADAMCORE_MPI_CUDA_AWARE", "0")
    t = choose_transport("cupy", COMM)
    assert type(t) is NcclTransport and t.communicator.made_with == (1, 128, 0)
    monkeypatch.setenv("ADAMCORE_MPI_CUDA_AWARE", "1")
    assert type(choose_transport("cupy", COMM)) is MpiDeviceTransport
    monkeypatch.setenv("ADAMCORE_MPI_CUDA_AWARE", "0")
    assert type(choose_transport("cupy", COMM, "mpi")) is MpiDeviceTransport  # the user says so


def test_cupy_without_nccl_or_cuda_aware_mpi_says_what_to_do(monkeypatch):
    monkeypatch.setenv("ADAMCORE_MPI_CUDA_AWARE", "0")
    stand_in_cupy(monkeypatch, available=False)
    with pytest.raises(ImportError, match="without NCCL.*transport='mpi'"):
        choose_transport("cupy", COMM)
    stand_in_cupy(monkeypatch, with_nccl=False)
    with pytest.raises(ImportError, match="CUDA-aware MPI.*or NCCL"):
        choose_transport("cupy", COMM)


def test_cuda_awareness_from_the_environment_or_the_library(monkeypatch):
    for value, want in (("1", True), ("yes", True), ("0", False), ("off", False), ("", False)):
        monkeypatch.setenv("ADAMCORE_MPI_CUDA_AWARE", value)
        assert mpi_is_cuda_aware() is want
    monkeypatch.delenv("ADAMCORE_MPI_CUDA_AWARE")
    answer = mpi_is_cuda_aware()
    assert isinstance(answer, bool)
    if "pypi.org/p/mpich" in MPI.Get_library_version():
        assert answer is False  # the mpich wheel is built without CUDA and says so


def test_nccl_transport_calls(monkeypatch):
    stand_in_cupy(monkeypatch)
    t = NcclTransport(COMM, nccl=sys.modules["cupy.cuda.nccl"])
    send, recv = np.arange(6, dtype=np.float32), np.zeros(6, np.float32)
    t.reduce_scatter_sum(send, recv, [6])
    buf = np.zeros(5, np.float16)
    t.all_gather_in_place(buf, [5])
    t.reduce_scatter_sum(np.zeros(3), np.zeros(3), [3])
    assert t.communicator.calls == [
        ("reduceScatter", send.ctypes.data, recv.ctypes.data, 6, 7, 0, 77),  # current stream
        ("allGather", buf.ctypes.data, buf.ctypes.data, 5, 6, 77),  # rank 0: in place
        ("reduceScatter", t.communicator.calls[2][1], t.communicator.calls[2][2], 3, 8, 0, 77)]
    with pytest.raises(ValueError, match="one count for every rank"):
        t.reduce_scatter_sum(send, recv, [4, 2])
    with pytest.raises(TypeError, match="no NCCL type for int8"):
        t.all_gather_in_place(np.zeros(2, np.int8), [2])
    t.abort()
    assert t.communicator.calls[-1] == ("abort",)
    fixed = NcclTransport(COMM, nccl=sys.modules["cupy.cuda.nccl"],
                          stream=types.SimpleNamespace(ptr=5))
    fixed.all_gather_in_place(buf, [5])
    assert fixed.communicator.calls[-1][-1] == 5


def test_device_mpi_transport_waits_for_the_stream_first():
    syncs = []
    t = MpiDeviceTransport(COMM, synchronize=lambda: syncs.append(1))
    send, recv = np.arange(7, dtype=np.float64), np.zeros(7)
    t.reduce_scatter_sum(send, recv, [7])
    buf = np.arange(4, dtype=np.float16)
    t.all_gather_in_place(buf, [4])
    assert syncs == [1, 1] and recv.tobytes() == send.tobytes()
    assert buf.tolist() == [0, 1, 2, 3]


def test_addresses_of_host_and_device_arrays():
    a = np.zeros(4)
    assert _transports._address(a) == a.ctypes.data
    assert _transports._address(a[1:]) == a.ctypes.data + 8
    device_like = types.SimpleNamespace(__cuda_array_interface__={"data": (1234, False)})
    assert _transports._address(device_like) == 1234


def test_sharded_adam_refuses_params_of_two_libraries_or_none():
    from adamcore.distributed import ShardedAdam

    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="param 1 is a Tensor; ShardedAdam takes NumPy or CuPy"):
        ShardedAdam([np.zeros(3), torch.zeros(2)], comm=COMM)
    opt = ShardedAdam([np.zeros(3, np.float16), np.zeros(2), np.zeros(4, np.float32)], comm=COMM)
    assert [str(s.dtype) for s in opt.spaces] == ["float16", "float32", "float64"]
    assert opt.transport.name == "mpi" and opt.library == "numpy"
