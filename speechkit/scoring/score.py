"""Score records: error rates (WER/CER) or BLEU/chrF, overall and per language, plus RTFx."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from speechkit.errors import DataError, SpeechkitError
from speechkit.scoring.metrics import (
    ErrorCounts,
    characters,
    corpus_bleu,
    count_errors,
    join_matching_compounds,
)
from speechkit.scoring.normalizers import Normalizer, get_normalizer, normalizer_id
from speechkit.scoring.protocols import DEFAULT_PROTOCOL, IGNORED_REFERENCE, Protocol, get_protocol
from speechkit.scoring.records import Record

METRICS = ("auto", "wer", "cer", "bleu")


@dataclass(frozen=True)
class GroupScore:
    """Score of the records of one language (ASR) or language pair (translation, ``de-en``).

    ``score`` is a percentage: WER/CER (lower is better) or BLEU (higher is better).
    """

    metric: str
    score: float
    n: int
    counts: ErrorCounts | None = None
    normalizer: str | None = None
    signature: str | None = None
    chrf: float | None = None
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "score": self.score, "n": self.n}
        if self.counts is not None:
            out.update({"ins": self.counts.ins, "del": self.counts.dels, "sub": self.counts.sub})
            out.update(normalizer=self.normalizer, dropped=self.dropped)
        else:
            out.update(signature=self.signature, chrf=self.chrf)
        return out


@dataclass(frozen=True)
class ScoreResult:
    """Overall score: one group's score, or the unweighted mean over groups (the paper's "Avg")."""

    metric: str
    score: float
    n: int
    protocol: str
    per_lang: dict[str, GroupScore] = field(default_factory=dict)
    rtfx: float | None = None

    def to_dict(self) -> dict[str, Any]:
        groups = list(self.per_lang.values())
        out: dict[str, Any] = {"metric": self.metric, "score": self.score, "n": self.n}
        out["protocol"] = self.protocol
        counts = [g.counts for g in groups if g.counts is not None]
        if counts:
            total = sum(counts[1:], counts[0])
            out.update({"ins": total.ins, "del": total.dels, "sub": total.sub})
            out["normalizer"] = ",".join(dict.fromkeys(g.normalizer for g in groups if g.normalizer))
        else:
            out["signature"] = ",".join(dict.fromkeys(g.signature for g in groups if g.signature))
            out["chrf"] = fmean(g.chrf for g in groups) if groups else None
        out["rtfx"] = self.rtfx
        out["per_lang"] = {k: g.to_dict() for k, g in self.per_lang.items()}
        return out


def _task_metric(records: Sequence[Record], metric: str) -> str:
    if metric not in METRICS:
        raise SpeechkitError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    tasks = sorted({r.task for r in records})
    translation = [t for t in tasks if t.startswith("ast")]
    if translation and len(translation) != len(tasks):
        raise DataError(f"records mix tasks {', '.join(tasks)}; score each task's records separately")
    if metric == "auto":
        return "bleu" if translation else "auto-error"
    return metric


def _group_key(record: Record, bleu: bool, lang: str | None) -> str:
    if bleu:
        tgt = lang or record.tgt_lang or "und"
        return f"{record.src_lang}-{tgt}" if record.src_lang else tgt
    return lang or record.src_lang or "und"


def score_error_rate(records: Sequence[Record], lang: str | None, metric: str, protocol: Protocol,
                     normalizer: Normalizer | None = None) -> tuple[GroupScore, list[Record]]:  # fmt: skip
    """WER or CER of one language's records; returns the score and the records actually scored."""
    code = None if lang in (None, "und") else lang
    if normalizer is None:
        spec = protocol.normalizer_spec(code)
        normalizer = get_normalizer(spec, lang=code if protocol.spell_numbers else None)
    if metric == "auto-error":
        metric = protocol.error_metric(code)
    refs, hyps, kept = [], [], []
    seen: dict[str, str] = {}  # normalizers are pure; perfect hypotheses and repeated texts are common

    def norm(text: str) -> str:
        out = seen.get(text)
        if out is None:
            out = seen[text] = normalizer(text)
        return out

    for record in records:
        ref = norm(record.text)
        if ref.strip() in ("", IGNORED_REFERENCE):  # the leaderboard never decodes these
            continue
        hyp = norm(record.pred_text)
        if protocol.join_compounds_non_english and code not in (None, "en"):
            ref, hyp = join_matching_compounds(ref, hyp)
        refs.append(ref)
        hyps.append(hyp)
        kept.append(record)
    if metric == "cer":
        counts = count_errors([characters(r) for r in refs], [characters(h) for h in hyps])
    else:
        counts = count_errors([r.split() for r in refs], [h.split() for h in hyps], protocol.merge_compounds)
    group = GroupScore(metric, 100 * counts.rate, len(kept), counts, normalizer_id(normalizer),
                       dropped=len(records) - len(kept))  # fmt: skip
    return group, kept


def score_bleu(records: Sequence[Record], tgt_lang: str | None) -> GroupScore:
    """Corpus BLEU/chrF of ``pred_text`` against the raw ``translation`` references."""
    missing = [r.id for r in records if r.translation is None]
    if missing:
        raise DataError(f"record {missing[0]!r} has no 'translation' reference ({len(missing)} such records)")
    bleu = corpus_bleu([r.pred_text for r in records], [r.translation for r in records], tgt_lang)
    return GroupScore("bleu", bleu.bleu, len(records), signature=bleu.signature, chrf=bleu.chrf)


def rtfx(records: Sequence[Record]) -> float | None:
    """Audio seconds / compute seconds, or None unless every record has both (non-zero, as upstream)."""
    if not records or not all(r.time for r in records) or not all(r.duration for r in records):
        return None
    return sum(r.duration for r in records) / sum(r.time for r in records)


def score_records(records: Sequence[Record], metric: str = "auto", lang: str | None = None,
                  protocol: str = DEFAULT_PROTOCOL) -> ScoreResult:  # fmt: skip
    """Score records under a protocol.

    Args:
        records: decoded records (one task).
        metric: ``auto`` (BLEU for translation; CER for zh/ja/ko/th under ``paper``, else WER), or a
            forced ``wer``, ``cer`` or ``bleu``.
        lang: override the records' language (``src_lang`` for ASR, ``tgt_lang`` for BLEU).
        protocol: ``paper``, ``openasr`` or ``openasr-2025`` (see :mod:`speechkit.scoring.protocols`).
    """
    if not records:
        raise DataError("no records to score")
    chosen = get_protocol(protocol)
    kind = _task_metric(records, metric)
    bleu = kind == "bleu"
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(_group_key(record, bleu, lang), []).append(record)
    per_lang: dict[str, GroupScore] = {}
    scored: list[Record] = []
    for key, members in sorted(groups.items()):
        if bleu:
            per_lang[key] = score_bleu(members, key.rsplit("-", 1)[-1])
            scored.extend(members)
        else:
            per_lang[key], kept = score_error_rate(members, key, kind, chosen)
            scored.extend(kept)
    metrics = sorted({g.metric for g in per_lang.values()})
    return ScoreResult(
        metric="+".join(metrics), score=fmean(g.score for g in per_lang.values()),
        n=sum(g.n for g in per_lang.values()), protocol=chosen.name, per_lang=per_lang, rtfx=rtfx(scored),
    )  # fmt: skip
