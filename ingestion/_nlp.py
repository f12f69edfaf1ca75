"""Keep `unstructured` from downloading a spaCy model at run time.

`unstructured` (0.27.x) classifies text elements (title / narrative text / list item) with spaCy's
``en_core_web_sm``; when that model is not installed it downloads the wheel from GitHub on first
use, which fails (or hangs on DNS) on a machine without internet, and would otherwise install
code at run time. The model is not on PyPI under its own name, so instead of depending on a
re-upload we give `unstructured` a small offline pipeline when the real model is absent:

- spaCy's rule-based English tokenizer (word tokens) and ``sentencizer`` (sentence boundaries);
- a heuristic "tagger" that marks common verb forms ``VB`` (auxiliaries, modals, a list of
  frequent verbs and their inflections, and ``-ed`` / ``-ing`` words).

Only element *types* depend on it (``NarrativeText`` vs ``Title`` / ``UncategorizedText``); the
extracted text is the same. If ``en_core_web_sm`` is installed it is used unchanged.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_done = False

_AUX = frozenset(
    (
        "am is are was were be been being has have had having do does did done can could will "
        "would shall should may might must cannot ca wo"
    ).split()
)
_IRREGULAR = frozenset(
    (
        "said made went gone took taken got gotten saw seen knew known thought came gave given "
        "found told felt became left meant kept began begun held brought wrote written stood lost "
        "paid met led understood spoke spoken read grew grown won bought built fell fallen sold "
        "sent spent ran put set let cut hit ate eaten drove driven rose risen chose chosen broke "
        "broken fought taught caught sought drew drawn flew flown sat slept lay lain laid hung "
        "shown struck wore worn"
    ).split()
)
_BASE = (
    "say make go take get see know think come give find use tell work call try ask need feel "
    "become leave mean keep let begin seem help show hear play run move live believe hold bring "
    "happen write provide sit stand lose pay meet include continue set learn change lead "
    "understand watch follow stop create speak read allow add spend grow open walk win offer "
    "remember love consider appear buy wait serve die send expect build stay fall cut reach kill "
    "remain suggest raise pass sell require report decide pull return describe contain eat drink "
    "explain develop carry break receive agree support hit produce cover catch draw choose cause "
    "point plan apply enable store release rise drive lower allow convert protect remove refresh "
    "split deliver occur expire accrue replace update delete install run sign apply share review "
    "approve manage measure reduce increase improve prevent ensure process"
).split()


def _verb_forms() -> frozenset[str]:
    forms = set(_AUX) | set(_IRREGULAR)
    for base in _BASE:
        forms.add(base)
        forms.add(base + ("es" if base.endswith(("s", "sh", "ch", "x", "z", "o")) else "s"))
        if base.endswith("y") and base[-2:-1] not in "aeiou":
            forms.add(base[:-1] + "ies")
    return frozenset(forms)


_VERBS = _verb_forms()


def _build_pipeline():
    import spacy
    from spacy.language import Language

    name = "assistgraph_verb_heuristic"
    if not Language.has_factory(name):

        @Language.component(name)
        def _verb_heuristic(doc):  # pragma: no cover - exercised through unstructured
            for token in doc:
                word = token.lower_
                if word in _VERBS or (
                    token.is_alpha and len(word) > 4 and word.endswith(("ed", "ing"))
                ):
                    token.tag_ = "VB"
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(name)
    return nlp


def _refuse_download() -> None:
    raise RuntimeError(
        "unstructured tried to download the spaCy model en_core_web_sm at run time; "
        "ingestion must stay offline (see ingestion/_nlp.py)"
    )


def ensure_offline_nlp() -> None:
    """Install the offline pipeline into `unstructured` once per process (idempotent)."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        import spacy.util
        import unstructured.nlp.tokenize as tokenize

        if not spacy.util.is_package("en_core_web_sm"):
            nlp = _build_pipeline()
            # `_run_pipeline` looks `_get_nlp` up as a module global at call time.
            tokenize._get_nlp = lambda: nlp
            tokenize._install_spacy_model = _refuse_download
        _done = True
