"""ingestion/: parsing every supported type, token chunking, typed errors, offline embeddings.

Every document is generated here (reportlab, python-docx, python-pptx, openpyxl, plain text).
No server, no database, no network: a guard makes any socket connection fail the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ingestion
from ingestion import (
    Chunk,
    ChunkingStrategy,
    EmptyFile,
    InvalidChunkingStrategy,
    InvalidFile,
    UnsupportedFile,
    chunk_elements,
    count_tokens,
    embed_chunks,
    embeddings_from_settings,
    ingest_file,
    parse_file,
)
from ingestion.parse import Element

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Ingestion must never reach the network (model hubs, tiktoken BPE, spaCy models, telemetry)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- generated documents -------------------------------------------------------------------------

SENTINELS = {
    "pdf": "The lighthouse access code is AMBER-4471.",
    "docx": "The docx vault number is OSPREY-9120.",
    "pptx": "The slide password is WALRUS-3386.",
    "xlsx": "HERON-5512",
    "html": "The html sentinel is PUFFIN-7730.",
    "md": "The markdown sentinel is BADGER-2208.",
    "csv": "FALCON-6649",
    "json": "LYNX-4051",
    "py": "GECKO-9917",
    "txt": "The text sentinel is OTTER-1175.",
}


def _make_pdf(path: Path) -> None:
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=letter)
    c.setFont("Helvetica-Bold", 16)
    c.drawString(72, 720, "Annual Maintenance Report")
    c.setFont("Helvetica", 11)
    c.drawString(72, 690, "The first page describes the inspection schedule of the island.")
    c.showPage()
    c.setFont("Helvetica", 11)
    c.drawString(72, 720, "The second page holds the access details for the keepers.")
    c.drawString(72, 706, SENTINELS["pdf"])
    c.showPage()
    c.save()


def _make_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Vault Procedures", level=1)
    d.add_paragraph(f"This document explains how the vault is opened. {SENTINELS['docx']}")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Room", "Keyholder"
    table.cell(1, 0).text, table.cell(1, 1).text = "B12", "Marguerite"
    d.save(str(path))


def _make_pptx(path: Path) -> None:
    from pptx import Presentation

    prs = Presentation()
    first = prs.slides.add_slide(prs.slide_layouts[1])
    first.shapes.title.text = "Quarterly Kickoff"
    first.placeholders[1].text = "Welcome to the planning session."
    second = prs.slides.add_slide(prs.slide_layouts[1])
    second.shapes.title.text = "Security"
    second.placeholders[1].text = SENTINELS["pptx"]
    prs.save(str(path))


def _make_xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Summary"
    ws.append(["Quarter", "Revenue"])
    ws.append(["Q1", 120])
    inv = wb.create_sheet("Inventory")
    inv.append(["Item", "Code"])
    inv.append(["Compass", SENTINELS["xlsx"]])
    wb.save(str(path))


DOC_MAKERS = {
    "report.pdf": _make_pdf,
    "vault.docx": _make_docx,
    "deck.pptx": _make_pptx,
    "book.xlsx": _make_xlsx,
}

TEXT_DOCS = {
    "page.html": (
        "<html><head><title>Seabirds</title></head><body><h1>Seabirds</h1>"
        f"<p>Puffins nest on cliffs. {SENTINELS['html']}</p>"
        "<ul><li>Gannet</li><li>Fulmar</li></ul></body></html>"
    ),
    "notes.md": (
        "# Forest notes\n\nBadgers dig setts in woodland.\n\n"
        f"{SENTINELS['md']}\n\n- first item\n- second item\n"
    ),
    "codes.csv": f"city,code\nParis,FALCON-0001\nLyon,{SENTINELS['csv']}\n",
    "config.json": json.dumps({"service": "archive", "secret": SENTINELS["json"], "items": [1, 2]}),
    "tool.py": (f"def compute():\n    # the python sentinel is {SENTINELS['py']}\n    return 42\n"),
    "readme.txt": f"Otters live near rivers and eat fish.\n\n{SENTINELS['txt']}\n",
}


@pytest.fixture(scope="session")
def docs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("docs")
    out = {}
    for name, make in DOC_MAKERS.items():
        make(root / name)
        out[name] = root / name
    for name, text in TEXT_DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
        out[name] = root / name
    return out


def _all_text(elements: list[Element]) -> str:
    return "\n".join(e.text for e in elements)


# --- parsing -------------------------------------------------------------------------------------

PARSE_CASES = [
    ("report.pdf", "pdf"),
    ("vault.docx", "docx"),
    ("deck.pptx", "pptx"),
    ("book.xlsx", "xlsx"),
    ("page.html", "html"),
    ("notes.md", "md"),
    ("codes.csv", "csv"),
    ("config.json", "json"),
    ("tool.py", "py"),
    ("readme.txt", "txt"),
]


@pytest.mark.parametrize("name,key", PARSE_CASES)
def test_parse_finds_sentinel(docs, name, key):
    elements = parse_file(docs[name], name)
    assert elements and all(isinstance(e, Element) and e.text.strip() for e in elements)
    assert SENTINELS[key] in _all_text(elements)


def test_pdf_keeps_page_numbers_with_both_engines(docs):
    for engine in ("pdfium", "pdfminer"):
        elements = parse_file(docs["report.pdf"], "report.pdf", pdf_engine=engine)
        hit = [e for e in elements if SENTINELS["pdf"] in e.text]
        assert hit and hit[0].page_number == 2, engine
        assert {e.page_number for e in elements} == {1, 2}, engine
        title = [e for e in elements if e.text == "Annual Maintenance Report"]
        assert title and title[0].type == "Title", engine


def test_pptx_slides_and_xlsx_sheets_are_pages(docs):
    slides = parse_file(docs["deck.pptx"], "deck.pptx")
    assert [e.page_number for e in slides if SENTINELS["pptx"] in e.text] == [2]
    sheets = parse_file(docs["book.xlsx"], "book.xlsx")
    table = [e for e in sheets if SENTINELS["xlsx"] in e.text]
    assert len(table) == 1 and table[0].type == "Table"
    assert table[0].page_name == "Inventory" and table[0].page_number == 2
    assert "Compass | HERON-5512" in table[0].text  # one row per line, cells " | "-joined


def test_docx_tables_render_row_by_row(docs):
    elements = parse_file(docs["vault.docx"], "vault.docx")
    assert "B12 | Marguerite" in _all_text(elements)
    assert elements[0].type == "Title" and elements[0].text == "Vault Procedures"


def test_source_code_keeps_its_layout(docs):
    (element,) = parse_file(docs["tool.py"], "tool.py")
    assert element.type == "CodeSnippet"
    assert element.text.startswith("def compute():\n    # the python sentinel")


def test_mime_type_is_the_fallback_for_unknown_extensions(docs, tmp_path):
    path = tmp_path / "upload"
    path.write_bytes(docs["readme.txt"].read_bytes())
    assert SENTINELS["txt"] in _all_text(parse_file(path, "NOTES", "text/plain"))
    with pytest.raises(UnsupportedFile):
        parse_file(path, "NOTES")
    with pytest.raises(UnsupportedFile):
        parse_file(path, "NOTES", "application/octet-stream")


# --- errors --------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name,data",
    [
        ("random.pdf", os.urandom(4096)),
        ("truncated.pdf", b"%PDF-1.7\n" + os.urandom(4096)),
        ("random.docx", os.urandom(4096)),
        ("random.pptx", os.urandom(2048)),
        ("random.xlsx", os.urandom(2048)),
        ("notazip.docx", b"PK\x03\x04" + os.urandom(512)),
        ("binary.txt", b"\x00\x01\x02\x03" * 512),
        ("broken.json", b'{"a": 1,, }'),
        ("legacy.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(1024)),
    ],
)
def test_corrupt_files_are_invalid(tmp_path, name, data):
    path = _write(tmp_path, name, data)
    with pytest.raises(InvalidFile) as info:
        parse_file(path, name)
    err = info.value
    assert err.code == "invalid_file" and not isinstance(err, EmptyFile)
    assert name in err.message
    assert err.to_last_error() == {"code": "invalid_file", "message": err.message}


def test_zip_of_the_wrong_office_type_is_invalid(docs, tmp_path):
    path = _write(tmp_path, "renamed.pptx", docs["vault.docx"].read_bytes())
    with pytest.raises(InvalidFile, match="PowerPoint"):
        parse_file(path, "renamed.pptx")


@pytest.mark.parametrize(
    "name,data",
    [("empty.pdf", b""), ("empty.txt", b""), ("blank.md", b"   \n\n  \n"), ("empty.docx", b"")],
)
def test_empty_files(tmp_path, name, data):
    path = _write(tmp_path, name, data)
    with pytest.raises(EmptyFile) as info:
        parse_file(path, name)
    assert info.value.code == "invalid_file"


def test_pdf_without_text_is_empty(tmp_path):
    from reportlab.pdfgen import canvas

    path = tmp_path / "scan.pdf"
    c = canvas.Canvas(str(path))
    c.rect(100, 100, 200, 200)  # a drawing, no text (like a scanned page)
    c.showPage()
    c.save()
    with pytest.raises(EmptyFile, match="OCR"):
        parse_file(path, "scan.pdf")


def test_password_protected_pdf_is_invalid(tmp_path):
    from reportlab.pdfgen import canvas

    path = tmp_path / "locked.pdf"
    c = canvas.Canvas(str(path), encrypt="secret")
    c.drawString(72, 720, "Hidden text.")
    c.showPage()
    c.save()
    for engine in ("pdfium", "pdfminer"):
        with pytest.raises(InvalidFile, match="password-protected"):
            parse_file(path, "locked.pdf", pdf_engine=engine)


def test_error_messages_do_not_leak_storage_paths(tmp_path):
    path = _write(tmp_path, "file-abc123", b"%PDF-1.4\n" + os.urandom(2048))
    with pytest.raises(InvalidFile) as info:
        parse_file(path, "scan.pdf")
    assert str(tmp_path) not in info.value.message and "scan.pdf" in info.value.message


@pytest.mark.parametrize("name", ["setup.exe", "blob.bin", "archive.zip", "image.png", "old.doc"])
def test_unsupported_files(tmp_path, name):
    path = _write(tmp_path, name, b"MZ\x90\x00" + os.urandom(256))
    with pytest.raises(UnsupportedFile) as info:
        ingest_file(path, name)
    assert info.value.code == "unsupported_file"
    assert name in info.value.message and "Supported" in info.value.message


# --- tokenizer and chunking ----------------------------------------------------------------------


def test_tokenizer_is_real_cl100k_offline():
    enc = ingestion.chunking.get_encoding()
    assert enc.encode_ordinary("Hello world, this is") == [9906, 1917, 11, 420, 374]
    assert count_tokens("<|endoftext|>") > 1  # special-token text is plain text here
    assert ingestion.TOKENIZER == "cl100k_base"


def _long_document(n_paragraphs: int = 60) -> list[Element]:
    elements = []
    for p in range(n_paragraphs):
        sentences = [
            f"Paragraph {p} sentence {s} talks about topic {(p * 7 + s) % 13} in some detail."
            for s in range(6)
        ]
        elements.append(
            Element(text=" ".join(sentences), type="NarrativeText", page_number=p // 10 + 1)
        )
    return elements


def _overlap_tokens(text: str, a: Chunk, b: Chunk) -> int:
    return count_tokens(text[b.char_start : a.char_end]) if a.char_end > b.char_start else 0


@pytest.mark.parametrize("size,overlap", [(800, 400), (100, 50), (300, 0), (4096, 2048)])
def test_chunks_respect_size_and_overlap(size, overlap):
    from ingestion.chunking import document_text

    elements = _long_document()
    text, _ = document_text(elements)
    chunks = chunk_elements(elements, ChunkingStrategy.static(size, overlap))
    assert chunks and [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.token_count == count_tokens(c.text) <= size
        assert text[c.char_start : c.char_end] == c.text
        assert c.page_numbers and c.element_types == ("NarrativeText",)
    overlaps = [_overlap_tokens(text, a, b) for a, b in zip(chunks, chunks[1:])]
    assert all(o <= overlap for o in overlaps)
    if overlap and len(chunks) > 1:
        assert min(overlaps) > 0  # paragraphs here are shorter than the overlap
    if len(chunks) > 2:  # chunks are filled: all but the last at least half the budget
        assert all(c.token_count >= size // 2 for c in chunks[:-1])
    # nothing is lost: every sentence is in some chunk
    for el in elements:
        for sentence in el.text.split(". "):
            assert any(sentence in c.text for c in chunks)


def test_auto_chunking_is_800_400():
    strategy = ChunkingStrategy.from_api({"type": "auto"})
    assert (strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens) == (800, 400)
    assert ChunkingStrategy.from_api(None) == strategy == ChunkingStrategy.auto()
    assert strategy.to_api() == {
        "type": "static",
        "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
    }
    chunks = chunk_elements(_long_document(), strategy)
    total = count_tokens("\n\n".join(e.text for e in _long_document()))
    assert all(c.token_count <= 800 for c in chunks)
    assert len(chunks) >= total // 800 + 1


def test_chunk_metadata_spans_pages():
    chunks = chunk_elements(_long_document(), ChunkingStrategy.static(800, 0))
    assert chunks[0].page_numbers[0] == 1 and chunks[-1].page_numbers[-1] == 6
    assert any(len(c.page_numbers) > 1 for c in chunks)
    meta = chunks[0].metadata()
    assert meta["token_count"] == chunks[0].token_count and meta["element_types"] == [
        "NarrativeText"
    ]
    json.dumps(meta)


def test_unbreakable_text_is_still_bounded():
    text = "x" * 20000 + " " + "é" * 3000  # no separators at all for long stretches
    chunks = chunk_elements([Element(text=text, type="Text")], ChunkingStrategy.static(100, 20))
    assert all(c.token_count <= 100 for c in chunks)
    assert "".join(c.text for c in chunks).count("x") >= 20000


def test_token_window_fallback_maps_back_to_characters():
    from ingestion.chunking import _token_windows

    text = "é" * 50 + "日本語のテキスト" * 30 + " emoji 😀😀😀 end"
    windows = _token_windows(text, 0, len(text), 10, 2)
    assert all(0 < tokens <= 10 for _, _, tokens in windows)
    covered = set()
    for a, b, _ in windows:
        covered.update(range(a, b))
    assert covered == set(range(len(text)))


@pytest.mark.parametrize(
    "value",
    [
        {"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}},
        {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": -1}},
        {"type": "static", "static": {"max_chunk_size_tokens": "800", "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 800.0, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": True, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 800}},
        {"type": "static"},
        {"type": "other"},
        {},
        "auto",
    ],
)
def test_static_chunking_bounds_are_validated(value):
    with pytest.raises(InvalidChunkingStrategy) as info:
        ChunkingStrategy.from_api(value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("size,overlap", [(100, 0), (100, 50), (4096, 2048), (801, 400)])
def test_static_chunking_bounds_accept_the_limits(size, overlap):
    s = ChunkingStrategy.from_api(
        {
            "type": "static",
            "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap},
        }
    )
    assert (s.max_chunk_size_tokens, s.chunk_overlap_tokens) == (size, overlap)


def test_ingest_file_end_to_end(docs):
    chunks = ingest_file(docs["report.pdf"], "report.pdf", {"type": "auto"})
    assert len(chunks) == 1
    assert SENTINELS["pdf"] in chunks[0].text and chunks[0].page_numbers == (1, 2)
    assert "Title" in chunks[0].element_types
    with pytest.raises(InvalidChunkingStrategy):
        ingest_file(docs["report.pdf"], "report.pdf", {"type": "static", "static": {}})


# --- embeddings ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def default_model():
    return embeddings_from_settings("default")


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_offline_default_embeddings(default_model):
    emb, model, dimension = default_model
    assert model == "wordllama/l2_supercat-256" and dimension == 256
    vectors = emb.embed_documents(
        [
            "The cat sat on the mat.",
            "A kitten was resting on the rug.",
            "Quarterly revenue grew by twelve percent.",
            "The company's sales rose in the third quarter.",
            "",
        ]
    )
    assert all(len(v) == dimension for v in vectors)
    for v in vectors[:4]:
        assert abs(_cos(v, v) - 1) < 1e-4  # normalised
    assert vectors[4] == [0.0] * dimension  # nothing to embed
    cat, kitten, revenue, sales = vectors[:4]
    assert _cos(cat, kitten) > _cos(cat, revenue) + 0.1
    assert _cos(revenue, sales) > _cos(revenue, kitten) + 0.1
    q = emb.embed_query("Where is the kitten sleeping?")
    assert _cos(q, kitten) > _cos(q, revenue)


def test_embed_chunks_checks_the_dimension(default_model, docs):
    emb, _, dimension = default_model
    chunks = ingest_file(docs["notes.md"], "notes.md")
    vectors = embed_chunks(chunks, emb, dimension=dimension, batch_size=1)
    assert len(vectors) == len(chunks) and len(vectors[0]) == dimension
    with pytest.raises(ValueError, match="dimension"):
        embed_chunks(chunks, emb, dimension=384)
    assert embed_chunks([], emb) == []


def test_openai_embeddings_from_settings(monkeypatch):
    from langchain_openai import OpenAIEmbeddings

    emb, model, dim = embeddings_from_settings(
        "openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test",
        model="text-embedding-3-small",
    )
    assert isinstance(emb, OpenAIEmbeddings) and (model, dim) == ("text-embedding-3-small", 1536)
    assert emb.check_embedding_ctx_length is False  # no tiktoken download
    _, _, dim = embeddings_from_settings(
        "openai", base_url="http://127.0.0.1:9/v1", api_key="sk-test", dimensions=256
    )
    assert dim == 256
    monkeypatch.setattr(OpenAIEmbeddings, "embed_query", lambda self, text: [0.0] * 768)
    _, model, dim = embeddings_from_settings(
        "openai", base_url="http://127.0.0.1:9/v1", api_key="x", model="nomic-embed-text"
    )
    assert (model, dim) == ("nomic-embed-text", 768)  # unknown model: measured once
    with pytest.raises(ValueError, match="unknown embedding"):
        embeddings_from_settings("word2vec")


def test_package_is_standalone_and_lazy():
    code = (
        "import sys, ingestion\n"
        "emb, model, dim = ingestion.embeddings_from_settings('default')\n"
        "ingestion.ChunkingStrategy.auto()\n"
        "heavy = [m for m in ('wordllama', 'unstructured', 'spacy', 'torch', 'sentence_transformers',"
        " 'tiktoken', 'pypdfium2') if m in sys.modules]\n"
        "app = [m for m in sys.modules if m.split('.')[0] in ('api', 'graph', 'tools')]\n"
        "assert not heavy and not app, (heavy, app)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(
    not os.environ.get("INGESTION_TEST_MINILM"),
    reason="set INGESTION_TEST_MINILM=1 (needs the minilm extra)",
)
def test_minilm_embeddings():
    emb, model, dimension = embeddings_from_settings("minilm")
    assert (model, dimension) == ("sentence-transformers/all-MiniLM-L6-v2", 384)
    cat, kitten, revenue = emb.embed_documents(
        ["The cat sat on the mat.", "A kitten was resting on the rug.", "Revenue grew 12 percent."]
    )
    assert _cos(cat, kitten) > _cos(cat, revenue) + 0.2
    (long,) = emb.embed_documents(["filler words here " * 400 + "The kitten sleeps on the rug."])
    assert len(long) == 384


@pytest.mark.parametrize("variable", ["INGESTION_PDF_ENGINE", "ASSISTGRAPH_INGESTION_PDF_ENGINE"])
def test_the_pdf_engine_is_a_setting_under_its_variable_names(monkeypatch, variable):
    from api.settings import Settings

    for name in ("INGESTION_PDF_ENGINE", "ASSISTGRAPH_INGESTION_PDF_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().ingestion_pdf_engine == "pdfium"
    monkeypatch.setenv(variable, "pdfminer")
    assert Settings().ingestion_pdf_engine == "pdfminer"
