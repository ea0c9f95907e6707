"""Indexing jobs on a local 2-CPU Ray (one `ray start --head` for the module): the vectors, failures
and ids of a local run; kill -9 of the driver, then a rerun; a model worker killed mid-job.

Every Ray job runs as a real CLI process with a timeout, so a hang fails instead of blocking."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from checkpoints import make_tiny_checkpoint
from indexer_fixtures import draw_photo, make_bad_corpus, make_photo_folder
from ray_cluster import RayCluster

from indexer.ivf import IvfIndex
from indexer.jobs import index_paths
from indexer.library import lock_library, open_library
from indexer.prepare import Work
from indexer.reindex import reindex_library
from indexer.scan import ScannedFile

pytest.importorskip("ray", reason="Ray is not installed (bash scripts/setup.sh --dev installs it)")

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 300
ENV = os.environ | {"PYTHONPATH": str(REPO)}
# The real CLI with each commit slowed down, so that a kill lands in the middle of a job.
SLOW_COMMITS = """
import sys, time
from indexer.store import Store
real = Store.write_batch
Store.write_batch = lambda self, *a, **k: (time.sleep(0.25), real(self, *a, **k))[1]
from siglip_search.cli import main
sys.exit(main(sys.argv[1:]))
"""
ACTOR_TITLE = "MapWorker(MapBatches(_EmbedActor))"


def run_cli(
    *args: str, cluster: RayCluster | None = None, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "siglip_search"]
    env = ENV | (cluster.env if cluster else {})
    return subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )


def library_rows(library_dir: Path) -> list[tuple]:
    """(id, rel_path, status, error, fingerprint, embedding) of every image, by path."""
    with sqlite3.connect(library_dir / "library.db") as conn:
        return conn.execute(
            "SELECT id, rel_path, status, error, fingerprint, embedding FROM images ORDER BY rel_path"
        ).fetchall()


def assert_same_library(ray_dir: Path, local_dir: Path, same_ids: bool = True) -> None:
    """Same photos, statuses, reasons and fingerprints; vectors within 1e-6 (fp32)."""
    ray_rows, local_rows = library_rows(ray_dir), library_rows(local_dir)
    first = 0 if same_ids else 1
    assert [r[first:5] for r in ray_rows] == [r[first:5] for r in local_rows]
    assert len({r[1] for r in ray_rows}) == len(ray_rows)  # nothing twice
    differences = [
        np.abs(np.frombuffer(a[5], np.float32) - np.frombuffer(b[5], np.float32)).max()
        for a, b in zip(ray_rows, local_rows, strict=True)
        if a[5] is not None
    ]
    assert differences and max(differences) <= 1e-6


def index_locally(photos: Path, library_dir: Path, checkpoint: Path, batch_size: int) -> None:
    """A local run in fp32 (the CPU's default here): the Ray jobs pass --mode fp32 to compare."""
    from siglip_search.embedder import Embedder

    library = open_library(library_dir)
    with lock_library(library):
        index_paths(
            library,
            [photos],
            Embedder.from_pretrained(checkpoint),
            batch_size=batch_size,
            progress=False,
        )
    library.close()


def ok_rows(library_dir: Path) -> int:
    try:
        uri = f"file:{library_dir / 'library.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM images WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet


def wait_for(
    condition, process: subprocess.Popen, what: str, timeout_s: float = JOB_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the job ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Path:
    """A bigger random model (224 px, 196 patches): a few ms an image, so a job lasts seconds."""
    vision = {"hidden_size": 96, "intermediate_size": 192, "image_size": 224, "patch_size": 16}
    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("slow-siglip"), seed=3, vision=vision, text={"projection_size": 96}
    )


def test_ray_gives_the_vectors_failures_and_ids_of_a_local_run(
    ray_cluster: RayCluster, tiny_checkpoint, tmp_path
):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 20)
    make_bad_corpus(photos / "bad", tmp_path / "outside")
    index_locally(photos, tmp_path / "local", tiny_checkpoint, batch_size=4)

    job = run_cli(
        *(
            "index",
            str(photos),
            "--library",
            str(tmp_path / "ray"),
            "--model",
            str(tiny_checkpoint),
        ),
        *("--batch-size", "4", "--mode", "fp32", "--no-progress", "--executor", "ray"),
        *("--ray-address", ray_cluster.address),
        cluster=ray_cluster,
    )
    assert job.returncode == 0, job.stderr
    embedded = len([r for r in library_rows(tmp_path / "local") if r[2] == "ok"])
    # The job's report: how many photos each node embedded (one node here).
    assert re.search(rf"; embedded on \S+ {embedded}$", job.stdout.strip()), job.stdout
    assert_same_library(tmp_path / "ray", tmp_path / "local")
    failed = [r for r in library_rows(tmp_path / "ray") if r[2] == "failed"]
    assert {"bad/truncated.jpg", "bad/empty.jpg", "bad/notes.jpg"} <= {r[1] for r in failed}


def test_kill_9_of_the_driver_then_a_rerun_equals_an_uninterrupted_run(
    ray_cluster: RayCluster, tiny_checkpoint, tmp_path
):
    photos = tmp_path / "photos"
    for i in range(60):
        (photos / f"day{i % 3}").mkdir(parents=True, exist_ok=True)
        draw_photo(i, (96, 72)).save(photos / f"day{i % 3}" / f"img_{i:03d}.png")
    killed = tmp_path / "killed"
    args = [
        *("index", str(photos), "--library", str(killed), "--model", str(tiny_checkpoint)),
        *("--batch-size", "4", "--mode", "fp32", "--no-progress", "--executor", "ray"),
        *("--ray-address", ray_cluster.address),
    ]
    driver = subprocess.Popen(
        [sys.executable, "-c", SLOW_COMMITS, *args],
        cwd=REPO,
        env=ENV | ray_cluster.env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: ok_rows(killed) >= 4, driver, "a first committed batch")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    committed = ok_rows(killed)
    assert 4 <= committed < 60

    rerun = run_cli(
        *args[:4], *args[6:], cluster=ray_cluster
    )  # no --model: the library recorded it
    assert rerun.returncode == 0, rerun.stderr
    assert f"added {60 - committed}, updated 0" in rerun.stdout
    index_locally(photos, tmp_path / "local", tiny_checkpoint, batch_size=4)
    assert_same_library(killed, tmp_path / "local")


def test_a_model_worker_killed_mid_job_is_replaced_and_nothing_is_lost_or_twice(
    ray_cluster: RayCluster, slow_checkpoint, tmp_path
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(160):
        draw_photo(i, (96, 72)).save(photos / f"img_{i:03d}.png")
    library_dir = tmp_path / "ray"
    before = set(ray_cluster.processes_titled(ACTOR_TITLE))
    driver = subprocess.Popen(
        [sys.executable, "-m", "siglip_search", "index", str(photos), "--library", str(library_dir)]
        + ["--model", str(slow_checkpoint), "--batch-size", "2", "--mode", "fp32", "--no-progress"]
        + ["--executor", "ray", "--ray-address", ray_cluster.address, "--actors", "1"],
        cwd=REPO,
        env=ENV | ray_cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: ok_rows(library_dir) >= 2, driver, "a first committed batch")
        actors = set(ray_cluster.processes_titled(ACTOR_TITLE)) - before
        assert len(actors) == 1, actors
        os.kill(actors.pop(), signal.SIGKILL)
        assert 2 <= ok_rows(library_dir) < 160  # the job was in its middle
        out, err = driver.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err
    assert "added 160, updated 0" in out
    index_locally(photos, tmp_path / "local", slow_checkpoint, batch_size=2)
    assert_same_library(library_dir, tmp_path / "local")


def test_asking_for_gpus_the_cluster_lacks_is_one_line(
    ray_cluster: RayCluster, tiny_checkpoint, tmp_path
):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 8)
    job = run_cli(
        *(
            "index",
            str(photos),
            "--library",
            str(tmp_path / "lib"),
            "--model",
            str(tiny_checkpoint),
        ),
        *("--executor", "ray", "--ray-address", ray_cluster.address, "--gpus-per-actor", "1"),
        cluster=ray_cluster,
    )
    assert job.returncode == 2
    assert (
        job.stderr.strip()
        .splitlines()[-1]
        .endswith("the Ray cluster has 0 GPUs, not enough for 1 actor(s) x 1 GPU")
    )


def test_without_ray_the_executor_says_how_to_install_it(tiny_checkpoint, tmp_path):
    make_photo_folder(tmp_path / "photos", 8)
    no_ray = "import sys; sys.modules['ray'] = None\n" + "from siglip_search.cli import main\n"
    job = run_cli(
        *("index", str(tmp_path / "photos"), "--library", str(tmp_path / "lib")),
        *("--model", str(tiny_checkpoint), "--executor", "ray"),
        code=no_ray + "sys.exit(main(sys.argv[1:]))",
    )
    assert job.returncode == 2
    assert job.stderr.strip() == (
        "siglip-search: error: --executor ray needs Ray, which is not installed: "
        "pip install 'siglip-search[ray]'"
    )
    unreachable = run_cli(
        *("index", str(tmp_path / "photos"), "--library", str(tmp_path / "lib")),
        *("--executor", "ray", "--ray-address", "127.0.0.1:1"),
    )
    assert unreachable.returncode == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in unreachable.stderr


def test_a_photo_a_node_cannot_see_is_a_failed_row_that_says_so(tiny_checkpoint, tmp_path):
    """What a decode task does with a photo under a folder its node does not have mounted (run
    here: on one machine every node sees every folder)."""
    from indexer.ray_executor import _prepare_rows
    from siglip_search.image_processor import SiglipImageProcessor

    gone = tmp_path / "nas" / "photos"
    work = Work(1, ScannedFile("a/b.jpg", str(gone / "a" / "b.jpg"), 10, 1))
    processor = SiglipImageProcessor.from_pretrained(tiny_checkpoint)
    batch = {"i": np.array([0]), "work": np.array([pickle.dumps(work)], dtype=object)}
    rows = _prepare_rows(batch, processor, (38, 38), None)
    assert not rows["embed"][0]
    assert re.fullmatch(
        rf"cannot read file \(folder {re.escape(str(gone))} is not on Ray node \S+; "
        r"photos must be at the same path on every node\)",
        rows["error"][0],
    )


def test_reindex_fills_its_shards_as_ray_tasks_and_answers_as_a_local_build(
    ray_cluster: RayCluster, tiny_checkpoint, tmp_path
):
    photos = tmp_path / "photos"
    make_photo_folder(photos, 40)
    index_locally(photos, tmp_path / "on-ray", tiny_checkpoint, batch_size=8)
    shutil.copytree(tmp_path / "on-ray", tmp_path / "here")
    factory = "IVF4,PQ12x4"  # the tiny model's 48 dims in 12 sub-quantizers of 4 bits
    job = run_cli(
        *("reindex", "--library", str(tmp_path / "on-ray"), "--shards", "3", "--factory", factory),
        *("--executor", "ray", "--ray-address", ray_cluster.address),
        cluster=ray_cluster,
    )
    assert job.returncode == 0, job.stderr
    assert job.stdout.startswith(f"ivfpq index of 40 photos ({factory}, 3 shards)")
    answers = []
    for name in ("on-ray", "here"):
        with open_library(tmp_path / name, create=False) as library:
            if name == "here":
                reindex_library(library, "ivfpq", shards=3, factory=factory)
            index = library.vector_index()
            assert isinstance(index, IvfIndex)
            queries = np.stack(
                [v for _, vectors in library.store.iter_embeddings() for v in vectors]
            )
            answers.append(index.search(queries, 10))
    np.testing.assert_array_equal(answers[0][1], answers[1][1])
    np.testing.assert_array_equal(answers[0][0], answers[1][0])
