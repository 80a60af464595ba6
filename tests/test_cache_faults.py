"""The download cache under faults: processes that fetch at once, a read-only cache, downloads
killed half-way, a cache shared by a group, and GPT-2 files whose hash the course cannot
check. Each bad case ends in a clear error and leaves the cache as it was."""

import hashlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import pytest

from buildllm import data


def snapshot(folder):
    """Every file under `folder` with its bytes' sha256, to show that nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def python(code, cache, *, read_only=False):
    """Run `code` in a fresh Python on `cache`. With read_only, as a process that file
    permissions bind: root ignores them, so root runs it under setpriv without the two
    capabilities that let it (the test is skipped where root has no setpriv)."""
    command = [sys.executable, "-c", code]
    if read_only and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv is missing: chmod cannot bind this test")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    env = {**os.environ, "BUILDLLM_CACHE": str(cache)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


ENCODE = "from buildllm.data import gpt2_encoding; print(gpt2_encoding().encode('Hello, world'))"


def _encode_on(cache, start, results):
    """In a forked process: wait for the others, then build GPT-2's encoding from `cache`."""
    os.environ["BUILDLLM_CACHE"] = str(cache)
    start.wait()
    try:  # __wrapped__: not the parent's encoding, which the fork copied
        results.put(data.gpt2_encoding.__wrapped__().encode("Hello, world"))
    except Exception as err:  # noqa: BLE001 -- the test shows what went wrong
        results.put(f"{type(err).__name__}: {err}")


@pytest.mark.parametrize("attempt", range(5))
def test_four_processes_on_a_fresh_cache_all_get_gpt2s_encoding(tmp_path, attempt):
    """Forked, so the four start together within a millisecond or so, not a torch import apart."""
    context = multiprocessing.get_context("fork")
    cache, start, results = tmp_path / "cache", context.Barrier(4), context.Queue()
    processes = [context.Process(target=_encode_on, args=(cache, start, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    got = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
    assert got == [[15496, 11, 995]] * 4
    assert snapshot(cache) == {"encoder.json": data.FILES["encoder.json"].sha256}


def test_a_file_another_process_stored_meanwhile_counts_as_success(cache, monkeypatch):
    def lose_the_race(path, write):  # the other process renames first; our rename then fails
        path.parent.mkdir(parents=True)
        write(path)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "write_atomically", lose_the_race)
    path = data.fetch("the-verdict.txt")
    assert data.sha256_of(path) == data.FILES["the-verdict.txt"].sha256


@pytest.fixture
def read_only_cache(cache):
    """A cache that holds verified copies of every registry file, made read-only."""
    for name in data.FILES:
        data.fetch(name)
    cache.chmod(0o555)
    yield cache
    cache.chmod(0o755)


def test_a_read_only_cache_of_verified_files_works(read_only_cache):
    before = snapshot(read_only_cache)
    code = ("from buildllm import data\n"
            "paths = [data.fetch(name) for name in data.FILES]\n" + ENCODE)
    out, err = (process := python(code, read_only_cache, read_only=True)).communicate()
    assert process.returncode == 0, err
    assert out == "[15496, 11, 995]\n"
    assert snapshot(read_only_cache) == before


def test_a_corrupt_file_in_a_read_only_cache_is_refused_in_one_clear_error(read_only_cache):
    read_only_cache.chmod(0o755)
    (read_only_cache / "the-verdict.txt").write_text("bitrot")
    read_only_cache.chmod(0o555)
    before = snapshot(read_only_cache)
    code = ("from buildllm import data\n"
            "try:\n    data.fetch('the-verdict.txt')\n"
            "except data.DownloadError as err:\n    print(str(err).splitlines()[0])")
    out, err = (process := python(code, read_only_cache, read_only=True)).communicate()
    assert process.returncode == 0, err
    assert out.startswith("Could not get 'the-verdict.txt': PermissionError"), out
    assert snapshot(read_only_cache) == before


def test_temporary_files_of_killed_downloads_are_removed_but_not_a_live_one(cache):
    cache.mkdir()
    dead = cache / ".the-verdict.txt.0badf00d.tmp"  # as write_atomically names them
    live = cache / ".the-verdict.txt.5eed5eed.tmp"  # another process writing right now
    other = cache / ".notes.txt.0badf00d.tmp"  # not a download of this file
    for tmp in (dead, live, other):
        tmp.write_bytes(b"half a fi")
    an_hour_ago = time.time() - 3600
    for tmp in (dead, other):
        os.utime(tmp, (an_hour_ago, an_hour_ago))
    data.fetch("the-verdict.txt")
    assert not dead.exists()
    assert live.exists() and other.exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_cached_files_follow_the_umask_so_a_group_can_share_the_cache(cache, umask, mode):
    old = os.umask(umask)
    try:
        path = data.fetch("the-verdict.txt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


# GPT-2's larger sizes: the course pins no hash for them (see data.GPT2Checkpoint).


@pytest.fixture
def by_hand(cache):
    """A stand-in for GPT-2 355M's weights, placed in the cache by hand."""
    cache.mkdir()
    path = cache / "gpt2-355M.safetensors"
    path.write_bytes(b"stand-in for model.safetensors")
    return path


def test_an_unpinned_gpt2_placed_by_hand_is_refused_and_says_how_to_accept_it(by_hand,
                                                                              monkeypatch):
    monkeypatch.delenv("BUILDLLM_GPT2_355M_SHA256", raising=False)
    before = snapshot(by_hand.parent)
    with pytest.raises(data.DownloadError) as refused:
        data.gpt2_weights("355M")
    reason = str(refused.value).splitlines()[0]
    assert "cannot be checked" in reason and "BUILDLLM_GPT2_355M_SHA256" in reason
    assert "huggingface.co/openai-community/gpt2-medium/blob/main/model.safetensors" in reason
    assert snapshot(by_hand.parent) == before


@pytest.mark.parametrize("right", [True, False])
def test_an_unpinned_gpt2_is_checked_against_the_hash_the_learner_gives(by_hand, monkeypatch,
                                                                        right):
    sha256 = hashlib.sha256(by_hand.read_bytes() if right else b"other").hexdigest()
    monkeypatch.setenv("BUILDLLM_GPT2_355M_SHA256", sha256.upper())
    if right:
        assert data.gpt2_weights("355M") == by_hand
    else:
        with pytest.raises(data.DownloadError, match=f"expected {sha256}"):
            data.gpt2_weights("355M")
        assert by_hand.exists(), "a file placed by hand is the learner's: it is never deleted"


@pytest.mark.parametrize("size", ["355M", "774M", "1558M"])
def test_an_unpinned_gpt2_in_the_mirror_is_not_used_unchecked(cache, tmp_path, monkeypatch,
                                                              size):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"gpt2-{size}.safetensors").write_bytes(b"anything")
    monkeypatch.setenv("BUILDLLM_MIRROR", str(mirror))
    monkeypatch.delenv(f"BUILDLLM_GPT2_{size}_SHA256", raising=False)
    with pytest.raises(data.DownloadError, match="cannot be checked"):
        data.gpt2_weights(size)
