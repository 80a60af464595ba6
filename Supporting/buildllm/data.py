"""Every file the course downloads, in one registry (built in Meeting 0).

Each file is pinned by URL, sha256 and size. A download goes to a temporary file,
is checked against its sha256 and only then renamed into the cache, so a corrupt or
half-finished download is never used. `pooch` does the URL downloads and
`huggingface_hub` fetches GPT-2's weights; this module only adds the course's rules.

    >>> path = fetch("the-verdict.txt")          # downloads once, then reads the cache
    >>> enc = gpt2_encoding()                    # tiktoken's GPT-2 BPE, offline-safe

Files are written with your umask, like any other file you create: with the usual 022 the
group and others can read them, so one cache can serve a study group's shared machine.

Two environment variables change where files come from:

    BUILDLLM_CACHE   the cache folder (default: the user's cache folder, e.g. ~/.cache/buildllm)
    BUILDLLM_MIRROR  a folder that holds the exact files; when set, nothing is downloaded
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pooch

from .utils import atomic_leftovers, write_atomically

__all__ = ["FILES", "GPT2_CHECKPOINTS", "DownloadError", "cache_dir", "fetch", "gpt2_encoding",
           "gpt2_weights", "mirror_dir", "sha256_of"]

_STALE_SECONDS = 10 * 60  # a temporary file untouched this long belongs to a killed download


@dataclass(frozen=True)
class RemoteFile:
    """A file on the web that the course uses, pinned so a changed upload is noticed."""

    name: str
    url: str
    sha256: str
    size: int  # bytes


_GPT2_FILES = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
_GITHUB = "https://raw.githubusercontent.com"
_BOOK = f"{_GITHUB}/rasbt/LLMs-from-scratch/main"

FILES: dict[str, RemoteFile] = {
    f.name: f
    for f in [
        RemoteFile(
            "the-verdict.txt", f"{_BOOK}/ch02/01_main-chapter-code/the-verdict.txt",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f", 20_479),
        RemoteFile(
            "tinyshakespeare.txt",
            f"{_GITHUB}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1_115_394),
        RemoteFile(
            # The member of the UCI zip; the mirror holds it unzipped, and so does the cache.
            "SMSSpamCollection",
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d", 477_907),
        RemoteFile(
            "instruction-data.json", f"{_BOOK}/ch07/01_main-chapter-code/instruction-data.json",
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944", 203_524),
        RemoteFile(
            "instruction-data-with-preference.json",
            f"{_BOOK}/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
            "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e", 386_968),
        # GPT-2's tokenizer: the URLs and hashes tiktoken itself uses.
        RemoteFile(
            "encoder.json", f"{_GPT2_FILES}/encoder.json",
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783", 1_042_301),
        RemoteFile(
            "vocab.bpe", f"{_GPT2_FILES}/vocab.bpe",
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5", 456_318),
    ]
}


@dataclass(frozen=True)
class GPT2Checkpoint:
    """OpenAI's GPT-2 weights as Hugging Face serves them (one safetensors file)."""

    size: str  # "124M", "355M", "774M" or "1558M"
    repo_id: str
    revision: str
    # None where no trustworthy source for the hash was at hand: a download is checked
    # against the Hub's own LFS hash, a file placed by hand against $BUILDLLM_GPT2_<SIZE>_SHA256.
    sha256: str | None

    @property
    def filename(self) -> str:
        """The name the file has in the mirror and when placed in the cache by hand."""
        return f"gpt2-{self.size}.safetensors"

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/model.safetensors"


GPT2_CHECKPOINTS: dict[str, GPT2Checkpoint] = {
    c.size: c
    for c in [
        GPT2Checkpoint(
            "124M", "openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e",
            "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
        GPT2Checkpoint("355M", "openai-community/gpt2-medium", "main", None),
        GPT2Checkpoint("774M", "openai-community/gpt2-large", "main", None),
        GPT2Checkpoint("1558M", "openai-community/gpt2-xl", "main", None),
    ]
}


class DownloadError(OSError):
    """A course file could not be had. The message says where to put it by hand."""

    def __init__(self, name: str, url: str, target: Path, reason: str):
        self.name, self.url, self.target = name, url, target
        super().__init__(
            f"Could not get {name!r}: {reason}\n"
            f"  It comes from: {url}\n"
            f"  Download it yourself and save it as: {target}\n"
            f"  (or set BUILDLLM_MIRROR to a folder that holds it)."
        )


def cache_dir() -> Path:
    """The folder downloads are kept in: $BUILDLLM_CACHE, else the user's cache folder."""
    return Path(os.environ.get("BUILDLLM_CACHE") or pooch.os_cache("buildllm")).expanduser()


def mirror_dir() -> Path | None:
    """The offline mirror named by $BUILDLLM_MIRROR, or None when downloads are allowed."""
    mirror = os.environ.get("BUILDLLM_MIRROR")
    return Path(mirror).expanduser().resolve() if mirror else None


def fetch(name: str) -> Path:
    """Return the local path of a registry file, downloading and verifying it if needed.

    A file already in the cache with the right sha256 is used as it is, so a read-only cache
    works. Otherwise the file is written to a temporary file of its own and renamed into
    place only once its sha256 matches; processes fetching at once each do this, and the
    file another process put there first counts as success.

    >>> fetch("the-verdict.txt").read_text()[:20]
    'I HAD always thought'
    """
    if name not in FILES:
        raise KeyError(f"{name!r} is not a course file; the registry has: {', '.join(FILES)}")
    entry = FILES[name]
    target = cache_dir() / name
    _remove_stale_temporaries(target)
    if _intact(target, entry.sha256):
        return target
    try:
        write_atomically(target, lambda tmp: _download_verified(entry, tmp))
    except Exception as err:  # no network, HTTP error, not in the mirror, wrong hash, read-only
        if _intact(target, entry.sha256):  # another process stored it meanwhile
            return target
        reason = str(err) if isinstance(err, _WrongHash) else f"{type(err).__name__}: {err}"
        raise DownloadError(name, entry.url, target, reason) from err
    return target


class _WrongHash(ValueError):
    """A downloaded or mirrored file is not the one the registry pins."""


def _intact(path: Path, sha256: str) -> bool:
    """True if `path` is a file with this sha256 (reading only: a read-only cache is fine)."""
    return path.is_file() and sha256_of(path) == sha256


def _download_verified(entry: RemoteFile, tmp: Path) -> None:
    """Write the file into `tmp` from the mirror or the web; raise _WrongHash if it differs."""
    mirror = mirror_dir()
    if mirror is not None:
        _copy_from(mirror / entry.name)(entry.url, str(tmp), None)
    elif entry.url.endswith(".zip"):
        _download_member(entry.url, entry.name, tmp)
    else:
        pooch.HTTPDownloader(progressbar=True, timeout=60)(entry.url, str(tmp), None)
    actual = sha256_of(tmp)
    if actual != entry.sha256:
        raise _WrongHash(f"its sha256 is wrong: {actual}, expected {entry.sha256}")


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files that downloads of `target` killed long ago left behind.

    One untouched for _STALE_SECONDS is no live download's (a download writes all the time and
    gives up after 60 s without data), so another process's download in progress is never
    touched.
    """
    cutoff = time.time() - _STALE_SECONDS
    for tmp in atomic_leftovers(target.parent, target.name):
        with suppress(OSError):  # gone already, or a read-only cache
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def _copy_from(source: Path):
    """A pooch downloader that copies from the mirror instead of the network."""

    def copy(url: str, output_file: str, _pooch: object) -> None:
        if not source.is_file():
            raise FileNotFoundError(f"{source.name} is not in the mirror {source.parent}")
        shutil.copyfile(source, output_file)

    return copy


def _download_member(url: str, member: str, output_file: Path) -> None:
    """Download the zip at `url` and keep only its `member`, in `output_file`."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive.zip"
        pooch.HTTPDownloader(progressbar=True, timeout=60)(url, str(archive), None)
        with zipfile.ZipFile(archive) as zf, open(output_file, "wb") as out:
            shutil.copyfileobj(zf.open(member), out)


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks so large weights fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gpt2_weights(size: str = "124M") -> Path:
    """Return the path of OpenAI's GPT-2 weights (Hugging Face safetensors layout).

    Looks in the mirror (when set) or in the cache folder first, where a file may be
    placed by hand, then asks the Hugging Face Hub, which caches and resumes. The file
    is used only after its sha256 matches: the pinned one where we have it, otherwise
    the hash the Hub records for the file (its cache names the blob by that hash), or for
    a file placed by hand, the one given in $BUILDLLM_GPT2_<SIZE>_SHA256.

    >>> gpt2_weights("124M").name
    'gpt2-124M.safetensors'
    """
    if size not in GPT2_CHECKPOINTS:
        raise KeyError(f"No GPT-2 of size {size!r}; choose one of {', '.join(GPT2_CHECKPOINTS)}")
    ckpt = GPT2_CHECKPOINTS[size]
    by_hand = cache_dir() / ckpt.filename
    mirror = mirror_dir()
    for local in ([mirror / ckpt.filename] if mirror is not None else []) + [by_hand]:
        if local.is_file():
            return _verified(local, _expected_sha256(ckpt, local), ckpt, by_hand)
    if mirror is not None:
        raise DownloadError(ckpt.filename, ckpt.url, by_hand, f"it is not in the mirror {mirror}")

    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(ckpt.repo_id, "model.safetensors", revision=ckpt.revision))
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        raise DownloadError(ckpt.filename, ckpt.url, by_hand, reason) from err
    blob = path.resolve()  # the Hub's cache names an LFS blob by its sha256
    return _verified(path, ckpt.sha256 or blob.name, ckpt, by_hand, discard=blob)


def _expected_sha256(ckpt: GPT2Checkpoint, local: Path) -> str:
    """The sha256 a GPT-2 file placed by hand (or in the mirror) must have.

    For sizes whose hash the course does not pin, the learner gives it in
    $BUILDLLM_GPT2_<SIZE>_SHA256, read off the Hub's file page; without it the file is refused,
    never used unchecked.
    """
    variable = f"BUILDLLM_GPT2_{ckpt.size}_SHA256"
    expected = ckpt.sha256 or os.environ.get(variable, "").strip().lower()
    if not expected:
        page = f"https://huggingface.co/{ckpt.repo_id}/blob/main/model.safetensors"
        raise DownloadError(ckpt.filename, ckpt.url, local, (
            f"{local} cannot be checked: the course pins no sha256 for GPT-2 {ckpt.size}. Set "
            f"{variable} to the SHA256 shown on {page}, or delete the file and let the Hub "
            "download it (checked against the Hub's own hash)"))
    return expected


def _verified(path: Path, expected: str, ckpt: GPT2Checkpoint, by_hand: Path,
              discard: Path | None = None) -> Path:
    """Return path if its sha256 is as expected; otherwise delete `discard` and raise."""
    actual = sha256_of(path)
    if actual != expected:
        if discard is not None:
            discard.unlink(missing_ok=True)
        reason = f"{path} has sha256 {actual}, expected {expected}"
        raise DownloadError(ckpt.filename, ckpt.url, by_hand, reason)
    return path


@functools.cache
def gpt2_encoding():
    """tiktoken's GPT-2 encoding, built from the registry's verified encoder.json (works offline).

    tiktoken would download the file itself; we hand it the same data instead. encoder.json
    maps each token, in GPT-2's printable spelling, to its id, and for GPT-2 the id is also
    the token's merge rank, which is all tiktoken needs (its own loader checks exactly that).
    Nothing is written but the registry's files, so a read-only cache works too.

    >>> gpt2_encoding().encode("Hello, world")
    [15496, 11, 995]
    """
    import tiktoken

    from .tokenizers.bpe import GPT2_SPLIT_PATTERN, from_printable
    from .tokenizers.protocol import ENDOFTEXT

    vocab = json.loads(fetch("encoder.json").read_text("utf-8"))
    ranks = {from_printable(token): i for token, i in vocab.items() if token != ENDOFTEXT}
    return tiktoken.Encoding("gpt2", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: vocab[ENDOFTEXT]},
                             explicit_n_vocab=len(vocab))
