"""Indexing jobs on Ray Data (the optional `ray` extra): decoding as Ray tasks, the model in a pool
of actors, the vectors streamed back to the driver, which commits them as a local job does.

Ray Data's documented batch-inference pattern: a class that loads the model once in __init__ and
embeds a batch in __call__, run by map_batches with an ActorPoolStrategy. The driver (jobs.py,
pipeline.py) scans, diffs and commits; only preparing and embedding run here. Two traps measured on a 2-CPU
Ray: actors that each reserve a whole CPU starve the decode tasks and the job hangs, so actors
reserve a fraction of a CPU (their threads still use the cores); and workers do not see the
driver's sys.path, so the job ships this package's code to every worker (runtime_env py_modules)
and the workers need only its dependencies installed.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ExecutorError, ModelMismatchError
from .prepare import Prepared, Preparer, Work

if TYPE_CHECKING:
    from siglip_search.embedder import Embedder
    from siglip_search.image_processor import SiglipImageProcessor

INSTALL_HINT = "pip install 'siglip-search[ray]'"
ACTOR_CPUS = 0.25  # what an actor reserves: the decode tasks always find a CPU (see above)
DECODE_CPUS = 1.0
MAX_BLOCKS = 2_000  # the work list is cut into blocks of at least one batch, at most this many
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RayExecutor:
    """Where and how a job runs on Ray. `address`: a running cluster's head, HOST:PORT (or "auto"
    for the one `ray start` made on this machine); None: $RAY_ADDRESS, else a Ray started for the
    job and stopped after it."""

    address: str | None = None
    actors: int | None = None  # default: as many as the GPUs hold, else one per node
    gpus_per_actor: float = 0.0

    def check(self) -> None:
        """ExecutorError now, before any work, when Ray is missing or the cluster is out of reach."""
        import_ray()
        _check_reachable(self._address())

    def _address(self) -> str:
        return self.address or os.environ.get("RAY_ADDRESS") or "local"

    def prepare(
        self, work: list[Work], embedder: Embedder, batch_size: int, max_pixels: int | None
    ) -> Iterator[Prepared]:
        """The photos of `work` prepared and embedded on the cluster, in order, `vector` and `node` set."""
        if not work:
            return
        ray = import_ray()
        with connected(ray, self._address()):
            actors, threads = self._plan(ray)
            rows = [{"i": i, "work": pickle.dumps(w)} for i, w in enumerate(work)]
            block_rows = max(batch_size, math.ceil(len(rows) / MAX_BLOCKS))
            data = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / block_rows))
            data = data.map_batches(
                _prepare_rows,
                fn_kwargs={
                    "image_processor": embedder.image_processor,
                    "image_size": embedder.image_size,
                    "max_pixels": max_pixels,
                },
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=DECODE_CPUS,
            )
            data = data.map_batches(
                _EmbedActor,
                fn_constructor_kwargs=self._model_arguments(embedder, threads, batch_size),
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=ACTOR_CPUS,
                num_gpus=self.gpus_per_actor or None,
                batch_size=batch_size,
                batch_format="numpy",
            )
            try:
                for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
                    yield from _prepared(work, batch)
            except ray.exceptions.RayError as exc:
                raise ExecutorError(f"the Ray job failed: {_cause(exc)}") from None

    def map_tasks(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
        """[fn(*args) for args in calls], each call a Ray task of one CPU, results in order."""
        ray = import_ray()
        with connected(ray, self._address()):
            task = ray.remote(num_cpus=1)(fn)
            shared = {id(arg): ray.put(arg) for args in calls for arg in args if _is_large(arg)}
            refs = [task.remote(*[shared.get(id(a), a) for a in args]) for args in calls]
            try:
                return list(ray.get(refs))
            except ray.exceptions.RayError as exc:
                raise ExecutorError(f"the Ray job failed: {_cause(exc)}") from None

    def _plan(self, ray: Any) -> tuple[int, int]:
        """(actors, torch threads per actor) for this cluster; ExecutorError where it cannot host them."""
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU"))
        if cpus < DECODE_CPUS + ACTOR_CPUS:
            raise ExecutorError(
                f"the Ray cluster has {cpus:g} CPUs; a job needs at least {DECODE_CPUS + ACTOR_CPUS:g}"
            )
        if self.gpus_per_actor:
            actors = self.actors or int(gpus // self.gpus_per_actor)
            if actors < 1 or actors * self.gpus_per_actor > gpus:
                wanted = f"{self.actors or 1} actor(s) x {self.gpus_per_actor:g} GPU"
                raise ExecutorError(f"the Ray cluster has {gpus:g} GPUs, not enough for {wanted}")
        else:
            actors = self.actors or max(1, nodes)
        # An actor's torch threads: its share of the cluster's cores (one chunk of a batch each,
        # as siglip_search/parallel.py splits batches on one machine).
        return actors, max(1, int(cpus // actors))

    def _model_arguments(self, embedder: Embedder, threads: int, batch_size: int) -> dict[str, Any]:
        from siglip_search.hub import resolve_checkpoint_dir

        return {
            "checkpoint": str(resolve_checkpoint_dir(embedder.model_id)),
            "model_id": embedder.model_id,
            "weights_sha256": embedder.weights_sha256,
            "mode": embedder.mode,
            "device": "cuda" if self.gpus_per_actor else "cpu",
            "threads": threads,
            "batch_size": batch_size,
        }


def import_ray() -> Any:
    """The ray module, with Ray Data; ExecutorError saying how to install it when missing."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray[data]: pyarrow and pandas)
    except ImportError:
        raise ExecutorError(
            f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


@contextmanager
def connected(ray: Any, address: str) -> Iterator[None]:
    """Connected to a cluster, or to a Ray started here ("local"), for the block; ExecutorError
    when it is out of reach."""
    import indexer
    import siglip_search

    _check_reachable(address)
    # Ray's C++ core logs, at ERROR, that an actor pool's restartable actors keep their constructor
    # arguments in the object store: Ray Data's own arguments, and restarts work (a test kills an
    # actor). The level is read when Ray starts, which logs that it read it: both are silenced.
    quiet = {"RAY_BACKEND_LOG_LEVEL": os.environ.get("RAY_BACKEND_LOG_LEVEL", "fatal")}
    try:
        with _environment(quiet), _fd_silenced(2):
            ray.init(
                address=address,
                logging_level=logging.ERROR,
                log_to_driver=False,
                include_dashboard=False,
                runtime_env={"py_modules": [siglip_search, indexer], "excludes": ["__pycache__"]},
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address}: {_first_line(exc)}"
        ) from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # commits in a local run's order: the same ids
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-dataset INFO lines
    context.enable_progress_bars = False  # the job's own bar counts what is committed
    try:
        yield
    finally:
        ray.shutdown()


def _prepare_rows(
    batch: dict[str, np.ndarray],
    image_processor: SiglipImageProcessor,
    image_size: tuple[int, int],
    max_pixels: int | None,
) -> dict[str, np.ndarray]:
    """A decode task: fingerprint, decode and preprocess each photo (prepare.Preparer, as a local
    decode worker does); a bad file becomes a reason."""
    prepare = Preparer(image_processor, image_size, max_pixels)
    items = [prepare(pickle.loads(blob)) for blob in batch["work"]]
    for item in items:
        file = item.work.file
        root = file.path[: -len(file.rel_path)].rstrip("/")
        if item.error is not None and not os.path.isdir(root):
            item.error = (
                f"cannot read file (folder {root} is not on Ray node {_node_address()}; "
                "photos must be at the same path on every node)"
            )
    blank = np.zeros((3, *image_size), np.float32)
    return {
        "i": batch["i"],
        "pixels": np.stack([blank if item.pixels is None else item.pixels for item in items]),
        "embed": np.array([item.pixels is not None for item in items]),
        # "" for None: Ray's blocks turn None in a text column into NaN
        "fingerprint": np.array([item.fingerprint or "" for item in items], dtype=object),
        "error": np.array([item.error or "" for item in items], dtype=object),
        "same_row": np.array([item.same_row is not None for item in items]),
        "decoded": np.array([pickle.dumps(item.decoded) for item in items], dtype=object),
    }


class _EmbedActor:
    """Loads the library's model once, then embeds batches of pixels, padded to one shape as
    batches.Batch.take_pixels pads them."""

    def __init__(
        self,
        checkpoint: str,
        model_id: str,
        weights_sha256: str,
        mode: str,
        device: str,
        threads: int,
        batch_size: int,
    ) -> None:
        import torch

        from siglip_search.embedder import Embedder

        torch.set_num_threads(threads)
        source = checkpoint if os.path.isdir(checkpoint) else model_id  # a hub id downloads here
        self.embedder = Embedder.from_pretrained(source, mode=mode, device=device)
        if weights_sha256 and self.embedder.weights_sha256 != weights_sha256:
            raise ModelMismatchError(
                f"Ray node {_node_address()} has other weights at {source} than the library's model"
            )
        self.batch_size = batch_size
        self.node = _node_address()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = batch.pop("pixels")  # (B, 3, H, W); not sent back
        vectors = np.zeros((len(pixels), self.embedder.dim), np.float32)
        chosen = np.flatnonzero(batch["embed"])
        for start in range(0, len(chosen), self.batch_size):
            rows = chosen[start : start + self.batch_size]
            padded = np.zeros((self.batch_size, *pixels.shape[1:]), np.float32)
            padded[: len(rows)] = pixels[rows]
            vectors[rows] = self.embedder.embed_pixels(padded)[: len(rows)]
        batch["vector"] = vectors  # (B, dim)
        batch["node"] = np.array([self.node] * len(vectors), dtype=object)
        return batch


def _prepared(work: list[Work], batch: dict[str, np.ndarray]) -> Iterator[Prepared]:
    for row in range(len(batch["i"])):
        item = Prepared(work[int(batch["i"][row])], batch["fingerprint"][row] or None)
        item.decoded = pickle.loads(batch["decoded"][row])
        item.error = batch["error"][row] or None
        item.same_row = item.work.old if batch["same_row"][row] else None
        if batch["embed"][row]:
            item.vector, item.node = batch["vector"][row], str(batch["node"][row])
        yield item


def _check_reachable(address: str) -> None:
    """ray.init retries an address where nothing listens for minutes; a plain connect fails at once."""
    if address in ("local", "auto"):
        return
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        raise ExecutorError(
            f"--ray-address takes HOST:PORT of a Ray head, or auto; not {address!r}"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start its head "
            "with `ray start --head --port PORT`, or check the address"
        ) from None


@contextmanager
def _fd_silenced(fd: int) -> Iterator[None]:
    """Whatever this process writes to file descriptor `fd` during the block is dropped."""
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_large(arg: Any) -> bool:
    return isinstance(arg, bytes) and len(arg) > 100_000  # shipped once through the object store


def _node_address() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return _first_line(cause) if isinstance(cause, BaseException) else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """The last non-empty line: Ray's errors put the cause after a traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
