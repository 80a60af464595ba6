"""The download registry: verified files, a usable offline mirror, clear errors."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildllm import data


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """Every registry file, fetched once (from $BUILDLLM_MIRROR in CI, else the network).

    The folder then serves as a known-good mirror for the tests below.
    """
    folder = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUILDLLM_CACHE", str(folder))
        for name in data.FILES:
            data.fetch(name)
    return folder


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An empty mirror folder that the registry is told to read from."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    monkeypatch.setenv("BUILDLLM_MIRROR", str(folder))
    return folder


def test_every_registry_file_matches_its_sha256_and_size(real_files):
    for entry in data.FILES.values():
        path = real_files / entry.name
        assert path.stat().st_size == entry.size, entry.name
        assert data.sha256_of(path) == entry.sha256, entry.name


def test_mirror_hit_is_copied_into_the_cache_and_used(cache, monkeypatch, real_files):
    monkeypatch.setenv("BUILDLLM_MIRROR", str(real_files))
    path = data.fetch("the-verdict.txt")
    assert path == cache / "the-verdict.txt"
    assert path.read_bytes() == (real_files / "the-verdict.txt").read_bytes()


def test_file_placed_by_hand_in_the_cache_is_used(cache, mirror, real_files):
    entry = data.FILES["the-verdict.txt"]
    cache.mkdir()
    content = (real_files / entry.name).read_bytes()
    (cache / entry.name).write_bytes(content)  # the mirror is empty, so only the cache can serve it
    assert data.fetch(entry.name).read_bytes() == content


def test_wrong_hash_in_the_mirror_is_rejected_and_not_kept(cache, mirror):
    (mirror / "the-verdict.txt").write_text("not the verdict")
    with pytest.raises(data.DownloadError, match="sha256"):
        data.fetch("the-verdict.txt")
    assert not any(cache.iterdir()), "a file with the wrong hash was left in the cache"


def test_corrupt_file_in_the_cache_is_replaced_not_used(cache, monkeypatch, real_files):
    monkeypatch.setenv("BUILDLLM_MIRROR", str(real_files))
    cache.mkdir()
    (cache / "the-verdict.txt").write_text("truncated")
    path = data.fetch("the-verdict.txt")
    assert data.sha256_of(path) == data.FILES["the-verdict.txt"].sha256


def test_missing_file_with_no_network_names_file_url_and_where_to_put_it(cache, monkeypatch):
    monkeypatch.delenv("BUILDLLM_MIRROR", raising=False)
    # Port 9 on loopback refuses at once: a stand-in for "no network" that never leaves the machine.
    entry = data.RemoteFile("the-verdict.txt", "http://127.0.0.1:9/the-verdict.txt", "0" * 64, 1)
    monkeypatch.setitem(data.FILES, entry.name, entry)
    with pytest.raises(data.DownloadError) as info:
        data.fetch(entry.name)
    message = str(info.value)
    assert "'the-verdict.txt'" in message
    assert entry.url in message
    assert str(cache / "the-verdict.txt") in message


def test_missing_file_in_the_mirror_gives_the_same_clear_error(cache, mirror):
    with pytest.raises(data.DownloadError, match="not in the mirror") as info:
        data.fetch("tinyshakespeare.txt")
    assert data.FILES["tinyshakespeare.txt"].url in str(info.value)


def test_interrupted_download_leaves_nothing_behind(cache, mirror, monkeypatch):
    def half_then_die(source):
        def copy(url, output_file, _):
            Path(output_file).write_bytes(b"half a fi")
            raise KeyboardInterrupt  # the learner pressed stop mid-download

        return copy

    monkeypatch.setattr(data, "_copy_from", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        data.fetch("the-verdict.txt")
    assert list(cache.rglob("*")) == []


def test_unknown_name_lists_the_registry():
    with pytest.raises(KeyError, match="the-verdict.txt"):
        data.fetch("the-verdict.md")


def test_tiktoken_gpt2_works_offline_and_writes_only_the_registry_file(tmp_path, real_files):
    """In a fresh process with no network route, tiktoken's GPT-2 comes from our verified
    encoder.json, and the cache then holds that file and nothing else."""
    code = (
        "import socket\n"
        "def no_network(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = no_network\n"
        "from buildllm.data import gpt2_encoding\n"
        "enc = gpt2_encoding()\n"
        "print(enc.encode('Hello, world. <|endoftext|>', allowed_special='all'))\n"
    )
    env = {**os.environ, "BUILDLLM_CACHE": str(tmp_path), "BUILDLLM_MIRROR": str(real_files)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[15496, 11, 995, 13, 220, 50256]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.json"]


def test_gpt2_encoding_has_the_token_ranks_tiktokens_own_loader_reads(real_files, tmp_path,
                                                                      monkeypatch):
    """gpt2_encoding() reads encoder.json itself; tiktoken's loader, given the same two files,
    must find the same token for every rank (it also checks them against the merges)."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # where tiktoken copies them
    ranks = data_gym_to_mergeable_bpe_ranks(str(real_files / "vocab.bpe"),
                                            str(real_files / "encoder.json"))
    enc = data.gpt2_encoding()
    assert [enc.decode_single_token_bytes(i) for i in range(len(ranks))] == sorted(ranks,
                                                                                  key=ranks.get)
    assert (enc.n_vocab, enc.eot_token) == (len(ranks) + 1, len(ranks))


# GPT-2 weights: the real files are 0.5 to 6 GB, so these tests use small stand-ins.


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    """Register a 124M entry whose pinned hash is that of a small file we write."""
    blob = b"stand-in for model.safetensors"
    ckpt = data.GPT2Checkpoint(
        "124M", "openai-community/gpt2", "main", hashlib.sha256(blob).hexdigest()
    )
    monkeypatch.setitem(data.GPT2_CHECKPOINTS, "124M", ckpt)
    return blob


def test_gpt2_weights_come_from_the_mirror_when_their_hash_matches(cache, mirror, tiny_checkpoint):
    (mirror / "gpt2-124M.safetensors").write_bytes(tiny_checkpoint)
    assert data.gpt2_weights("124M").read_bytes() == tiny_checkpoint


def test_gpt2_weights_placed_by_hand_with_a_wrong_hash_are_refused(cache, mirror, tiny_checkpoint):
    cache.mkdir()
    (cache / "gpt2-124M.safetensors").write_bytes(b"something else")
    with pytest.raises(data.DownloadError, match="expected"):
        data.gpt2_weights("124M")


def test_gpt2_weights_offline_and_not_cached_raise_the_clear_error(cache, monkeypatch, tmp_path):
    monkeypatch.delenv("BUILDLLM_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(data.DownloadError) as info:
        data.gpt2_weights("355M")
    message = str(info.value)
    assert "huggingface.co/openai-community/gpt2-medium" in message
    assert str(cache / "gpt2-355M.safetensors") in message


@pytest.mark.parametrize("intact", [True, False])
def test_gpt2_weights_from_the_hub_cache_are_checked_against_the_blob_hash(
    cache, monkeypatch, tmp_path, intact
):
    """The Hub's cache names an LFS blob by its sha256: a blob that does not hash to its
    name is corrupt, and is deleted so the next call downloads it again."""
    monkeypatch.delenv("BUILDLLM_MIRROR", raising=False)
    weights = b"good weights"
    blob = tmp_path / "blobs" / hashlib.sha256(weights).hexdigest()
    blob.parent.mkdir()
    blob.write_bytes(weights if intact else b"bitrot")
    snapshot = tmp_path / "snapshots" / "model.safetensors"
    snapshot.parent.mkdir()
    snapshot.symlink_to(blob)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: str(snapshot))
    if intact:
        assert data.gpt2_weights("774M").read_bytes() == weights
    else:
        with pytest.raises(data.DownloadError, match="expected"):
            data.gpt2_weights("774M")
        assert not blob.exists(), "the corrupt blob was kept"


def test_every_gpt2_size_is_registered_with_its_hub_repository():
    assert list(data.GPT2_CHECKPOINTS) == ["124M", "355M", "774M", "1558M"]
    for ckpt in data.GPT2_CHECKPOINTS.values():
        assert ckpt.repo_id.startswith("openai-community/gpt2")
        assert ckpt.url.endswith("/model.safetensors")
