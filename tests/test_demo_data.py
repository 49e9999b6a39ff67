"""Demo corpus: help-page pairing, cleaning, near-duplicates, split, readings, manifests, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechkit.errors import ConfigError, DataError
from speechkit.scoring.records import record_from_dict
from speechkit.training.data.clean import CleanConfig, english_ok, is_doubled, normalize, target_ok
from speechkit.training.data.config import DataConfig
from speechkit.training.data.corpus import Group, build_groups, drop_near_duplicates
from speechkit.training.data.dedup import jaccard, near_duplicate_clusters, words
from speechkit.training.data.lohelp import HelpPair, pair_paragraphs, read_help, read_page
from speechkit.training.data.prepare import write_manifest
from speechkit.training.data.recipe import load_recipe_config
from speechkit.training.data.split import split_groups, utterance_rows

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_demo" / "config.yaml"

PAGE_EN = """<html><head><script>var x = "<p id='par_id9'>not text</p>";</script></head><body>
<h1 id="hd_id1" dir="auto">Find Toolbar</h1>
<p id="par_id2" class="paragraph">Use <span class="switchinline"><span hidden="true" class="MAC">Command</span>
<span hidden="true" class="default">Ctrl</span></span>+F to open the bar.</p>
<p id="par_id3">Shown<br>twice.</p><p id="par_id3">Second occurrence.</p>
<p id="par_id4">Only in English.</p>
<p class="plain">No id, not collected.</p>
</body></html>"""
PAGE_DE = """<html><body>
<h1 id="hd_id1">Suchleiste</h1>
<p id="par_id2">Verwenden Sie <span class="switchinline"><span hidden="true" class="MAC">Befehl</span>
<span hidden="true" class="default">Strg</span></span>+F, um die Leiste zu öffnen.</p>
<p id="par_id3">Zweimal <span class="emph">gezeigt</span>.</p><p id="par_id3">Zweites Vorkommen.</p>
<p id="par_id5">Nur auf Deutsch.</p>
</body></html>"""


def test_read_page_keys_text_and_platform_variants():
    page = read_page(PAGE_EN, "shared/find.html")
    assert page == {
        ("shared/find.html", "hd_id1", 0): "Find Toolbar",
        ("shared/find.html", "par_id2", 0): "Use Ctrl+F to open the bar.",  # macOS variant left out
        ("shared/find.html", "par_id3", 0): "Shown twice.",
        ("shared/find.html", "par_id3", 1): "Second occurrence.",
        ("shared/find.html", "par_id4", 0): "Only in English.",
    }


def test_switchinline_keeps_first_alternative_once():
    html = ('<p id="par_id1">Zeigt die <span class="switchinline"><span hidden="true" class="IMPRESS">Folien'
            '</span><span hidden="true" class="DRAW">Seiten</span></span> an.</p>')  # fmt: skip
    assert read_page(html, "p") == {("p", "par_id1", 0): "Zeigt die Folien an."}


def test_pairing_by_paragraph_id_across_help_folders(tmp_path: Path):
    for lang, page in (("en-US", PAGE_EN), ("de", PAGE_DE)):
        folder = tmp_path / lang / "text" / "shared"
        folder.mkdir(parents=True)
        (folder / "find.html").write_text(page, "utf-8")
    pairs = list(pair_paragraphs(read_help(tmp_path / "en-US" / "text"), read_help(tmp_path / "de" / "text")))
    assert [(p.key[1], p.key[2], p.en, p.other) for p in pairs] == [
        ("hd_id1", 0, "Find Toolbar", "Suchleiste"),
        ("par_id2", 0, "Use Ctrl+F to open the bar.", "Verwenden Sie Strg+F, um die Leiste zu öffnen."),
        ("par_id3", 0, "Shown twice.", "Zweimal gezeigt."),
        ("par_id3", 1, "Second occurrence.", "Zweites Vorkommen."),
    ]


def test_read_help_missing_folder_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="help folder not found"):
        read_help(tmp_path / "nope")


@pytest.mark.parametrize(
    "text, ok",
    [
        ("Select the cells that you want to format.", True),
        ("Choose Format - Cells.", False),  # 3 words
        ("select the cells that you want.", False),  # lower-case start
        ("Select the cells that you want to format", False),  # no final punctuation
        ("Enter =SUM(A1:A3) in the cell.", False),  # formula characters
        ("See https://example.org for more details.", False),
        ("Click here to open it. Click here to open it.", False),  # doubled paragraph
    ],
)
def test_english_filter(text, ok):
    assert english_ok(text, CleanConfig()) is ok


@pytest.mark.parametrize(
    "text, lang, ok",
    [
        ("Wählen Sie die Zellen aus.", "de", True),
        ("Select the cells you want.", "de", False),  # untranslated copy of the English
        ("选择要设置格式的单元格。", "zh", True),
        ("选择 Excel 单元格。", "zh", False),  # Latin letters are read as pinyin
        ("第25页的单元格。", "zh", False),  # digits
        ("書式を設定するセルを選択します。", "ja", True),
        ("セル。", "ja", False),  # under 4 CJK characters
    ],
)
def test_target_filter(text, lang, ok):
    assert target_ok(text, "Select the cells you want.", lang, CleanConfig()) is ok


def test_normalize_turns_menu_arrows_into_dashes():
    assert normalize("Choose Format → Cells\u00a0now.", "en") == "Choose Format - Cells now."
    assert normalize("选择，格式 ▸ 单元格。", "zh") == "选择，格式 - 单元格。"  # full-width punctuation kept (NFC)
    assert is_doubled("Hello there.Hello there.") and not is_doubled("Hello there.")


def test_near_duplicates_cluster_and_keep_the_first():
    texts = [
        "Select the rows that you want to format in the sheet.",
        "Choose a different colour for the background of the page.",
        "Select the columns that you want to format in the sheet.",
        "Select the rows that you want to format in the sheet!",
    ]
    assert jaccard(words(texts[0]), words(texts[2])) >= 0.7
    labels = near_duplicate_clusters(texts, 0.7)
    assert labels == [0, 1, 0, 0]
    assert near_duplicate_clusters(texts, 0.7) == labels  # deterministic
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_clusters(texts, 0.0)


def _pair(en: str, other: str, n: int = 0) -> HelpPair:
    return HelpPair(("p.html", f"par_id{n}", 0), en, other)


def test_build_groups_and_near_duplicate_filter_prefers_more_translations():
    pairs = {
        "de": [_pair("Select the rows that you want to format now.", "Wählen Sie die Zeilen aus."),
               _pair("Select the columns that you want to format now.", "Wählen Sie die Spalten aus.", 1),
               _pair("Opens the dialog box.", "Öffnet den Dialog.", 2)],  # 4 words: kept
        "fr": [_pair("Select the columns that you want to format now.", "Sélectionnez les colonnes.", 1),
               _pair("Opens the dialog box.", "Opens the dialog box.", 2)],  # untranslated: dropped
    }  # fmt: skip
    groups = build_groups(pairs, CleanConfig())
    assert [sorted(g.texts) for g in groups] == [["de", "en"], ["de", "en", "fr"], ["de", "en"]]
    kept = drop_near_duplicates(groups, 0.7)
    assert [g.en for g in kept] == ["Opens the dialog box.", "Select the columns that you want to format now."]


def _groups(n: int) -> list[Group]:
    langs = ("en", "de", "ja")
    out = []
    for i in range(n):
        en = f"Sentence number {i} talks about topic {i * 7} and item {i * 13}."
        texts = {lang: f"{lang} {en}" for lang in langs if not (lang == "ja" and i % 3)}
        out.append(Group(en, {**texts, "en": en}, {**texts, "en": en}))
    return out


def _cfg(**kw) -> DataConfig:
    return DataConfig(langs=("en", "de", "ja"), voices={"en": ("en-us",), "de": ("de",), "ja": ("ja",)}, **kw)


def test_split_is_deterministic_disjoint_and_fills_every_language():
    cfg = _cfg(test_per_lang=10, dev_per_lang=5, seed=3)
    groups = _groups(300)
    first, again = split_groups(groups, cfg), split_groups(list(reversed(groups)), cfg)
    assert first == again  # independent of input order
    names = [{g.en for g in getattr(first, s)} for s in ("train", "dev", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert sum(len(n) for n in names) == 300
    assert sum("ja" in g.texts for g in first.test) >= 10 and sum("ja" in g.texts for g in first.dev) >= 5
    assert split_groups(groups, _cfg(test_per_lang=10, dev_per_lang=5, seed=4)) != first


def test_no_near_duplicate_of_a_test_sentence_in_train():
    base = _groups(200)
    twins = [Group(g.en.replace("talks", "speaks"), g.texts, g.speak) for g in base]  # one word changed
    cfg = _cfg(test_per_lang=20, dev_per_lang=5)
    split = split_groups(drop_near_duplicates(base + twins, cfg.near_duplicate_jaccard), cfg)
    for test in split.test:
        assert all(jaccard(words(test.en), words(train.en)) < cfg.near_duplicate_jaccard for train in split.train)


def test_rows_use_heldout_voices_for_test_only_and_follow_the_records_schema():
    cfg = _cfg(test_per_lang=10, dev_per_lang=5)
    split = split_groups(_groups(120), cfg)
    test_rows = utterance_rows(split.test, "test", 10, cfg)
    train_rows = utterance_rows(split.train, "train", 50, cfg)
    variant = lambda row: row["voice"].partition("+")[2]  # noqa: E731
    assert {variant(r) for r in test_rows} <= set(cfg.heldout_variants)
    assert not {variant(r) for r in train_rows} & set(cfg.heldout_variants)
    assert {r["src_lang"] for r in test_rows} == {"en", "de", "ja"}
    assert max(sum(r["src_lang"] == lang for r in train_rows) for lang in cfg.langs) == 50
    for row in test_rows + train_rows:
        record = record_from_dict(row, "row")
        assert record.task == "ast" and record.duration is None
        assert (record.tgt_lang == "en") is (record.src_lang != "en")
        assert cfg.speed_wpm[0] <= row["speed"] <= cfg.speed_wpm[1] and row["audio_filepath"].endswith(".flac")
    en_targets = [r["tgt_lang"] for r in train_rows if r["src_lang"] == "en"]
    assert set(en_targets) == {"de", "ja"} and en_targets.count("ja") >= 10  # the scarce direction gets its share
    assert utterance_rows(split.test, "test", 10, cfg) == test_rows


def test_write_manifest_validates_rows(tmp_path: Path):
    row = {"id": "a", "audio_filepath": "a.flac", "duration": None, "task": "ast", "src_lang": "de",
           "tgt_lang": "en", "text": "Hallo.", "translation": "Hello.", "speak": "Hallo.", "voice": "de",
           "speed": 170, "pitch": 50}  # fmt: skip
    path = write_manifest([row], tmp_path / "ok.jsonl")
    assert json.loads(path.read_text()) == row
    with pytest.raises(DataError, match="duplicate id 'a'"):
        write_manifest([row, row], tmp_path / "dup.jsonl")


def test_japanese_kana_uses_pronunciation():
    pytest.importorskip("MeCab")
    pytest.importorskip("ipadic")
    from speechkit.training.data.reading import japanese_kana

    assert japanese_kana("今日は良い天気です。") == "キョーワヨイテンキデス。"  # は read as ワ, long vowels as ー


def test_mandarin_pinyin_reads_polyphones_by_word():
    pytest.importorskip("pypinyin")
    from speechkit.training.data.reading import mandarin_pinyin

    assert mandarin_pinyin("我去银行，重新开始。“好”吗？") == "wo3 qu4 yin2 hang2, chong2 xin1 kai1 shi3. hao3 ma5?"


def test_recipe_config_parses_and_rejects_unknown_keys(tmp_path: Path):
    pytest.importorskip("yaml")
    cfg = load_recipe_config(RECIPE)
    assert cfg.data.langs == ("en", "de", "fr", "it", "es", "pt", "ja", "zh")
    assert cfg.tokenizer.special_ids["<|endoftext11|>"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train_per_langs: 5\n")
    with pytest.raises(ConfigError, match=r"data: unknown keys \['train_per_langs'\]"):
        load_recipe_config(bad)
    with pytest.raises(ConfigError, match="config not found"):
        load_recipe_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"langs": ("de", "fr")}, "must include 'en'"),
        ({"langs": ("en", "ko")}, r"no source for \['ko'\]"),
        ({"heldout_variants": ("m1",)}, r"disjoint, both have \['m1'\]"),
        ({"speed_wpm": (200, 100)}, r"speed_wpm: need low <= high"),
    ],
)
def test_data_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**kwargs)


def test_spliced_rows_are_new_asr_only_sentences_from_train_words():
    pytest.importorskip("MeCab")
    pytest.importorskip("ipadic")
    from speechkit.training.data.splice import spliced_rows

    cfg = _cfg(test_per_lang=10, dev_per_lang=5)
    split = split_groups(_groups(120), cfg)
    train_rows = utterance_rows(split.train, "train", 50, cfg)
    train_words = {w.strip(".") for r in train_rows for w in r["text"].split()}
    spliced = spliced_rows(train_rows, 7, cfg)
    assert spliced == spliced_rows(list(train_rows), 7, cfg)  # deterministic
    assert [sum(r["src_lang"] == lang for r in spliced) for lang in cfg.langs] == [7, 7, 7]
    natural = {r["text"] for r in train_rows}
    for row in spliced:
        record = record_from_dict(row, "row")
        assert record.task == "asr" and record.translation is None and record.tgt_lang is None
        assert row["id"].startswith(f"train-{row['src_lang']}-s") and row["speak"]
        assert row["voice"].partition("+")[2] in ("", *cfg.train_variants)
        if row["src_lang"] != "ja":
            assert {w.strip(".").lower() for w in row["text"].split()} <= {w.lower() for w in train_words}
    assert len({r["text"] for r in spliced} - natural) >= 15  # new sentences, not copies


def test_splice_units_follow_the_script():
    from speechkit.training.data.splice import join_units, sentence_units

    assert sentence_units("Click OK, then close.", "en") == [["Click", "OK", "then", "close"]]
    assert sentence_units("选择“格式”菜单。打开", "zh") == [list("选择"), list("格式"), list("菜单"), list("打开")]
    assert join_units(["click", "the", "button"], "en") == "Click the button."
    assert join_units(list("打开菜单"), "zh") == "打开菜单。"
