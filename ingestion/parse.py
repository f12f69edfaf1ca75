"""Parse one file into text elements.

Per-type `unstructured` partitioners, nothing that loads a model:

==========================  ====================================================================
type                        how
==========================  ====================================================================
.pdf                        pdfminer.six layout analysis + `unstructured`'s element classifier:
                            the ``fast`` strategy of ``partition_pdf``, without importing
                            ``unstructured-inference`` (which would pull torch / onnx / opencv).
                            Page numbers kept. No OCR: a scanned PDF has no text -> EmptyFile.
.docx / .pptx / .xlsx       ``partition_docx`` / ``partition_pptx`` / ``partition_xlsx``
                            (slide number / sheet index as page number, sheet name as page name)
.html .htm / .md            ``partition_html`` / ``partition_md``
.csv                        ``partition_csv``
.txt (and .text .log .rst)  ``partition_text`` (paragraphs, classified)
.json                       validated with ``json``; the text itself is indexed
source code (.py .js ...)   the text itself, one ``CodeSnippet`` element (layout preserved)
==========================  ====================================================================

Tables (csv, xlsx, tables inside docx/pptx/html) are rendered one row per line, cells joined by
``" | "``, instead of `unstructured`'s space-joined cell text, so rows stay recognisable.

Errors: :class:`~ingestion.errors.UnsupportedFile`, :class:`~ingestion.errors.InvalidFile`,
:class:`~ingestion.errors.EmptyFile` (see ``ingestion/errors.py``).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingestion.errors import EmptyFile, InvalidFile, LimitExceeded, UnsupportedFile

PdfEngine = Literal["pdfium", "pdfminer"]

# `unstructured` phones home on import and on every partition call unless told not to; it also
# prints an advert. Neither belongs in a self-hosted server. (A caller may set them otherwise.)
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")


@dataclass(frozen=True, slots=True)
class Element:
    """One piece of text of a document, in reading order."""

    text: str
    type: str  # unstructured category: Title, NarrativeText, ListItem, Table, CodeSnippet, ...
    page_number: int | None = None  # 1-based page (PDF), slide (PPTX) or sheet (XLSX)
    page_name: str | None = None  # sheet name (XLSX)


# --- file kinds ----------------------------------------------------------------------------------

_DOC_KINDS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "md",
    ".markdown": "md",
    ".csv": "csv",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".rst": "text",
    ".json": "json",
}

CODE_EXTENSIONS = frozenset(
    """
    .py .pyi .js .mjs .cjs .jsx .ts .tsx .java .kt .kts .scala .groovy .c .h .cpp .cc .cxx .hpp
    .hh .hxx .cs .go .rs .rb .php .sh .bash .zsh .fish .ps1 .swift .m .mm .r .jl .lua .pl .pm
    .dart .ex .exs .erl .hs .ml .clj .sql .css .scss .less .vue .svelte .tex .yaml .yml .toml
    .ini .cfg .xml .proto .graphql .tf .dockerfile .mk .cmake .gradle
    """.split()
)

# Names that carry no extension but are source files all the same.
_CODE_FILENAMES = frozenset({"dockerfile", "makefile", "jenkinsfile", "cmakelists.txt"})

_MIME_KINDS = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/csv": "csv",
    "text/plain": "text",
    "application/json": "json",
    "application/javascript": "code",
    "text/javascript": "code",
    "application/x-sh": "code",
    "application/typescript": "code",
    "application/x-python": "code",
    "application/xml": "code",
    "text/xml": "code",
}

_LABELS = {
    "pdf": "a PDF document",
    "docx": "a Word (.docx) document",
    "pptx": "a PowerPoint (.pptx) presentation",
    "xlsx": "an Excel (.xlsx) workbook",
    "html": "an HTML page",
    "md": "a Markdown document",
    "csv": "a CSV file",
    "text": "a text file",
    "json": "a JSON file",
    "code": "a source code file",
}

SUPPORTED_EXTENSIONS = frozenset(_DOC_KINDS) | CODE_EXTENSIONS


def detect_kind(filename: str, mime_type: str | None = None) -> str:
    """The parser to use for ``filename``: the extension decides; the MIME type only when the
    extension is missing or unknown. Raises :class:`UnsupportedFile`."""
    name = Path(filename).name.lower()
    ext = Path(name).suffix
    if ext in _DOC_KINDS:
        return _DOC_KINDS[ext]
    if ext in CODE_EXTENSIONS or name in _CODE_FILENAMES:
        return "code"
    mime = (mime_type or "").split(";")[0].strip().lower()
    if mime in _MIME_KINDS:
        return _MIME_KINDS[mime]
    if mime.startswith("text/x-") or mime.startswith("text/"):
        return "code" if mime.startswith("text/x-") else "text"
    base = Path(filename).name
    what = (
        f"'{ext}' files are" if ext else "files without an extension (and no known MIME type) are"
    )
    raise UnsupportedFile(
        f"{base}: {what} not supported for file search. Supported: .pdf .docx .pptx .xlsx "
        ".html .md .csv .txt .json and source code files "
        "(.py .js .ts .java .c .cpp .go .rs .rb .php .sh ...)."
    )


# --- entry point ---------------------------------------------------------------------------------


def parse_file(
    path: str | os.PathLike[str],
    filename: str | None = None,
    mime_type: str | None = None,
    *,
    max_unzipped_bytes: int | None = None,
    pdf_engine: PdfEngine = "pdfium",
) -> list[Element]:
    """Parse the file at ``path`` into text elements.

    ``filename`` is the user's name for it (its extension picks the parser; defaults to the name
    of ``path``); ``mime_type`` is a fallback when that extension is unknown. With
    ``max_unzipped_bytes``, a .docx/.pptx/.xlsx package whose parts would unpack to more than that
    raises :class:`LimitExceeded` before anything is unpacked. ``pdf_engine`` picks what reads a
    PDF: ``pdfium`` (fast) or ``pdfminer`` (`unstructured`'s layout analysis).
    Synchronous and CPU-bound. Raises :class:`UnsupportedFile`, :class:`InvalidFile` or
    :class:`EmptyFile` for the file's own problems; other exceptions are bugs / server errors.
    """
    path = Path(path)
    name = filename or path.name
    kind = detect_kind(name, mime_type)
    size = path.stat().st_size  # a missing file is the caller's problem, not the user's
    if size == 0:
        raise EmptyFile(f"{name} is empty (0 bytes).")
    _check_signature(path, name, kind, max_unzipped_bytes)

    parser = functools.partial(_parse_pdf, engine=pdf_engine) if kind == "pdf" else _PARSERS[kind]
    try:
        elements = parser(path, name)
    except (InvalidFile, UnsupportedFile):
        raise
    except (MemoryError, RecursionError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the partitioners raise anything on malformed input
        # Never show the server's storage path: the user only knows the file's name.
        detail = " ".join(str(exc).replace(str(path), name).split())[:200] or type(exc).__name__
        raise InvalidFile(f"{name} could not be read as {_LABELS[kind]}: {detail}") from exc

    elements = [e for e in elements if e.text.strip()]
    if not elements:
        hint = " (it may be a scanned PDF; OCR is not supported)" if kind == "pdf" else ""
        raise EmptyFile(f"{name} contains no extractable text{hint}.")
    return elements


# --- signatures ----------------------------------------------------------------------------------

_OOXML_PARTS = {"docx": "word/", "pptx": "ppt/", "xlsx": "xl/"}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _check_signature(path: Path, name: str, kind: str, max_unzipped_bytes: int | None = None) -> None:
    with path.open("rb") as f:
        head = f.read(8192)
    label = _LABELS[kind]
    if kind == "pdf":
        if b"%PDF-" not in head[:1024]:
            raise InvalidFile(f"{name} is not a valid PDF document (no PDF header).")
    elif kind in _OOXML_PARTS:
        if head.startswith(_OLE_MAGIC):
            raise InvalidFile(
                f"{name} is password-protected or in the legacy binary Office format; "
                f"save it as an unencrypted {Path(name).suffix or kind} file."
            )
        if not zipfile.is_zipfile(path):
            raise InvalidFile(
                f"{name} is not {label} (the file is not a valid Office zip package)."
            )
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidFile(f"{name} is not {label}: {exc}") from exc
        names = [info.filename for info in infos]
        # The central directory's sizes, before any part is read: Python's zipfile (which the
        # Office readers use) never inflates a part beyond its declared size, so a zip bomb is
        # refused here, before it can expand.
        unpacked = sum(info.file_size for info in infos)
        if max_unzipped_bytes is not None and unpacked > max_unzipped_bytes:
            raise LimitExceeded(
                "unzipped_size",
                f"{name} would unpack to {unpacked:,} bytes, over the limit of {max_unzipped_bytes:,} bytes "
                f"for {Path(name).suffix or kind} packages.",
            )
        if not any(n.startswith(_OOXML_PARTS[kind]) for n in names):
            raise InvalidFile(
                f"{name} is not {label} (the package has no {_OOXML_PARTS[kind]} part)."
            )
    elif b"\x00" in head and not _is_utf16(head):
        raise InvalidFile(f"{name} looks like a binary file, not {label}.")


def _is_utf16(head: bytes) -> bool:
    return head.startswith((b"\xff\xfe", b"\xfe\xff"))


def _read_text(path: Path, name: str) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig",) + (("utf-16",) if _is_utf16(data[:2]) else ()):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise InvalidFile(f"{name} is not valid text in any known encoding.")
    return str(best)


# --- parsers -------------------------------------------------------------------------------------


def _convert(raw_elements) -> list[Element]:
    """`unstructured` elements -> ours, tables rendered row by row."""
    out: list[Element] = []
    for el in raw_elements:
        category = getattr(el, "category", type(el).__name__)
        if category in ("PageBreak", "Image"):
            continue
        md = el.metadata
        text = el.text or ""
        if category == "Table" and getattr(md, "text_as_html", None):
            text = _table_text(md.text_as_html) or text
        text = text.strip()
        if not text:
            continue
        out.append(
            Element(
                text=text,
                type=category,
                page_number=getattr(md, "page_number", None),
                page_name=getattr(md, "page_name", None),
            )
        )
    return out


def _table_text(html: str) -> str:
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:
        return ""
    lines = []
    for row in root.iter("tr"):
        cells = [" ".join(c.text_content().split()) for c in row if c.tag in ("td", "th")]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _ensure_nlp() -> None:
    from ingestion._nlp import ensure_offline_nlp

    ensure_offline_nlp()


# pdfium is not thread-safe: one PDF at a time per process (it parses hundreds of pages/s).
_PDFIUM_LOCK = threading.Lock()
_PDF_JUNK = str.maketrans({"\r": " ", "\n": " ", "\x02": "", "\ufffe": "", "\xad": ""})


def _classified(text: str, page_number: int) -> Element | None:
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.partition.text import element_from_text

    text = clean_extra_whitespace(text)
    if not text:
        return None
    return Element(text=text, type=element_from_text(text).category, page_number=page_number)


def _parse_pdf(path: Path, name: str, engine: PdfEngine = "pdfium") -> list[Element]:
    _ensure_nlp()
    if engine == "pdfminer":
        return _parse_pdf_pdfminer(path, name)
    return _parse_pdf_pdfium(path, name)


def _parse_pdf_pdfium(path: Path, name: str) -> list[Element]:
    """Text lines from PDFium, grouped into paragraphs by their geometry (vertical gaps, font
    height changes, column jumps), each classified like `unstructured`'s fast strategy does."""
    import pypdfium2 as pdfium

    out: list[Element] = []
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise InvalidFile(
                    f"{name} is password-protected; upload an unprotected copy."
                ) from exc
            raise
        try:
            for index in range(len(pdf)):
                page = pdf[index]
                textpage = page.get_textpage()
                try:
                    for paragraph in _pdfium_paragraphs(textpage):
                        el = _classified(paragraph, index + 1)
                        if el is not None:
                            out.append(el)
                finally:
                    textpage.close()
                    page.close()
        finally:
            pdf.close()
    return out


def _pdfium_paragraphs(textpage) -> list[str]:
    """Group PDFium's text segments into lines (same baseline) and lines into paragraphs: a new
    paragraph starts at a change of font size, a jump upwards (next column) or a baseline pitch
    clearly larger than the page's usual line pitch."""
    import ctypes
    import statistics

    import pypdfium2.raw as pdfium_c

    x, y = ctypes.c_double(), ctypes.c_double()
    lines: list[list] = []  # [baseline, font_size, text]
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = textpage.get_text_bounded(left, bottom, right, top).translate(_PDF_JUNK).strip()
        if not text:
            continue
        index = textpage.get_index(left + 0.5, (bottom + top) / 2, 2, 2)
        if (
            index is not None
            and index >= 0
            and pdfium_c.FPDFText_GetCharOrigin(
                textpage.raw, index, ctypes.byref(x), ctypes.byref(y)
            )
        ):
            baseline, size = y.value, pdfium_c.FPDFText_GetFontSize(textpage.raw, index)
        else:
            baseline, size = bottom, top - bottom
        size = max(size, 1.0)
        if lines and abs(lines[-1][0] - baseline) < 0.3 * size:
            lines[-1][2] += " " + text  # same line, another segment
        else:
            lines.append([baseline, size, text])

    def same_size(a, b):
        return abs(a[1] - b[1]) <= 0.1 * max(a[1], b[1])

    pitches = [
        a[0] - b[0]
        for a, b in zip(lines, lines[1:])
        if same_size(a, b) and 0 < a[0] - b[0] < 3 * a[1]
    ]
    usual = statistics.median(pitches) if pitches else None

    paragraphs: list[str] = []
    prev = None
    for line in lines:
        baseline, size, text = line
        if prev is None:
            paragraphs.append(text)
        else:
            pitch = prev[0] - baseline
            limit = 1.3 * usual if usual else 1.5 * size
            if not same_size(prev, line) or pitch <= 0 or pitch > max(limit, 1.05 * size):
                paragraphs.append(text)
            else:
                joiner = "" if paragraphs[-1].endswith("-") and text[:1].islower() else " "
                paragraphs[-1] += joiner + text
        prev = line
    return paragraphs


def _parse_pdf_pdfminer(path: Path, name: str) -> list[Element]:
    """`unstructured`'s fast strategy: pdfminer.six layout boxes, each classified."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTTextContainer
    from pdfminer.pdfdocument import PDFPasswordIncorrect

    out: list[Element] = []
    try:
        for page_number, layout in enumerate(extract_pages(path, laparams=LAParams()), start=1):
            for obj in layout:
                if isinstance(obj, LTTextContainer):
                    el = _classified(obj.get_text(), page_number)
                    if el is not None:
                        out.append(el)
    except PDFPasswordIncorrect as exc:
        raise InvalidFile(f"{name} is password-protected; upload an unprotected copy.") from exc
    return out


def _parse_docx(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.docx import partition_docx

    return _convert(partition_docx(filename=str(path), languages=["eng"]))


def _parse_pptx(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.pptx import partition_pptx

    return _convert(partition_pptx(filename=str(path), languages=["eng"]))


def _parse_xlsx(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.xlsx import partition_xlsx

    return _convert(partition_xlsx(filename=str(path), languages=["eng"]))


def _parse_csv(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.csv import partition_csv

    return _convert(partition_csv(filename=str(path), include_header=True, languages=["eng"]))


def _parse_html(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.html import partition_html

    return _convert(partition_html(text=_read_text(path, name), languages=["eng"]))


def _parse_md(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.md import partition_md

    return _convert(partition_md(text=_read_text(path, name), languages=["eng"]))


def _parse_text(path: Path, name: str) -> list[Element]:
    _ensure_nlp()
    from unstructured.partition.text import partition_text

    return _convert(partition_text(text=_read_text(path, name), languages=["eng"]))


def _parse_json(path: Path, name: str) -> list[Element]:
    text = _read_text(path, name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidFile(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from exc
    if text.count("\n") < 2 and len(text) > 1000:  # minified: give the chunker lines to cut at
        text = json.dumps(value, indent=1, ensure_ascii=False)
    return [Element(text=text, type="Text")]


def _parse_code(path: Path, name: str) -> list[Element]:
    return [Element(text=_read_text(path, name), type="CodeSnippet")]


_PARSERS: dict[str, Callable[[Path, str], list[Element]]] = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "pptx": _parse_pptx,
    "xlsx": _parse_xlsx,
    "csv": _parse_csv,
    "html": _parse_html,
    "md": _parse_md,
    "text": _parse_text,
    "json": _parse_json,
    "code": _parse_code,
}
