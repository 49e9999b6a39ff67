"""LibreOffice help from Debian's ``libreoffice-help-<lang>`` packages: download, unpack, pair by paragraph id.

Every help page exists once per language under ``usr/share/libreoffice/help/<LANG>/text/...``, and each
translatable paragraph carries the same ``id`` (``par_id…``/``hd_id…``) in every language, so an English
paragraph and its translation are paired exactly by (page, id, occurrence) -- no sentence aligner needed.
The text is MPL-2.0; :func:`fetch_help` keeps each package's ``copyright`` file next to the text.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from speechkit.errors import DataError

# speechkit language -> (Debian package suffix, help folder). pt is Brazilian: its help is the most
# complete Portuguese one (17k pairs against 12k for European pt) and it is read with the pt-br voice.
HELP_LANGS: dict[str, tuple[str, str]] = {
    "en": ("en-us", "en-US"),
    "de": ("de", "de"),
    "fr": ("fr", "fr"),
    "it": ("it", "it"),
    "es": ("es", "es"),
    "pt": ("pt-br", "pt-BR"),
    "ja": ("ja", "ja"),
    "zh": ("zh-cn", "zh-CN"),
}
HELP_ROOT = Path("usr/share/libreoffice/help")
_TEXT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "td", "li"}
_SKIP_TAGS = {"script", "style"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

ParagraphKey = tuple[str, str, int]  # (page path under text/, paragraph id, occurrence of that id on the page)


@dataclass(frozen=True)
class HelpPair:
    """One English paragraph and its translation, from the same page and paragraph id."""

    key: ParagraphKey
    en: str
    other: str


def package_name(lang: str) -> str:
    """Debian package holding the help of ``lang`` (a speechkit language code)."""
    if lang not in HELP_LANGS:
        raise DataError(f"no LibreOffice help package known for language {lang!r}; known: {sorted(HELP_LANGS)}")
    return f"libreoffice-help-{HELP_LANGS[lang][0]}"


def fetch_help(langs: list[str], cache: Path) -> Path:
    """Download (``apt-get download``) and unpack (``dpkg-deb -x``) the help packages into ``cache/root``.

    Idempotent: a package whose help folder is already unpacked is skipped, so a second run needs no
    network. Needs ``apt-get update`` to have run once on the machine. Returns the unpacked root.
    """
    cache = cache.resolve()  # dpkg-deb runs inside debs/, so relative paths would point elsewhere
    root = cache / "root"
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        if help_dir(root, lang).is_dir():
            continue
        name = package_name(lang)
        _run(["apt-get", "download", name], cwd=debs, what=f"download {name} (run 'apt-get update' first?)")
        found = sorted(debs.glob(f"{name}_*.deb"))
        if not found:
            raise DataError(f"{debs}: apt-get download {name} left no .deb")
        _run(["dpkg-deb", "-x", str(found[-1]), str(root)], cwd=debs, what=f"unpack {found[-1].name}")
    return root


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    if shutil.which(cmd[0]) is None:
        raise DataError(f"{cmd[0]} not found: preparing the demo corpus needs a Debian-based machine")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DataError(f"could not {what}: {last}")


def help_dir(root: Path, lang: str) -> Path:
    """The ``text/`` folder of one language's help under an unpacked root."""
    return root / HELP_ROOT / HELP_LANGS[lang][1] / "text"


def package_version(cache: Path, lang: str) -> str:
    """Debian version of the help package downloaded into ``cache/debs`` (from the .deb name); '' if none."""
    found = sorted((cache / "debs").glob(f"{package_name(lang)}_*.deb"))
    return found[-1].name.split("_")[1].replace("%3a", ":") if found else ""


@dataclass
class _Open:
    tag: str
    skipping: bool
    buffer: list[str] | None  # text of an id'd paragraph opened by this tag
    switch_taken: bool = False  # for a ``switchinline`` span: one alternative already kept


class _ParagraphParser(HTMLParser):
    """Collects the text of id'd paragraphs, leaving out scripts and styles.

    Application- and platform-specific words sit in ``<span class="switchinline">`` as hidden alternatives
    (Impress/Draw, macOS/default keys) that the page's script picks from. Keeping all would put both
    spellings into one sentence and dropping all leaves holes, so the first non-macOS one is kept.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[tuple[str, str]] = []
        self._stack: list[_Open] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID_TAGS:
            if tag == "br":
                self._text(" ")
            return
        names = dict(attrs)
        parent = self._stack[-1] if self._stack else None
        skipping = bool(parent and parent.skipping) or tag in _SKIP_TAGS
        if not skipping and "hidden" in names:
            keep = parent is not None and not parent.switch_taken and names.get("class") != "MAC"
            if parent is not None and keep:
                parent.switch_taken = True
            skipping = not keep
        pid = names.get("id") or ""
        buffer = [pid + "\0"] if tag in _TEXT_TAGS and pid.startswith(("par_id", "hd_id")) and not skipping else None
        self._stack.append(_Open(tag, skipping, buffer))

    def handle_endtag(self, tag: str) -> None:
        # generated pages are well formed; tolerate a stray end tag by unwinding to its start tag
        if not any(frame.tag == tag for frame in self._stack):
            return
        while self._stack:
            frame = self._stack.pop()
            if frame.buffer is not None:
                pid, _, text = "".join(frame.buffer).partition("\0")
                self.paragraphs.append((pid, " ".join(text.split())))
            if frame.tag == tag:
                return

    def handle_data(self, data: str) -> None:
        self._text(data)

    def _text(self, data: str) -> None:
        if not self._stack or self._stack[-1].skipping:
            return
        for frame in reversed(self._stack):  # text belongs to the innermost id'd paragraph
            if frame.buffer is not None:
                frame.buffer.append(data)
                return


def read_page(html: str, page: str) -> dict[ParagraphKey, str]:
    """Paragraph texts of one help page keyed by (page, id, occurrence); empty paragraphs left out."""
    parser = _ParagraphParser()
    parser.feed(html)
    parser.close()
    seen: dict[str, int] = {}
    out: dict[ParagraphKey, str] = {}
    for pid, text in parser.paragraphs:
        n = seen.get(pid, 0)
        seen[pid] = n + 1
        if text:
            out[(page, pid, n)] = text
    return out


def read_help(text_dir: Path) -> dict[ParagraphKey, str]:
    """All paragraphs of one language's help folder (``.../help/<LANG>/text``)."""
    if not text_dir.is_dir():
        raise DataError(f"{text_dir}: help folder not found (was the package unpacked?)")
    out: dict[ParagraphKey, str] = {}
    for path in sorted(text_dir.rglob("*.html")):
        out.update(read_page(path.read_text("utf-8", errors="replace"), path.relative_to(text_dir).as_posix()))
    return out


def pair_paragraphs(en: dict[ParagraphKey, str], other: dict[ParagraphKey, str]) -> Iterator[HelpPair]:
    """English/other pairs sharing a key, in English key order; keys present on one side only are dropped."""
    for key in sorted(en.keys() & other.keys()):
        yield HelpPair(key, en[key], other[key])
