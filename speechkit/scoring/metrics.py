"""Corpus-level error rates and BLEU/chrF, computed the way the reference tools compute them.

Error counts come from kaldialign's edit distance (the Open ASR leaderboard's scorer since 2026); BLEU
and chrF from sacrebleu. Both are optional dependencies, imported on first use.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from speechkit.errors import SpeechkitError

CHARACTER_LANGS = frozenset({"zh", "ja", "ko", "th"})  # scored by CER: no reliable word boundaries
BLEU_TOKENIZERS = {"zh": "zh", "ja": "ja-mecab"}  # the Phi-4 paper's setting; everything else "13a"


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    """Summed edit operations over a corpus; ``rate`` is errors / reference tokens (a fraction)."""

    ins: int
    dels: int
    sub: int
    ref_len: int

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.sub

    @property
    def rate(self) -> float:
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_len

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.ins + other.ins, self.dels + other.dels, self.sub + other.sub,
                           self.ref_len + other.ref_len)  # fmt: skip


def _kaldialign():
    try:
        import kaldialign
    except ImportError as err:
        raise SpeechkitError("scoring WER/CER needs kaldialign: pip install 'speechkit[eval]'") from err
    return kaldialign


def count_errors(
    refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]], merge_compounds: bool = False
) -> ErrorCounts:
    """Edit operations between token sequences, summed over pairs.

    ``merge_compounds`` lets a split compound match its joined form at no cost ("white paper" vs
    "whitepaper"), as kaldialign implements it for the leaderboard.
    """
    edit_distance = _kaldialign().edit_distance
    ins = dels = sub = ref_len = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        d = edit_distance(ref, hyp, merge_compounds=merge_compounds)
        ins += d["ins"]
        dels += d["del"]
        sub += d["sub"]
        ref_len += d["ref_len"]
    return ErrorCounts(ins, dels, sub, ref_len)


def join_matching_compounds(ref: str, hyp: str) -> tuple[str, str]:
    """Where a differing stretch of ref and hyp words spells the same letters, write both joined.

    "donau dampf schiff" vs "donaudampf schiff" both become "donaudampfschiff"-style single words, so
    German/Italian compound spacing is not an error. Same alignment as the leaderboard's multilingual
    scorer (difflib's matcher over words, with its default junk heuristic).
    """
    ref_words, hyp_words = ref.split(), hyp.split()
    out_ref: list[str] = []
    out_hyp: list[str] = []
    matcher = difflib.SequenceMatcher(None, ref_words, hyp_words)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        joined_ref, joined_hyp = "".join(ref_words[i1:i2]), "".join(hyp_words[j1:j2])
        if tag != "equal" and joined_ref == joined_hyp:
            out_ref.append(joined_ref)
            out_hyp.append(joined_hyp)
        else:
            out_ref.extend(ref_words[i1:i2])
            out_hyp.extend(hyp_words[j1:j2])
    return " ".join(out_ref), " ".join(out_hyp)


def characters(text: str) -> list[str]:
    """CER tokens: the characters of ``text`` with all whitespace removed."""
    return [c for c in text if not c.isspace()]


@dataclass(frozen=True, slots=True)
class BleuScore:
    """sacrebleu corpus BLEU and chrF on raw text, with BLEU's reproducibility signature."""

    bleu: float
    chrf: float
    signature: str
    tokenize: str


def bleu_tokenizer(tgt_lang: str | None) -> str:
    """sacrebleu tokenizer for a target language: ``zh``, ``ja-mecab``, else ``13a``."""
    return BLEU_TOKENIZERS.get((tgt_lang or "").lower(), "13a")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str | None) -> BleuScore:
    """Corpus BLEU (and chrF) of raw hypotheses against one raw reference each."""
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError as err:
        raise SpeechkitError("BLEU needs sacrebleu: pip install 'speechkit[eval]'") from err
    tokenize = bleu_tokenizer(tgt_lang)
    try:
        bleu = BLEU(tokenize=tokenize)
    except (ImportError, RuntimeError) as err:  # ja-mecab needs mecab-python3 and ipadic
        raise SpeechkitError(f"sacrebleu tokenizer {tokenize!r} is unavailable ({err}); "
                             "pip install 'speechkit[ja]'") from err  # fmt: skip
    score = bleu.corpus_score(list(hyps), [list(refs)])
    chrf = CHRF().corpus_score(list(hyps), [list(refs)])
    return BleuScore(score.score, chrf.score, str(bleu.get_signature()), tokenize)
