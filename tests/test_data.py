"""Loaders on real files (the shared data, skipped when absent) and on every supported layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lmrec import DataError, load_dataset
from lmrec.data import TextTemplate, synthetic

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OFFICE, ML = SHARED / "amazon-office", SHARED / "movielens-latest-small"
needs_office = pytest.mark.skipif(not OFFICE.is_dir(), reason=f"shared data not present at {OFFICE}")
needs_ml = pytest.mark.skipif(not ML.is_dir(), reason=f"shared data not present at {ML}")


@needs_ml
def test_movielens_latest_small():
    data = load_dataset(f"movielens:{ML}")
    assert (data.n_users, data.n_items, data.n_interactions) == (671, 9125, 100_004)
    assert data.item_texts[data.item_index["1"]] == "Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy"
    assert not data.report.counts
    ts = data.timestamps[0]
    assert (np.diff(ts) >= 0).all()
    assert "tags" in data.item_meta[0]


@needs_ml
def test_movielens_ties_keep_file_order():
    import csv

    data = load_dataset(f"movielens:{ML}")
    with open(ML / "ratings.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["userId"] == "1"]
    expected = [r["movieId"] for r in sorted(rows, key=lambda r: float(r["timestamp"]))]  # sorted() is stable
    u = data.user_ids.index("1")
    assert [data.item_ids[i] for i in data.sequences[u]] == expected


@needs_office
def test_amazon_office():
    data = load_dataset(f"amazon:{OFFICE}")
    assert (data.n_users, data.n_items, data.n_interactions) == (4905, 2420, 53_258)
    raw_items = json.loads((OFFICE / "Office.item.json").read_text())
    raw_inter = json.loads((OFFICE / "Office.inter.json").read_text())
    user = next(iter(raw_inter))
    assert [data.item_ids[i] for i in data.sequences[data.user_ids.index(user)]] == [str(i) for i in raw_inter[user]]
    with_entity = next(k for k, v in raw_items.items() if "&amp;" in v["title"])
    assert "&amp;" not in data.item_texts[data.item_index[with_entity]]
    assert "&" in data.item_texts[data.item_index[with_entity]]
    first = data.item_texts[data.item_index["0"]]
    assert first.startswith("VTECH CS6114 DECT 6.0 Cordless Phone, White/Grey, 1 Handset. VTech. Office Electronics")


@needs_office
def test_recbole_atomic_files_match_the_json_layout(tmp_path):
    """Office converted to RecBole atomic files loads to the same sequences and texts."""
    items = json.loads((OFFICE / "Office.item.json").read_text())
    inter = json.loads((OFFICE / "Office.inter.json").read_text())
    with open(tmp_path / "office.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq\tdescription:token_seq\tprice:float\n")
        for k, v in items.items():
            clean = {
                c: v[c].replace("\t", " ").replace("\n", " ") for c in ("title", "brand", "categories", "description")
            }
            f.write(f"{k}\t{clean['title']}\t{clean['brand']}\t{clean['categories']}\t{clean['description']}\t1.0\n")
    with open(tmp_path / "office.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, seq in inter.items():
            for pos, i in enumerate(seq):
                f.write(f"{u}\t{i}\t{pos}\n")
    rb, js = load_dataset(f"recbole:{tmp_path}"), load_dataset(f"amazon:{OFFICE}")
    assert rb.item_ids == js.item_ids and rb.user_ids == js.user_ids
    assert all((a == b).all() for a, b in zip(rb.sequences, js.sequences, strict=True))
    assert rb.item_texts[0] == js.item_texts[0]  # text-like columns in file order = the Amazon default
    assert rb.template == "fields=title,brand,categories,description;sep=. ;max_chars=2000"


def test_movielens_100k_layout(tmp_path):
    (tmp_path / "u.item").write_bytes(
        "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
        "3|Caf\xe9 (1996)|01-Jan-1996||x|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n".encode("latin-1"))
    (tmp_path / "u.data").write_text(
        "196\t2\t3\t881250950\n196\t1\t3\t881250949\n22\t3\t1\t878887116\n22\t9\t1\t878887117\n"
    )
    data = load_dataset(f"movielens:{tmp_path}")
    assert data.item_texts == [
        "Toy Story (1995) | Animation, Children's, Comedy",
        "GoldenEye (1995) | Action, Adventure, Thriller",
        "Café (1996)",
    ]
    assert [data.item_ids[i] for i in data.sequences[data.user_ids.index("196")]] == ["1", "2"]
    assert data.report.counts["interaction with unknown item skipped"] == 1
    assert "u.data:4" in data.report.first["interaction with unknown item skipped"]


def test_movielens_1m_layout(tmp_path):
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n".encode("latin-1")
    )
    (tmp_path / "ratings.dat").write_text("1::2::5::978300760\n1::1::3::978300700\n")
    data = load_dataset(f"movielens:{tmp_path}")
    assert [data.item_ids[i] for i in data.sequences[0]] == ["1", "2"]
    assert data.item_texts[1] == "Jumanji (1995) | Adventure"


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_jsonl_generic_schema(tmp_path):
    _write_jsonl(
        tmp_path / "items.jsonl",
        [{"id": "a", "text": "Red pen &amp; ink"}, {"id": "b", "text": ""}, {"id": "c", "text": "Blue pen"}],
    )
    _write_jsonl(
        tmp_path / "interactions.jsonl",
        [
            {"user": "u", "item": "c", "timestamp": 5},
            {"user": "u", "item": "a", "timestamp": 1},
            {"user": "u", "item": "zzz", "timestamp": 2},
        ],
    )
    data = load_dataset(f"jsonl:{tmp_path}")
    assert data.item_texts == ["Red pen & ink", "b", "Blue pen"]
    assert [data.item_ids[i] for i in data.sequences[0]] == ["a", "c"]
    assert data.report.counts == {
        "interaction with unknown item skipped": 1,
        "empty item text replaced by the item id": 1,
    }
    assert data.report.first["interaction with unknown item skipped"].endswith("interactions.jsonl:3")


def test_jsonl_fields_with_a_template(tmp_path):
    _write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "title": "Pen.", "brand": "Acme"}])
    _write_jsonl(tmp_path / "interactions.jsonl", [{"user": "u", "item": "a"}])
    data = load_dataset(f"jsonl:{tmp_path}", template="fields=title,brand;sep=. ;max_chars=100")
    assert data.item_texts == ["Pen. Acme"]
    assert data.timestamps is None


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "text": "x"}\n{not json}\n', r"items.jsonl:2: invalid JSON"),
    ('{"text": "x"}\n', r"items.jsonl:1: item has no 'id'"),
    ('{"id": "a"}\n{"id": "a"}\n', r"items.jsonl:2: duplicate item id 'a'"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
    (tmp_path / "items.jsonl").write_text(content)
    _write_jsonl(tmp_path / "interactions.jsonl", [])
    with pytest.raises(DataError, match=message):
        load_dataset(f"jsonl:{tmp_path}")


def test_malformed_csv_row_names_file_and_line(tmp_path):
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,100\n1,1,4.0,yesterday\n")
    with pytest.raises(DataError, match=r"ratings.csv:3: timestamp is not a number"):
        load_dataset(f"movielens:{tmp_path}")


@pytest.mark.parametrize("spec, message", [
    ("nope:/x", "expected KIND:PATH"),
    ("amazon:/does/not/exist", "is not a directory"),
    ("synthetic:items=0", "items must be in 1..1000000"),
    ("synthetic:colour=red", "unknown parameter"),
])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


def test_missing_file_is_named(tmp_path):
    (tmp_path / "items.jsonl").write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(DataError, match=r"interactions.jsonl: file not found"):
        load_dataset(f"jsonl:{tmp_path}")


def test_synthetic_is_deterministic_and_text_carries_topics():
    a, b = synthetic(items=500, users=200, seed=1), synthetic(items=500, users=200, seed=1)
    assert a.item_texts == b.item_texts and all((x == y).all() for x, y in zip(a.sequences, b.sequences, strict=True))
    assert synthetic(items=500, users=200, seed=2).item_texts != a.item_texts
    # consecutive items share their category far more often than random pairs would
    cat = [m["category"] for m in a.item_meta]
    same = np.mean([cat[s[i]] == cat[s[i + 1]] for s in a.sequences for i in range(len(s) - 1)])
    assert same > 0.6
    assert np.mean([len(s) >= 3 for s in a.sequences]) > 0.95


def test_synthetic_scales_to_large_catalogues():
    data = synthetic(items=200_000, users=50, seed=0)
    assert data.n_items == 200_000 and len(set(data.item_texts[:1000])) == 1000


def test_template_round_trip_and_cleaning():
    t = TextTemplate(("title", "tags"), sep=" | ", max_chars=30)
    assert TextTemplate.parse(t.spec()) == t
    assert t.render({"title": "A&amp;B <b>bold</b>", "tags": ["x", "", "y"]}) == "A&B bold | x, y"
    assert len(t.render({"title": "word " * 50})) <= 30
    with pytest.raises(ValueError, match="max_chars"):
        TextTemplate.parse("fields=a;sep=.;max_chars=0")


# -- data as users bring it ------------------------------------------------------------------


def test_recbole_with_extra_columns_typed_fields_and_side_files(tmp_path):
    (tmp_path / "shop.item").write_text(
        "item_id:token\ttitle:token_seq\tprice:float\tbrand:token\tcategories:token_seq\n"
        "i1\tRed gel pen\t2.5\tAcme\tPens Office\n"
        "i2\tBlue notebook\t\tZephyr\tPaper\n"
        "i3\tStapler\t9\tAcme\t\n")
    (tmp_path / "shop.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq\n"
        "u1\ti2\t5.0\t20\tgreat\nu1\ti1\t3.0\t10\tok\nu2\ti3\t4.0\t5\t\nu1\tghost\t1.0\t30\tx\n")
    (tmp_path / "shop.user").write_text("user_id:token\tage:float\nu1\t30\n")  # side files: ignored
    (tmp_path / "shop.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\n")
    data = load_dataset(f"recbole:{tmp_path}")
    assert data.item_texts == ["Red gel pen. Acme. Pens Office", "Blue notebook. Zephyr. Paper", "Stapler. Acme"]
    assert data.item_meta[0]["price"] == 2.5 and data.item_meta[1]["price"] == ""  # typed, empty kept empty
    assert [[data.item_ids[i] for i in s] for s in data.sequences] == [["i1", "i2"], ["i3"]]  # by timestamp
    assert data.report.counts == {"interaction with unknown item skipped": 1}


def test_a_catalogue_of_titles_only_needs_no_template(tmp_path):
    _write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "title": "Alien (1979)"}, {"id": "b", "title": "Heat (1995)",
                                                                                   "year": 1995}])
    _write_jsonl(tmp_path / "interactions.jsonl", [{"user": "u", "item": "a"}, {"user": "u", "item": "b"}])
    data = load_dataset(f"jsonl:{tmp_path}")
    assert data.item_texts == ["Alien (1979)", "Heat (1995)"] and data.report.counts == {}
    _write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "title": "Pen", "tags": ["ink", "blue"], "price": 3}])
    assert load_dataset(f"jsonl:{tmp_path}").item_texts == ["Pen. ink, blue"]  # text-like fields, first-seen order


def test_ids_that_are_numbers_in_one_file_and_strings_in_another(tmp_path):
    _write_jsonl(tmp_path / "items.jsonl",
                 [{"id": 7, "text": "pen"}, {"id": "8", "text": "ink"}, {"id": 9.0, "text": "cap"}])
    _write_jsonl(tmp_path / "interactions.jsonl",
                 [{"user": 1, "item": "7"}, {"user": "1", "item": 8}, {"user": 1, "item": 9}])
    data = load_dataset(f"jsonl:{tmp_path}")
    assert data.item_ids == ["7", "8", "9"] and data.user_ids == ["1"]
    assert [data.item_ids[i] for i in data.sequences[0]] == ["7", "8", "9"] and data.report.counts == {}
    _write_jsonl(tmp_path / "interactions.jsonl", [{"user": "1", "item": 7.5}])
    with pytest.raises(DataError, match=r"interactions.jsonl:1: item must be a string or an integer, got 7.5"):
        load_dataset(f"jsonl:{tmp_path}")


def test_synthetic_long_descriptions_leave_the_rest_unchanged():
    short = load_dataset("synthetic:items=50,users=20,seed=4")
    long = load_dataset("synthetic:items=50,users=20,seed=4,words=80")
    assert [s.tolist() for s in short.sequences] == [s.tolist() for s in long.sequences]
    assert all(t.startswith(s) and len(t.split()) > 80 for s, t in zip(short.item_texts, long.item_texts, strict=True))
    with pytest.raises(DataError, match="words must be in 0..2000"):
        load_dataset("synthetic:words=5000")
