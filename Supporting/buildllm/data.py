"""Every file the course downloads, in one registry (built in Meeting 0).

Each file is pinned by URL, sha256 and size. A download goes to a temporary file,
is checked against its sha256 and only then renamed into the cache, so a corrupt or
half-finished download is never used. `pooch` does the URL downloads and
`huggingface_hub` fetches GPT-2's weights; this module only adds the course's rules.

    >>> path = fetch("the-verdict.txt")          # downloads once, then reads the cache
    >>> enc = gpt2_encoding()                    # tiktoken's GPT-2 BPE, offline-safe

Two environment variables change where files come from:

    BUILDLLM_CACHE   the cache folder (default: the user's cache folder, e.g. ~/.cache/buildllm)
    BUILDLLM_MIRROR  a folder that holds the exact files; when set, nothing is downloaded
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pooch

from .utils import write_atomically

__all__ = ["FILES", "GPT2_CHECKPOINTS", "DownloadError", "cache_dir", "fetch", "gpt2_encoding",
           "gpt2_weights", "mirror_dir", "seed_tiktoken_cache", "sha256_of"]


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
        # GPT-2's tokenizer. These are the URLs and hashes tiktoken itself uses, which is
        # what lets seed_tiktoken_cache() hand them to tiktoken.
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
    sha256: str | None  # None: checked against the Hub's own LFS hash instead

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

    >>> fetch("the-verdict.txt").read_text()[:20]
    'I HAD always thought'
    """
    if name not in FILES:
        raise KeyError(f"{name!r} is not a course file; the registry has: {', '.join(FILES)}")
    entry = FILES[name]
    cache = cache_dir()
    mirror = mirror_dir()
    logger = pooch.get_logger()
    level = logger.level
    if mirror is not None:
        downloader = _copy_from(mirror / name)
        logger.setLevel("WARNING")  # pooch would announce a "download" that is really a copy
    elif entry.url.endswith(".zip"):
        downloader = _unzip_member(name)
    else:
        downloader = pooch.HTTPDownloader(progressbar=True, timeout=60)
    try:
        path = pooch.retrieve(
            entry.url, f"sha256:{entry.sha256}", fname=name, path=cache, downloader=downloader
        )
    except ValueError as err:  # pooch's word for a sha256 mismatch; the bad file is already gone
        raise DownloadError(name, entry.url, cache / name, f"its sha256 is wrong ({err})") from err
    except Exception as err:  # no network, HTTP error, missing from the mirror, ...
        reason = f"{type(err).__name__}: {err}"
        raise DownloadError(name, entry.url, cache / name, reason) from err
    finally:
        logger.setLevel(level)
    return Path(path)


def _copy_from(source: Path):
    """A pooch downloader that copies from the mirror instead of the network."""

    def copy(url: str, output_file: str, _pooch: object) -> None:
        if not source.is_file():
            raise FileNotFoundError(f"{source.name} is not in the mirror {source.parent}")
        shutil.copyfile(source, output_file)

    return copy


def _unzip_member(member: str):
    """A pooch downloader that downloads a zip and keeps only one member of it."""

    def download(url: str, output_file: str, pooch_obj: object) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "archive.zip"
            pooch.HTTPDownloader(progressbar=True, timeout=60)(url, str(archive), pooch_obj)
            with zipfile.ZipFile(archive) as zf, open(output_file, "wb") as out:
                shutil.copyfileobj(zf.open(member), out)

    return download


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
    the hash the Hub records for the file (its cache names the blob by that hash).

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
            return _verified(local, ckpt.sha256, ckpt, by_hand)
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


def _verified(path: Path, expected: str | None, ckpt: GPT2Checkpoint, by_hand: Path,
              discard: Path | None = None) -> Path:
    """Return path if its sha256 is as expected; otherwise delete `discard` and raise."""
    if expected is None:  # a file placed by hand for a size with no pinned hash
        return path
    actual = sha256_of(path)
    if actual != expected:
        if discard is not None:
            discard.unlink(missing_ok=True)
        reason = f"{path} has sha256 {actual}, expected {expected}"
        raise DownloadError(ckpt.filename, ckpt.url, by_hand, reason)
    return path


def seed_tiktoken_cache() -> Path:
    """Put GPT-2's tokenizer files where tiktoken looks, so it never needs the network.

    tiktoken caches each file under the sha1 of its URL, in $TIKTOKEN_CACHE_DIR. We point
    that variable at our cache (unless you set it) and copy the registry's verified files in.
    """
    target = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache_dir() / "tiktoken")))
    for name in ("encoder.json", "vocab.bpe"):
        key = hashlib.sha1(FILES[name].url.encode()).hexdigest()
        if not (target / key).is_file():  # atomic: tiktoken never sees half a file
            write_atomically(target / key, lambda tmp, name=name: shutil.copyfile(fetch(name), tmp))
    return target


def gpt2_encoding():
    """tiktoken's GPT-2 encoding, loaded from the course cache or mirror.

    >>> gpt2_encoding().encode("Hello, world")
    [15496, 11, 995]
    """
    import tiktoken

    seed_tiktoken_cache()
    return tiktoken.get_encoding("gpt2")
